"""HTTP/SIP Digest authentication, sans-I/O (RFC 3261 sec. 22, RFC 2617, RFC 7616, RFC 8760).

This module works on header *values* (the text after ``Authorization:``, ``WWW-Authenticate:`` ...)
so it does not depend on the message parser, and it never reads the clock: every time-dependent
call takes ``now`` (seconds, float, any epoch as long as it is the same one for ``challenge`` and
``verify`` and non-negative).

Theory of operation
-------------------
Server side (registrar, proxy)::

    auth = DigestAuthenticator(secret, realm="example.com")
    # request without credentials -> 401/407 with one header per value:
    values = auth.challenge(now)
    # request with credentials:
    result = auth.verify(value, "REGISTER", lookup, now, request_uri=str(req.uri))
    if result.kind is AuthKind.OK: ...             # result.username owns the AOR? else 403
    elif result.kind is AuthKind.STALE: values = auth.challenge(now, stale=True)
    else: ...                                      # FAIL: re-challenge, count it in ratelimit

Nonces are stateless: ``base64url(ts || random || alg || MAC(secret; realm, ts, random, alg))``, the MAC a
keyed BLAKE2s (:class:`_NonceMac`), so a flood of unauthenticated requests costs no memory. Only nonces that *authenticated
successfully* enter the bounded nonce-count table used for replay protection.

Client side (phone, tests): :func:`choose_challenge` then :func:`build_authorization`.

Errors: :class:`DigestError` for anything malformed in a peer's value (reply 400, or treat as an
authentication failure); :class:`ValueError` for our own bad arguments.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Final

from leansip.sip.uri import all_in, char_table

__all__ = [
    "ALGORITHMS",
    "AuthKind",
    "AuthResult",
    "DigestAuthenticator",
    "DigestError",
    "DigestParams",
    "Ha1Lookup",
    "NonceCounter",
    "NonceUse",
    "UserCredentials",
    "build_authorization",
    "canonical_algorithm",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "format_challenge",
    "format_credentials",
    "parse_digest",
    "quote_string",
    "users_lookup",
]


class DigestError(ValueError):
    """A peer's digest header value is malformed or uses something we do not support.

    ``status`` hints at the reply: 400 for syntax; the authenticator never raises it, it turns it
    into a FAIL result instead.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------

