"""Digest header values, parsed and formatted (RFC 2617 sec. 3.2, RFC 7616 sec. 3.3-3.4, RFC 3261 sec. 25.1).

:func:`parse_digest` reads a challenge or credentials value (``Digest name=value, name="quoted", ...``) into
:class:`DigestParams`: the usual form by string operations (:func:`_fast_digest`), anything else, and every
error, by the character-level parser (:func:`_parse_digest`). :func:`format_challenge` and
:func:`format_credentials` write the values we send. Only :class:`~leansip.sip.digest_hash.DigestError`
escapes for a peer's value; ValueError for our own bad arguments. Users import these names from
:mod:`leansip.sip.digest`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from leansip.sip.digest_hash import DigestError
from leansip.sip.uri import all_in, char_table

__all__ = [
    "MAX_VALUE_LENGTH",
    "DigestParams",
    "format_challenge",
    "format_credentials",
    "parse_digest",
    "quote_string",
]


# RFC 7230 tchar; RFC 3261's token characters are a subset of these.
_TCHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS: Final = " \t\r\n"
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX_TABLE: Final = char_table("0123456789abcdefABCDEF")


def _is_nc(text: str) -> bool:
    """A nonce-count as RFC 2617 section 3.2.2 writes it: exactly 8 hex digits."""
    return len(text) == 8 and all_in(text, _HEX_TABLE)


# Far above any real header value; bounds the work a hostile value can cause.
MAX_VALUE_LENGTH: Final = 8192


@dataclass(slots=True)
class DigestParams:
    """A parsed Digest challenge or credentials value (immutable by convention).

    ``params`` maps lowercased parameter names to their unquoted values (read-only). Properties give the
    common ones (None when absent); everything else is in ``params``.
    """

    scheme: str
    params: Mapping[str, str]
    #: the dict behind ``params``: compiled, a typed dict read is a direct call, where a read through the
    #: read-only proxy is a generic one (~700 instructions; verify reads ten of them per request)
    _values: dict[str, str] = field(repr=False, compare=False)

    def __init__(self, scheme: str, params: Mapping[str, str]) -> None:  # compiled by mypyc, unlike a generated one
        values = params if isinstance(params, dict) else dict(params)
        self.scheme = scheme
        self.params = MappingProxyType(values)
        self._values = values

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())

    @property
    def realm(self) -> str | None:
        return self._values.get("realm")

    @property
    def nonce(self) -> str | None:
        return self._values.get("nonce")

    @property
    def opaque(self) -> str | None:
        return self._values.get("opaque")

    @property
    def algorithm(self) -> str | None:
        return self._values.get("algorithm")

    @property
    def username(self) -> str | None:
        return self._values.get("username")

    @property
    def uri(self) -> str | None:
        return self._values.get("uri")

    @property
    def response(self) -> str | None:
        return self._values.get("response")

    @property
    def cnonce(self) -> str | None:
        return self._values.get("cnonce")

    @property
    def nc(self) -> str | None:
        return self._values.get("nc")

    @property
    def qop(self) -> str | None:
        """The raw qop: one value in credentials, a comma list in challenges."""
        return self._values.get("qop")

    @property
    def qop_options(self) -> tuple[str, ...]:
        """The challenge's qop list, lowercased, e.g. ("auth", "auth-int")."""
        raw = self._values.get("qop")
        if raw is None:
            return ()
        return tuple(part.strip().lower() for part in raw.split(",") if part.strip())

    @property
    def stale(self) -> bool:
        """RFC 2617: stale is TRUE (case-insensitive); anything else means false."""
        return self._values.get("stale", "").lower() == "true"


def _skip_ws(value: str, i: int) -> int:
    n = len(value)
    while i < n and value[i] in _WS:
        i += 1
    return i


def _read_token(value: str, i: int) -> tuple[str, int]:
    start = i
    n = len(value)
    while i < n and value[i] in _TCHARS:
        i += 1
    if i == start:
        raise DigestError(f"expected a token at offset {start}")
    return value[start:i], i