# Canonical name -> (hashlib name, is "-sess"). The order is fixed forever: the index is bound
# into our nonces. RFC 7616 sec. 6.1 registers the names; they are case-insensitive.
_ALGORITHM_TABLE: Final[dict[str, tuple[str, bool]]] = {
    "MD5": ("md5", False),
    "MD5-sess": ("md5", True),
    "SHA-256": ("sha256", False),
    "SHA-256-sess": ("sha256", True),
    # RFC 7616 sec. 3.2 / RFC 8760: SHA-512/256, i.e. hashlib's "sha512_256" (not a truncated SHA-512).
    "SHA-512-256": ("sha512_256", False),
    "SHA-512-256-sess": ("sha512_256", True),
}
ALGORITHMS: Final[tuple[str, ...]] = tuple(_ALGORITHM_TABLE)
_BY_UPPER: Final = {name.upper(): name for name in ALGORITHMS}
#: the algorithm's byte in a nonce: its index in ALGORITHMS
_ALGORITHM_BYTE: Final = {name: bytes([i]) for i, name in enumerate(ALGORITHMS)}
#: bound once: compiled, ``hmac.compare_digest`` is a module attribute lookup at every call
_compare_digest: Final = hmac.compare_digest
# Client preference, strongest first (RFC 8760 sec. 2.4: use the most preferred one we support).
_CLIENT_PREFERENCE: Final = ("SHA-512-256", "SHA-512-256-sess", "SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_HEX_LEN: Final = {"md5": 32, "sha256": 64, "sha512_256": 64}


def canonical_algorithm(name: str | None) -> str:
    """Return the canonical spelling of a digest algorithm; a missing one means MD5 (RFC 2617).

    Raises :class:`DigestError` for an algorithm we do not implement (the caller should then
    ignore that challenge, RFC 7616 sec. 3.3).
    """
    if name is None:
        return "MD5"
    if name in _ALGORITHM_TABLE:  # already canonical (ours, or as clients spell it): no upper-cased copy
        return name
    try:
        return _BY_UPPER[name.upper()]
    except KeyError:
        raise DigestError(f"unsupported algorithm {name!r}") from None


def _base_algorithm(algorithm: str) -> str:
    """The algorithm whose H(user:realm:password) a ``-sess`` variant starts from."""
    return algorithm.removesuffix("-sess")


def _utf8(text: str) -> bytes:
    """UTF-8, passing lone surrogates through: a peer's value decoded with surrogateescape
    must hash (and fail to match) rather than raise."""
    return text.encode("utf-8", "surrogatepass")


def _sha512_256(data: bytes) -> Any:
    return hashlib.new("sha512_256", data)  # no named constructor in hashlib


def _builtin_md5() -> Callable[[bytes], Any]:
    """CPython's own MD5 when it was built in: for the short strings of a digest it takes about half the time of
    OpenSSL's (~300 against ~620 ns a hash here: OpenSSL 3 sets up a context per hash), and verifying a response
    is three hashes. Same function, so the same results; OpenSSL's when the interpreter has no ``_md5``."""
    try:
        import _md5  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - an interpreter built without its own hash modules
        return hashlib.md5
    return _md5.md5  # type: ignore[no-any-return]


#: hashlib's named constructors skip the by-name lookup of ``hashlib.new`` (a quarter of a digest's cost here)
_HASHES: Final[dict[str, Callable[[bytes], Any]]] = {"md5": _builtin_md5(), "sha256": hashlib.sha256,
                                               "sha512_256": _sha512_256}


def _h(hash_name: str, data: str | bytes) -> str:
    if isinstance(data, str):
        data = _utf8(data)
    return str(_HASHES[hash_name](data).hexdigest())


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username ":" realm ":" password), lowercase hex: the value a user store may keep.

    For ``-sess`` algorithms this is the *stored* HA1 (the one of the base algorithm); the
    session key H(HA1:nonce:cnonce) is derived inside :func:`compute_response`, because it
    depends on per-request values. Strings are hashed as UTF-8 (RFC 7616 sec. 4).
    """
    hash_name, _ = _ALGORITHM_TABLE[canonical_algorithm(algorithm)]
    return _h(hash_name, f"{username}:{realm}:{password}")


#: H(A2) of "method:uri" by hash name: a registrar checks the same few (every REGISTER of a domain names the
#: same Request-URI), and a hash is ~3,000 instructions where a lookup is ~300. Bounded in entries (emptied
#: when full) and in key length (a peer's long Request-URIs are hashed, not kept: at most 1024 x 256 bytes).
_HA2_CACHE: Final[dict[str, dict[str, str]]] = {name: {} for name in _HASHES}
_HA2_CACHE_SIZE: Final = 1024
_HA2_KEY_MAX: Final = 256


def _ha2(hash_name: str, a2: str) -> str:
    if len(a2) > _HA2_KEY_MAX:
        return _h(hash_name, a2)
    cache = _HA2_CACHE[hash_name]
    ha2 = cache.get(a2)
    if ha2 is None:
        ha2 = _h(hash_name, a2)
        if len(cache) >= _HA2_CACHE_SIZE:
            cache.clear()
        cache[a2] = ha2
    return ha2


def compute_response(
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 2617 sec. 3.2.2.1 / RFC 7616 sec. 3.4.1, lowercase hex.

    ``ha1`` is :func:`compute_ha1`'s result. ``qop`` None is the RFC 2069 form
    H(HA1:nonce:HA2); "auth" and "auth-int" need ``nc`` (8 hex digits) and ``cnonce``;
    "auth-int" hashes ``body`` into A2 (RFC 3261 sec. 22.4: the message body, H("") if empty).
    Raises ValueError for an impossible combination (our bug, not the peer's).
    """
    hash_name, sess = _ALGORITHM_TABLE[canonical_algorithm(algorithm)]
    if sess:
        if cnonce is None:
            raise ValueError("-sess algorithms need a cnonce")
        ha1 = _h(hash_name, f"{ha1}:{nonce}:{cnonce}")
    if qop is None or qop == "auth":
        ha2 = _ha2(hash_name, f"{method}:{uri}")
    elif qop == "auth-int":
        ha2 = _h(hash_name, f"{method}:{uri}:{_h(hash_name, body)}")
    else:
        raise ValueError(f"unknown qop {qop!r}")
    if qop is None:
        return _h(hash_name, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _h(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------------
# Parsing and formatting
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def choose_challenge(values: Iterable[str]) -> str:
    """Pick the challenge value to answer: SHA-512-256, then SHA-256, then MD5 (RFC 8760 sec. 2.4).

    Values that do not parse, are not Digest, or use an algorithm we lack are skipped, as RFC
    7616 sec. 3.3 says for unknown algorithms. Among equal algorithms the first one wins.
    Raises :class:`DigestError` if nothing is usable.
    """
    best: tuple[int, str] | None = None
    for value in values:
        try:
            params = parse_digest(value)
            algorithm = canonical_algorithm(params.algorithm)
        except DigestError:
            continue
        if params.realm is None or params.nonce is None:
            continue
        rank = _CLIENT_PREFERENCE.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, value)
    if best is None:
        raise DigestError("no usable Digest challenge")
    return best[1]


def build_authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Answer one challenge value with an Authorization / Proxy-Authorization value.

    Uses the challenge's algorithm (MD5 if absent), qop=auth when offered, else auth-int when
    that is the only one offered (hashing ``body``), else the RFC 2069 form. ``nc`` is the
    caller's count of requests sent with this nonce; ``cnonce`` defaults to a fresh random one.
    Raises :class:`DigestError` if the challenge is malformed or unusable.
    """
    params = parse_digest(challenge_value)
    if params.realm is None or params.nonce is None:
        raise DigestError("challenge lacks realm or nonce")
    algorithm = canonical_algorithm(params.algorithm)
    options = params.qop_options
    qop: str | None
    if not options:
        qop = None
    elif "auth" in options:
        qop = "auth"
    elif "auth-int" in options:
        qop = "auth-int"
    else:
        raise DigestError(f"no supported qop in {params.qop!r}")
    sess = _ALGORITHM_TABLE[algorithm][1]
    if cnonce is None and (qop is not None or sess):
        cnonce = secrets.token_hex(16)
    nc_text = _format_nc(nc) if qop is not None else None
    ha1 = compute_ha1(username, params.realm, password, _base_algorithm(algorithm))
    response = compute_response(
        ha1, method, uri, params.nonce, algorithm=algorithm, qop=qop, nc=nc_text, cnonce=cnonce, body=body
    )
    return format_credentials(
        username=username,
        realm=params.realm,
        nonce=params.nonce,
        uri=uri,
        response=response,
        # Echo the algorithm only if the server named it; RFC 2069-era servers do not know it.
        algorithm=params.algorithm if params.algorithm is not None else None,
        cnonce=cnonce if (qop is not None or sess) else None,
        opaque=params.opaque,
        qop=qop,
        nc=nc_text,
    )


# --------------------------------------------------------------------------------------------
# User store adapter
# --------------------------------------------------------------------------------------------

Ha1Lookup = Callable[[str, str, str], "str | None"]
"""(username, realm, base algorithm: "MD5", "SHA-256" or "SHA-512-256") -> stored HA1 hex, or None."""


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """What a user store keeps for one user: a plaintext password, or HA1s, or both.

    HA1 is H(user:realm:password) for one algorithm and one realm, so a stored HA1 only
    answers for exactly that pair; a plaintext password answers for any.
    """

    username: str
    password: str | None = None
    ha1s: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_password(cls, username: str, password: str) -> UserCredentials:
        return cls(username=username, password=password)

    @classmethod
    def from_ha1(cls, username: str, realm: str, ha1_by_algorithm: Mapping[str, str]) -> UserCredentials:
        """HA1-only user, e.g. ``{"MD5": "...", "SHA-256": "..."}`` for one realm."""
        ha1s = {(canonical_algorithm(a), realm): h.lower() for a, h in ha1_by_algorithm.items()}
        for (algorithm, _), h in ha1s.items():
            if algorithm.endswith("-sess"):
                raise ValueError("store the HA1 of the base algorithm, not of -sess")
            hash_name = _ALGORITHM_TABLE[algorithm][0]
            if len(h) != _HEX_LEN[hash_name] or any(c not in "0123456789abcdef" for c in h):
                raise ValueError(f"HA1 for {algorithm} must be {_HEX_LEN[hash_name]} hex digits")
        return cls(username=username, ha1s=MappingProxyType(ha1s))

    def ha1(self, algorithm: str, realm: str) -> str | None:
        """HA1 for (algorithm, realm); -sess variants use their base algorithm's HA1."""
        base = _base_algorithm(canonical_algorithm(algorithm))
        stored = self.ha1s.get((base, realm))
        if stored is not None:
            return stored
        if self.password is not None:
            return compute_ha1(self.username, realm, self.password, base)
        return None


def users_lookup(users: Mapping[str, UserCredentials]) -> Ha1Lookup:
    """Adapt a username -> UserCredentials mapping to the lookup callback of ``verify``."""

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        user = users.get(username)
        return None if user is None else user.ha1(algorithm, realm)

    return lookup


# --------------------------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------------------------


class AuthKind(Enum):
    OK = "ok"
    STALE = "stale"  # correct password, nonce expired or forgotten: re-challenge with stale=TRUE
    FAIL = "fail"  # anything else; deliberately one outcome so users cannot be enumerated


@dataclass(slots=True, kw_only=True)
class AuthResult:
    """Outcome of :meth:`DigestAuthenticator.verify`.

    ``reason`` is for logs only and is excluded from ``==``: two FAILs compare equal whatever
    the cause, which is what a caller may expose. ``username`` is set for OK and STALE only.
    Immutable by convention (not ``frozen``: a frozen dataclass's ``__init__`` runs interpreted and sets each
    field through ``object.__setattr__``, about 7,000 instructions per request under callgrind).
    """

    kind: AuthKind
    username: str | None
    algorithm: str | None
    reason: str = field(compare=False)

    # explicit __init__: mypyc compiles it (a generated dataclass __init__ stays interpreted)
    def __init__(self, *, kind: AuthKind, username: str | None = None, algorithm: str | None = None,
                 reason: str = "") -> None:
        if kind is AuthKind.FAIL and (username is not None or algorithm is not None):
            raise ValueError("FAIL carries no username or algorithm")
        if kind is not AuthKind.FAIL and username is None:
            raise ValueError(f"{kind.name} needs the username")
        self.kind = kind
        self.username = username
        self.algorithm = algorithm
        self.reason = reason

    @property
    def ok(self) -> bool:
        return self.kind is AuthKind.OK


def _fail(reason: str) -> AuthResult:
    return AuthResult(kind=AuthKind.FAIL, reason=reason)


class NonceUse(Enum):
    OK = "ok"
    REPLAY = "replay"
    EVICTED = "evicted"


class NonceCounter:
    """Per nonce, the highest nonce-count accepted: replay protection with bounded memory.

    Entries are keyed by nonce in first-use order and dropped when the nonce expires or, when
    the table is full, oldest first. A nonce that may have been evicted (issued no later than
    the newest evicted one) and is not in the table can no longer be told apart from a replay,
    so it is reported EVICTED and the caller treats it as stale (a fresh nonce is cheap).
    """

    # nc is at most 0xffffffff; "used without qop" is recorded as above any nc.
    _USED_ONCE = 1 << 32

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, float, int]] = OrderedDict()
        self._evicted_upto = float("-inf")
        #: expired entries are dropped at most once a second: a look at the oldest entry builds an iterator and
        #: a tuple (~2,000 instructions), more than the rest of a use; a nonce past its expiry is refused as
        #: stale before it gets here, so one kept a second longer changes nothing but memory
        self._purge_at = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            _, (_, expires, _) = next(iter(entries.items()))
            if expires > now:
                break
            entries.popitem(last=False)

    def use(self, nonce: str, *, issued: float, expires: float, nc: int | None, now: float) -> NonceUse:
        """Record an authenticated use of ``nonce`` with count ``nc`` (None: no qop, once only).

        Call only after the response was verified, so forged requests cannot burn counts.
        """
        if now >= self._purge_at:
            self._purge(now)
            self._purge_at = now + 1.0
        entry = self._entries.get(nonce)
        if entry is None:
            if issued <= self._evicted_upto:
                return NonceUse.EVICTED
            last = 0
        else:
            last = entry[2]
        if nc is None:
            if entry is not None:
                return NonceUse.REPLAY
            new_last = self._USED_ONCE
        else:
            if nc <= last:
                return NonceUse.REPLAY
            new_last = nc
        self._entries[nonce] = (issued, expires, new_last)
        while len(self._entries) > self.max_entries:
            _, (old_issued, _, _) = self._entries.popitem(last=False)
            self._evicted_upto = max(self._evicted_upto, old_issued)
        return NonceUse.OK


_NONCE_TS: Final = 8
_NONCE_RANDOM: Final = 12
_NONCE_MAC: Final = 16
_NONCE_LEN: Final = _NONCE_TS + _NONCE_RANDOM + 1 + _NONCE_MAC
# Tolerate float rounding of the millisecond timestamp; a nonce further in the future means
# the clock stepped back, and since we signed it we answer STALE rather than FAIL.
_FUTURE_SLACK: Final = 1.0


class _NonceMac:
    """The nonce MAC: keyed BLAKE2s (RFC 7693 section 2.9, a MAC by design), 16 bytes, under one key.

    The keyed state is made once and copied per message: one hash pass per MAC, where HMAC-SHA256 needs two
    (about 460 ns against 1,650 ns here, and a nonce costs two MACs, issue and check)."""

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > 32:  # BLAKE2s takes keys of up to 32 bytes: a longer secret is hashed down first
            key = hashlib.blake2s(key).digest()
        self._keyed = hashlib.blake2s(key=key, digest_size=_NONCE_MAC, person=b"lsnonce2")
        if prefix:  # .digest(msg) is then the MAC of prefix + msg, the prefix hashed once, here
            self._keyed.update(prefix)

    def digest(self, msg: bytes) -> bytes:
        state = self._keyed.copy()
        state.update(msg)
        return bytes(state.digest())