def _read_quoted(value: str, i: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote (RFC 3261 sec. 25.1)."""
    i += 1
    n = len(value)
    out: list[str] = []
    while i < n:
        c = value[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            escaped = value[i + 1]
            # quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F): no CR, no LF, ASCII only.
            if escaped in "\r\n" or ord(escaped) > 0x7F:
                raise DigestError(f"bad quoted-pair at offset {i}")
            out.append(escaped)
            i += 2
            continue
        # qdtext: any char but controls (HTAB allowed), '"' and '\'; non-ASCII is UTF8-NONASCII.
        if (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            raise DigestError(f"control character in quoted string at offset {i}")
        out.append(c)
        i += 1
    raise DigestError("unterminated quoted string")


_TCHAR_TABLE: Final = char_table("".join(_TCHARS))
#: tchar without the upper-case letters: a parameter name made of these needs no lower()
_LOWER_TCHAR_TABLE: Final = char_table("".join(c for c in _TCHARS if not c.isupper()))
#: the bytes a value on the string-operation fast path may not hold: control characters but HTAB (CR/LF included,
#: so the fast path only ever sees SP and HTAB as whitespace), backslash (an escape), DEL. Those, and non-ASCII
#: values, go to the character parser.
_UNPLAIN: Final = bytes(c for c in range(0x20) if c != 0x09) + b"\\\x7f"
#: a ``bytes.translate`` table that changes exactly the _UNPLAIN bytes (each to another byte) and keeps the rest
_MARK_UNPLAIN: Final = bytes((c ^ 0x80) if c in _UNPLAIN else c for c in range(256))


def _plain(value: str) -> bool:
    """May ``value`` take the fast path: ASCII, and no control character but HTAB, no backslash (no escape in a
    quoted string), no DEL? ``isascii`` reads a flag of the string (no scan); ``bytes.translate`` with a table
    and no bytes to delete is CPython's tight loop (with ``deletechars`` it first fills a 256-entry table, about
    1,000 instructions a call), and the result equals the input exactly when no _UNPLAIN byte is there. A
    compiled character-table walk costs about three times as much, ``str.isprintable`` as much (a Unicode lookup
    per character)."""
    if not value.isascii():
        return False
    data = value.encode("ascii")
    return data.translate(_MARK_UNPLAIN) == data


def _is_token(text: str) -> bool:
    """An RFC 7230 token (tchar), as :func:`_read_token` reads one."""
    return all_in(text, _TCHAR_TABLE)


def parse_digest(value: str) -> DigestParams:
    """Parse ``Digest name=value, name="quoted", ...`` (challenge or credentials); see :func:`_parse_digest`.

    What clients actually send (no escapes, no control characters, no empty list elements) is split with string
    operations (:func:`_fast_digest`); anything else goes through the character-level parser, which also gives
    the precise error. A property test holds the two to the same results and errors."""
    if isinstance(value, str) and len(value) <= MAX_VALUE_LENGTH and _plain(value):
        params = _fast_digest(value)
        if params is not None:
            return DigestParams(scheme="Digest", params=params)
    return _parse_digest(value)


#: the credential parameters clients send (RFC 7616 section 3.4)
_USUAL_PARAMS: Final = ("username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc")


def _params_by_shape(names: tuple[str, ...]) -> list[str | None]:
    """A table of ``names`` indexed by first character * 16 + length (all ASCII, shorter than 16, no two of the
    same shape: checked here, so a name added later cannot shadow another)."""
    table: list[str | None] = [None] * (128 * 16)
    for name in names:
        slot = ord(name[0]) * 16 + len(name)
        if len(name) >= 16 or ord(name[0]) >= 128 or table[slot] is not None:
            raise ValueError(f"digest parameter {name!r} cannot have a slot of its own")
        table[slot] = name
    return table


_PARAM_SLOTS: Final = _params_by_shape(_USUAL_PARAMS)


def _known_param(text: str, start: int, end: int) -> str | None:
    """The constant for the parameter name ``text[start:end]`` when it is one of :data:`_USUAL_PARAMS` spelt in
    lower case, else None (the caller then slices the name and checks it)."""
    size = end - start
    if size <= 0 or size >= 16:
        return None
    first = ord(text[start])
    if first >= 128:
        return None
    name = _PARAM_SLOTS[first * 16 + size]
    # find in exactly the name's span: compiled, a primitive (startswith with a start is a generic method call)
    if name is not None and text.find(name, start, end) == start:
        return name
    return None


def _fast_digest(value: str) -> dict[str, str] | None:
    """The usual form's parameters, or None for anything else (the full parser then decides)."""
    text = value.lstrip(" \t")
    n = len(text)
    if n < 8 or text[:6].lower() != "digest" or (text[6] != " " and text[6] != "\t"):
        return None
    params: dict[str, str] = {}
    count = 0
    i = 7
    while True:
        while i < n and (text[i] == " " or text[i] == "\t"):  # the space after a comma
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            return None
        # The usual names are recognised in place and stored as the module's constants: no slice to make, and
        # a key whose hash is cached and found by identity when DigestParams reads it back
        name = _known_param(text, i, eq)
        if name is None:
            name = text[i:eq]
            if not all_in(name, _LOWER_TCHAR_TABLE):  # the usual name: a lower-case token, no spaces, no lower()
                name = name.strip(" \t")
                if not _is_token(name):
                    return None
                name = name.lower()
        j = eq + 1
        while j < n and (text[j] == " " or text[j] == "\t"):
            j += 1
        if j < n and text[j] == '"':
            close = text.find('"', j + 1)
            if close < 0:
                return None
            param_value = text[j + 1:close]
            comma = close + 1
            if comma < n and text[comma] != ",":  # usually the comma is next: no search
                comma = text.find(",", comma)
                if comma < 0:
                    comma = n
            k = close + 1
            while k < comma:  # only SP/HTAB may stand between the closing quote and the comma
                if text[k] != " " and text[k] != "\t":
                    return None
                k += 1
        else:
            comma = text.find(",", j)
            if comma < 0:
                comma = n
            param_value = text[j:comma].strip(" \t")
            if not _is_token(param_value):
                return None
        params[name] = param_value
        count += 1
        if len(params) != count:
            return None  # a duplicate: the full parser names it
        if comma >= n:
            return params
        i = comma + 1