#: random bytes for nonces are read from the OS this many nonces at a time (one getrandom call, ~600 ns, each)
_RANDOM_POOL: Final = 64


#: base64's standard alphabet to the URL-safe one and back (RFC 4648 section 5), for ``bytes.translate``
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    """Unpadded base64url. binascii directly: ``base64.urlsafe_b64encode`` is two interpreted frames around it."""
    # positional arguments only (a keyword is parsed by name, ~1,000 instructions); the padding and the newline
    # are sliced off (deleting them in the translate pass costs CPython a 256-entry table fill per call)
    return binascii.b2a_base64(data).translate(_TO_URLSAFE)[:(len(data) * 4 + 2) // 3].decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url; ValueError (UnicodeEncodeError, binascii.Error) for what cannot be decoded.

    Lenient as ``base64.urlsafe_b64decode`` is (characters outside the alphabet are skipped): a caller that needs
    the canonical form encodes the result again and compares."""
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))


#: the characters a base64url text may end with, by its length modulo 4: those whose unused low bits are zero
_B64URL_LAST: Final = {0: "", 2: "AQgw", 3: "AEIMQUYcgkosw048"}


def _canonical_b64(text: str) -> bool:
    """Is ``text``, which :func:`_unb64` decoded to ``len(text) * 6 // 8`` bytes, the one unpadded base64url
    spelling of them?

    Decoding is lenient: it takes ``+`` and ``/`` for ``-`` and ``_``, ignores the unused low bits of the last
    character, and skips characters outside the alphabet (which the length precondition rules out: each one
    skipped leaves fewer bytes). So a nonce could be spelt several ways and each spelling be counted as a fresh
    nonce. This is the test of encoding again and comparing (a property test holds it to that), at two
    ``memchr`` scans instead of an encoding."""
    if "+" in text or "/" in text:
        return False
    last = _B64URL_LAST.get(len(text) % 4)
    return last is not None and (not last or text[-1] in last)


#: entries kept per realm (or realm and algorithm) by the authenticator's small caches: the stand-in HA1s,
#: the nonce MAC states and the opaque values; past it, values are computed and not kept
_PER_REALM_MAX: Final = 64
#: nonces this authenticator issued last, remembered with what their MAC check would prove (see _open_nonce)
_ISSUED_MAX: Final = 4096
#: times below this (seconds) have their milliseconds within the nonce's 8 bytes for sure
_MAX_NOW: Final = 1.8e16


class DigestAuthenticator:
    """Issues challenges with stateless MAC-signed nonces and verifies credentials.

    ``secret`` keys the nonce MAC; share it between processes that must accept each other's
    nonces, rotate it to invalidate them. ``algorithms`` is the server's preference order; one
    challenge is offered per algorithm (RFC 8760 sec. 2.4). Call :meth:`challenge` for a 401/407
    and :meth:`verify` for a request carrying credentials.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        nonce_ttl: float = 300,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        *,
        qop: Iterable[str] = ("auth",),
        allow_no_qop: bool = True,
        max_tracked_nonces: int = 100_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms = tuple(canonical_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("need at least one algorithm")
        self.qop = tuple(qop)
        if any(q not in ("auth", "auth-int") for q in self.qop):
            raise ValueError("qop must be auth and/or auth-int")
        self.allow_no_qop = allow_no_qop
        self.nonces = NonceCounter(max_tracked_nonces)
        self._secret = secret
        self._realm_macs: dict[str, _NonceMac] = {}
        self._opaque: dict[str, str] = {}
        #: (realm, algorithm, stale) -> the challenge's text before and after the nonce
        self._templates: dict[tuple[str, str, bool], tuple[str, str]] = {}
        self._random_bytes = random_bytes
        #: os.urandom is read in batches (what it returns is the same kind of randomness, a syscall less per nonce);
        #: an injected random_bytes (tests) is called once per nonce, as asked
        self._pool = b""
        self._pool_at = 0
        self._pooled = random_bytes is os.urandom
        #: nonce -> (issue time, algorithm, realm) of the last _ISSUED_MAX nonces made here, in a ring: the answer
        #: to a challenge comes back within moments and is opened by a lookup; an older nonce, or one another
        #: node issued under the same secret, is opened by its MAC as before
        self._issued: dict[str, tuple[float, str, str]] = {}
        self._issued_ring: list[str] = [""] * _ISSUED_MAX
        self._issued_at = 0
        # A per-secret stand-in password: an unknown user's response is checked against an HA1 made from it, so
        # unknown and known users take the same path (the store answers a known user's HA1 from memory, see
        # UserStore.ha1_lookup; the stand-in's HA1 is made once per realm and algorithm, not per request).
        self._dummy_password = hmac.new(secret, b"leansip-dummy-user", hashlib.sha256).hexdigest()
        self._dummy_ha1: dict[tuple[str, str], str] = {}

    def _stand_in_ha1(self, realm: str, algorithm: str) -> str:
        """The HA1 an unknown user's response is checked against (so it costs what a known user's does)."""
        key = (realm, algorithm)
        ha1 = self._dummy_ha1.get(key)
        if ha1 is None:
            ha1 = compute_ha1("leansip-dummy-user", realm, self._dummy_password, algorithm)
            if len(self._dummy_ha1) < _PER_REALM_MAX:
                self._dummy_ha1[key] = ha1
        return ha1

    # -- nonces ---------------------------------------------------------------------------

    def _nonce_mac(self, realm: str, body: bytes) -> bytes:
        """MAC over ``leansip-nonce-v2 NUL realm NUL body``; the keyed state after the realm's prefix is kept
        per realm (ours, and any a caller names, up to _PER_REALM_MAX), so a nonce costs one copy, one update,
        one digest."""
        mac = self._realm_macs.get(realm)
        if mac is None:
            mac = _NonceMac(self._secret, b"leansip-nonce-v2\x00" + _utf8(realm) + b"\x00")
            if len(self._realm_macs) < _PER_REALM_MAX:
                self._realm_macs[realm] = mac
        return mac.digest(body)

    def make_nonce(self, now: float, algorithm: str, realm: str | None = None) -> str:
        """A fresh nonce bound to ``now``, ``algorithm`` and ``realm`` (default: ours)."""
        ts = int(now * 1000 + 0.5)  # compiled, a native conversion (round() is a builtin looked up and called)
        # the float first: compiled, a compare with 1 << 64 (past the unboxed range) is a generic call
        if ts < 0 or (now >= _MAX_NOW and ts >= 1 << 64):
            raise ValueError("now must be a non-negative time")
        if self._pooled:
            at = self._pool_at
            if at + _NONCE_RANDOM > len(self._pool):
                self._pool = os.urandom(_NONCE_RANDOM * _RANDOM_POOL)
                at = 0
            rnd = self._pool[at:at + _NONCE_RANDOM]
            self._pool_at = at + _NONCE_RANDOM
        else:
            rnd = self._random_bytes(_NONCE_RANDOM)
        if len(rnd) != _NONCE_RANDOM:
            raise ValueError("random_bytes returned the wrong length")
        algorithm = canonical_algorithm(algorithm)
        realm = realm or self.realm
        body = ts.to_bytes(_NONCE_TS, "big") + rnd + _ALGORITHM_BYTE[algorithm]
        nonce = _b64(body + self._nonce_mac(realm, body))
        self._remember(nonce, ts / 1000, algorithm, realm)
        return nonce

    def forget_issued(self) -> None:
        """Drop the remembered nonces: they still open, by their MAC (a memory test empties this bounded table
        between rounds, as it does the parse caches)."""
        self._issued.clear()
        self._issued_ring = [""] * _ISSUED_MAX
        self._issued_at = 0

    def issued_count(self) -> int:
        """How many issued nonces are remembered (at most 4,096)."""
        return len(self._issued)

    def _remember(self, nonce: str, issued: float, algorithm: str, realm: str) -> None:
        """Keep a nonce just made with what opening it would give, in place of the oldest one kept."""
        at = self._issued_at
        ring = self._issued_ring
        oldest = ring[at]
        if oldest:
            self._issued.pop(oldest, None)
        ring[at] = nonce
        self._issued[nonce] = (issued, algorithm, realm)
        self._issued_at = at + 1 if at + 1 < _ISSUED_MAX else 0

    def _open_nonce(self, nonce: str, realm: str) -> tuple[float, str] | None:
        """(issue time, algorithm) of a nonce we signed for ``realm``, else None."""
        kept = self._issued.get(nonce)
        if kept is not None and kept[2] == realm:
            return kept[0], kept[1]  # made here moments ago: what the checks below would find, without them
        if len(nonce) != (_NONCE_LEN * 4 + 2) // 3:
            return None
        try:
            raw = _unb64(nonce)
        except ValueError:
            return None
        if len(raw) != _NONCE_LEN or not _canonical_b64(nonce):
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not _compare_digest(mac, self._nonce_mac(realm, body)):
            return None
        alg_index = body[-1]
        if alg_index >= len(ALGORITHMS):
            return None
        return int.from_bytes(body[:_NONCE_TS], "big") / 1000, ALGORITHMS[alg_index]

    def opaque(self, realm: str | None = None) -> str:
        """Constant per secret and realm: clients echo it; it carries no state."""
        realm = realm or self.realm
        cached = self._opaque.get(realm)
        if cached is None:
            msg = b"leansip-opaque\x00" + _utf8(realm)
            cached = _b64(hmac.digest(self._secret, msg, "sha256")[:16])
            if len(self._opaque) < _PER_REALM_MAX:
                self._opaque[realm] = cached
        return cached

    # -- challenge ------------------------------------------------------------------------

    def challenge(self, now: float, stale: bool = False, realm: str | None = None) -> list[str]:
        """Header values for a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate).

        One value per configured algorithm, in preference order (SHA-256 first by default),
        each with its own nonce bound to that algorithm. ``stale=True`` after a STALE result,
        so the client retries without asking the user again (RFC 2617 sec. 3.2.1).
        """
        realm = realm or self.realm
        return [self._challenge_text(realm, algorithm, stale, self.make_nonce(now, algorithm, realm))
                for algorithm in self.algorithms]

    def _challenge_text(self, realm: str, algorithm: str, stale: bool, nonce: str) -> str:
        """:func:`format_challenge`'s text, formatted once per realm/algorithm/stale: only the nonce changes."""
        key = (realm, algorithm, stale)
        template = self._templates.get(key)
        if template is None:
            text = format_challenge(realm=realm, nonce="-", algorithm=algorithm, qop=self.qop,
                                    opaque=self.opaque(realm), stale=stale)
            # the last ', nonce="-"' is ours: only opaque (base64), stale, algorithm and qop tokens follow it
            cut = text.rindex(', nonce="-"') + len(', nonce="')
            template = (text[:cut], text[cut + 1:])
            if len(self._templates) < 64:
                self._templates[key] = template
        return template[0] + nonce + template[1]  # our nonce is base64url: nothing in it needs quoting

    # -- verify ---------------------------------------------------------------------------

    def verify(
        self,
        credentials_value: str,
        method: str,
        users_ha1_lookup: Ha1Lookup,
        now: float,
        expected_realm: str | None = None,
        *,
        request_uri: str,
        body: bytes = b"",
    ) -> AuthResult:
        """Check an Authorization / Proxy-Authorization value for a request.

        ``method`` and ``request_uri`` come from the request line; ``body`` is needed only for
        qop=auth-int. ``users_ha1_lookup(username, realm, algorithm)`` returns the stored HA1
        for the base algorithm ("MD5", "SHA-256" or "SHA-512-256") or None. ``expected_realm`` defaults to ours.
        Never raises for peer input: returns OK (check ``username`` owns the AOR, else 403),
        STALE (re-challenge with stale=True) or FAIL (re-challenge; count it for rate limiting).
        """
        realm = expected_realm or self.realm
        try:
            params = parse_digest(credentials_value)
        except DigestError as exc:
            return _fail(f"malformed: {exc.reason}")
        username, nonce, uri, response = params.username, params.nonce, params.uri, params.response
        if username is None or nonce is None or uri is None or response is None or params.realm is None:
            return _fail("missing username, realm, nonce, uri or response")
        if params.realm != realm:
            return _fail(f"wrong realm {params.realm!r}")
        try:
            algorithm = canonical_algorithm(params.algorithm)
        except DigestError as exc:
            return _fail(exc.reason)
        if algorithm not in self.algorithms:
            return _fail(f"algorithm {algorithm} not offered")
        opened = self._open_nonce(nonce, realm)
        if opened is None:
            return _fail("nonce not ours or tampered")
        issued, nonce_algorithm = opened
        if nonce_algorithm != algorithm:
            return _fail(f"nonce issued for {nonce_algorithm}, used with {algorithm}")
        # RFC 3261 sec. 22.4 / RFC 2617 sec. 3.2.2.5: the uri must be the Request-URI.
        if uri.strip() != request_uri.strip():
            return _fail("uri does not match the Request-URI")
        # opaque is no secret (every challenge shows it): a plain compare, no constant-time one
        if params.opaque is not None and params.opaque != self.opaque(realm):
            return _fail("opaque mismatch")
        qop = params.qop
        nc_value: int | None = None
        if qop is None:
            if not self.allow_no_qop:
                return _fail("qop required")
            # RFC 2617 sec. 3.2.2: no nc/cnonce without qop (except the cnonce -sess needs).
            if params.nc is not None or (params.cnonce is not None and not algorithm.endswith("-sess")):
                return _fail("nc/cnonce without qop")
        else:
            qop = qop.lower()
            if qop not in self.qop:
                return _fail(f"qop {qop!r} not offered")
            nc = params.nc
            if nc is None or params.cnonce is None or not _is_nc(nc):
                return _fail("qop needs nc (8 hex digits) and cnonce")
            nc_value = int(nc, 16)
        if algorithm.endswith("-sess") and params.cnonce is None:
            return _fail("-sess needs cnonce")

        base = _base_algorithm(algorithm)
        hash_name = _ALGORITHM_TABLE[algorithm][0]
        stored = users_ha1_lookup(username, realm, base)
        known = stored is not None
        ha1 = self._stand_in_ha1(realm, base)
        if stored is not None:
            stored = stored.lower()
            if len(stored) == _HEX_LEN[hash_name]:
                ha1 = stored
            else:
                known = False  # a broken store entry authenticates nobody
        expected = compute_response(
            ha1,
            method,
            uri,
            nonce,
            algorithm=algorithm,
            qop=qop,
            nc=params.nc,
            cnonce=params.cnonce,
            body=body,
        )
        matches = _compare_digest(expected.encode("ascii"), _utf8(response.lower()))
        if not known:
            return _fail(
                "unknown user (or no HA1 for this algorithm/realm)" if stored is None else "bad stored HA1"
            )
        if not matches:
            return _fail("wrong response")

        # The client knows the password: from here on, problems with the nonce are STALE.
        age = now - issued
        if age > self.nonce_ttl or age < -_FUTURE_SLACK:
            return AuthResult(
                kind=AuthKind.STALE, username=username, algorithm=algorithm, reason="nonce expired"
            )
        use = self.nonces.use(nonce, issued=issued, expires=issued + self.nonce_ttl, nc=nc_value, now=now)
        if use is NonceUse.REPLAY:
            return _fail("replayed nonce count")
        if use is NonceUse.EVICTED:
            return AuthResult(
                kind=AuthKind.STALE, username=username, algorithm=algorithm, reason="nonce evicted from table"
            )
        return AuthResult(kind=AuthKind.OK, username=username, algorithm=algorithm, reason="ok")