def _parse_digest(value: str) -> DigestParams:
    """Parse ``Digest name=value, name="quoted", ...`` (challenge or credentials).

    Names are case-insensitive and returned lowercased; each may occur once (RFC 7616 sec. 3.3,
    duplicates would make the checked and the hashed value ambiguous). Empty list elements
    (``a=1,,b=2``) are tolerated as RFC 7230 sec. 7 asks. Only :class:`DigestError` escapes.
    """
    if not isinstance(value, str):
        raise DigestError("header value must be str")
    if len(value) > MAX_VALUE_LENGTH:
        raise DigestError("digest value too long")
    i = _skip_ws(value, 0)
    scheme, i = _read_token(value, i)
    if scheme.lower() != "digest":
        raise DigestError(f"scheme {scheme!r} is not Digest")
    n = len(value)
    if i < n and value[i] not in _WS:
        raise DigestError("expected whitespace after the scheme")
    params: dict[str, str] = {}
    expect_param = True
    while True:
        i = _skip_ws(value, i)
        if i >= n:
            break
        if value[i] == ",":
            expect_param = True
            i += 1
            continue
        if not expect_param:
            raise DigestError(f"expected ',' at offset {i}")
        name, i = _read_token(value, i)
        i = _skip_ws(value, i)
        if i >= n or value[i] != "=":
            raise DigestError(f"expected '=' after {name!r}")
        i = _skip_ws(value, i + 1)
        if i < n and value[i] == '"':
            param_value, i = _read_quoted(value, i)
        else:
            param_value, i = _read_token(value, i)
        key = name.lower()
        if key in params:
            raise DigestError(f"duplicate parameter {key!r}")
        params[key] = param_value
        expect_param = False
    if not params:
        raise DigestError("no digest parameters")
    return DigestParams(scheme="Digest", params=params)


_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def quote_string(text: str) -> str:
    """Return ``text`` as a quoted-string, escaping '"' and '\\'.

    Raises ValueError for CR, LF or other control characters, which cannot be represented
    (and would allow header injection if they came from configuration).
    """
    bad = _CONTROL_RE.search(text)
    if bad is not None:
        raise ValueError(f"control character {bad.group()!r} cannot be quoted")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(text: str) -> str:
    if not _TOKEN_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a token")
    return text


def format_challenge(
    *,
    realm: str,
    nonce: str,
    algorithm: str | None = None,
    qop: Iterable[str] | None = ("auth",),
    opaque: str | None = None,
    stale: bool = False,
    domain: str | None = None,
) -> str:
    """Format a WWW-Authenticate / Proxy-Authenticate value.

    Quoted: realm, domain, nonce, opaque, qop (RFC 2617 sec. 3.2.1: qop-options is a quoted
    list). Unquoted tokens: algorithm, stale. ``stale`` is only emitted when true.
    """
    parts = [f"realm={quote_string(realm)}"]
    if domain is not None:
        parts.append(f"domain={quote_string(domain)}")
    parts.append(f"nonce={quote_string(nonce)}")
    if opaque is not None:
        parts.append(f"opaque={quote_string(opaque)}")
    if stale:
        parts.append("stale=TRUE")
    if algorithm is not None:
        parts.append(f"algorithm={_token(algorithm)}")
    if qop:
        parts.append(f"qop={quote_string(','.join(_token(q) for q in qop))}")
    return "Digest " + ", ".join(parts)


def format_credentials(
    *,
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    algorithm: str | None = None,
    cnonce: str | None = None,
    opaque: str | None = None,
    qop: str | None = None,
    nc: int | str | None = None,
) -> str:
    """Format an Authorization / Proxy-Authorization value.

    Quoted: username, realm, nonce, uri, response, cnonce, opaque. Unquoted tokens: algorithm,
    qop and nc (RFC 2617 sec. 3.2.2, RFC 7616 sec. 3.4: nc is exactly 8 lowercase hex digits).
    """
    parts = [
        f"username={quote_string(username)}",
        f"realm={quote_string(realm)}",
        f"nonce={quote_string(nonce)}",
        f"uri={quote_string(uri)}",
        f"response={quote_string(response)}",
    ]
    if algorithm is not None:
        parts.append(f"algorithm={_token(algorithm)}")
    if cnonce is not None:
        parts.append(f"cnonce={quote_string(cnonce)}")
    if opaque is not None:
        parts.append(f"opaque={quote_string(opaque)}")
    if qop is not None:
        parts.append(f"qop={_token(qop)}")
    if nc is not None:
        parts.append(f"nc={_format_nc(nc)}")
    return "Digest " + ", ".join(parts)


def _format_nc(nc: int | str) -> str:
    if isinstance(nc, int):
        if not 0 < nc <= 0xFFFFFFFF:
            raise ValueError("nc must be in 1..0xffffffff")
        return f"{nc:08x}"
    if not _is_nc(nc):
        raise ValueError("nc must be 8 hex digits")
    return nc.lower()
