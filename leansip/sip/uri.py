"""SIP and SIPS URIs, name-addr values, header parameters and Via values (RFC 3261 sections 19, 20, 25).

These parsers are called lazily: the message layer keeps header values as text and only asks for a structured
view when a decision needs it (the top Via for routing, the To URI for the registrar, ...). Every function here
raises :class:`~leansip.sip.errors.SipParseError` on bad input and nothing else.

URIs keep the text they were parsed from (``SipURI.text``) so that a forwarded message carries exactly the
bytes the sender wrote unless leansip changed the URI on purpose.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import unquote_to_bytes

from mypy_extensions import i64

from leansip.sip.errors import SipParseError

# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
_ALNUM: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TOKEN_MARKS: Final = "-.!%*_+`'~"
TOKEN_CHARS: Final = frozenset(_ALNUM + _TOKEN_MARKS)
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.?\Z")
_IPV4_RE: Final = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\Z")
_IPV6_RE: Final = re.compile(r"[0-9A-Fa-f:.]+\Z")
# user = 1*( unreserved / escaped / user-unreserved ); password similar. Kept liberal but excludes LWS, <, >, ", @.
_USER_RE: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:\[\]#{}|^`\\]+\Z")
_PARAM_RE: Final = re.compile(r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*\Z")
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_WS: Final = " \t"

DEFAULT_PORTS: Final = {"sip": 5060, "sips": 5061}


def char_table(chars: str) -> bytes:
    """A 128-entry table for :func:`all_in`: 1 at the code of each (ASCII) character of ``chars``."""
    table = bytearray(128)
    for ch in chars:
        table[ord(ch)] = 1
    return bytes(table)


def all_in(text: str, table: bytes) -> bool:
    """True when ``text`` is non-empty and every character has a 1 in ``table`` (so is ASCII).

    The character-class check of the hot path: compiled, ``ord(text[i])`` reads a code point in place, a few
    instructions a character, where a regex match or a ``str`` method mypyc looks up by name (``isascii``)
    costs hundreds before the first character. Property tests hold each table to the grammar's regex."""
    n: i64 = len(text)  # i64: native machine integers, no tagged-int checks in the loop
    if n == 0:
        return False
    i: i64 = 0
    while i < n:
        c: i64 = ord(text[i])
        if c >= 128 or table[c] == 0:
            return False
        i += 1
    return True


_TOKEN_TABLE: Final = char_table(_ALNUM + _TOKEN_MARKS)  # TOKEN_CHARS
_DIGIT_TABLE: Final = char_table("0123456789")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return all_in(text, _TOKEN_TABLE)


def digits_value(text: str, max_len: int) -> int:
    """The value of ``text`` when it is a non-empty run of at most ``max_len`` (<= 18) ASCII digits, else -1.

    ``is_digits`` and ``int()`` in one pass: compiled, ``int(str)`` goes through CPython's general conversion,
    which first copies the text into a new ASCII string (~350 instructions for a CSeq number; a message has
    several such numbers: CSeq, Max-Forwards, Content-Length, ports, Expires)."""
    n: i64 = len(text)
    if n == 0 or n > max_len or max_len > 18:
        return -1
    value: i64 = 0
    i: i64 = 0
    while i < n:
        c: i64 = ord(text[i]) - 48
        if c < 0 or c > 9:
            return -1
        value = value * 10 + c
        i += 1
    return value


def is_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits. ``str.isdigit`` alone also accepts '\xb2' (a latin-1 byte of
    the peer's) which ``int()`` then refuses with ValueError."""
    return all_in(text, _DIGIT_TABLE)


_Parsed = TypeVar("_Parsed")


#: a peer's text longer than this is parsed each time it comes, never kept as a cache key (a legitimate URI,
#: name-addr, Via or host is far shorter; a hostile one may be 60 kB)
CACHE_KEY_MAX: Final = 512


class TextBound:
    """The bound of one cache keyed by a peer's text: at most ``entries`` keys of at most
    :data:`CACHE_KEY_MAX` characters, together at most ``chars`` characters (``used`` counts them since the
    cache last started over). The values are parsed from their key, so they are bounded with it; the test of
    each cache's bound in bytes is ``tests/unit/test_memory_bounds.py``."""

    __slots__ = ("entries", "chars", "used")

    def __init__(self, entries: int, chars: int) -> None:
        self.entries = entries
        self.chars = chars
        self.used = 0


def cache_text(cache: dict[str, _Parsed], bound: TextBound, key: str, value: _Parsed) -> None:
    """:func:`cache_put` for a cache keyed by a peer's text: a key over :data:`CACHE_KEY_MAX` is not kept,
    and the cache starts over when it would pass either of ``bound``'s limits. Only on a miss: a hit is a
    plain dict read."""
    n = len(key)
    if n > CACHE_KEY_MAX:
        return
    used = bound.used + n
    if len(cache) >= bound.entries or used > bound.chars:
        cache.clear()
        used = n
    cache[key] = value
    bound.used = used


def unescape(text: str) -> str:
    """Undo %-escaping (RFC 3261 19.1.4 compares URI parts after unescaping); keeps bytes as latin-1 chars."""
    if "%" not in text:
        return text
    try:
        return unquote_to_bytes(text).decode("latin-1")
    except ValueError as exc:  # pragma: no cover - unquote_to_bytes is liberal
        raise SipParseError(f"bad %-escape in {text!r}") from exc


def is_ip_literal(host: str) -> bool:
    """Whether ``host`` (no brackets) is an IPv4 or IPv6 address; remembered (bounded) in a plain dict: compiled,
    a dict hit is a direct lookup, where ``functools.lru_cache`` was a generic call with its own bookkeeping."""
    known = _IP_LITERALS.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        cache_text(_IP_LITERALS, _IP_LITERALS_BOUND, host, known)
    return known


_IP_LITERALS: Final[dict[str, bool]] = {}
_VALID_HOSTS: Final[dict[str, bool]] = {}  # hosts that passed (a dict, to share cache_text's bound)
#: 4,096 hosts each, 256 K characters (64 on average)
_IP_LITERALS_BOUND: Final = TextBound(4096, 256 << 10)
_VALID_HOSTS_BOUND: Final = TextBound(4096, 256 << 10)


def valid_host(host: str) -> bool:
    """A hostname, an IPv4 address or a bracketed IPv6 reference (RFC 3261 25.1 ``host``).

    Hosts that passed are remembered (bounded): the same few addresses appear in every message."""
    if host in _VALID_HOSTS:
        return True
    ok = _valid_host(host)
    if ok:
        cache_text(_VALID_HOSTS, _VALID_HOSTS_BOUND, host, True)
    return ok


def _valid_host(host: str) -> bool:
    if not host:
        return False
    if host[0] == "[":
        return host[-1] == "]" and host.count(":") >= 2 and _IPV6_RE.match(host[1:-1]) is not None
    if _IPV4_RE.match(host):
        return all(int(p) < 256 for p in host.split("."))
    return _HOSTNAME_RE.match(host) is not None


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` where host may be a bracketed IPv6 reference."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(f"junk after IPv6 reference in {text!r}")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not sep:
            return host, None
    port = digits_value(port_text, 5)
    if port < 0 or port > 65535:
        raise SipParseError(f"bad port in {text!r}")
    return host, port


def parse_params(text: str, *, what: str = "header") -> dict[str, str | None]:
    """Parse ``;name=value;flag`` parameter lists, tolerating LWS around ``;`` and ``=`` (RFC 3261 7.3.1).

    Names are lower-cased (parameter names are case-insensitive); values keep their case. Quoted values keep
    their quotes, so a value can be re-emitted exactly.
    """
    params: dict[str, str | None] = {}
    text = text.strip(_WS)
    if not text:
        return params
    if _SIMPLE_PARAMS_RE.match(text):
        # the usual case (no LWS, no quotes): the regex has checked every name and value already
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            params[name.lower()] = value if eq else None
        return params
    if text[0] != ";":
        raise SipParseError(f"{what} parameters must start with ';': {text[:40]!r}")
    for part in _split_outside_quotes(text[1:], ";"):
        name, eq, value = part.partition("=")
        name = name.strip(_WS)
        if not name or not is_token(name):
            raise SipParseError(f"bad {what} parameter {part.strip()[:40]!r}")
        if eq:
            value = value.strip(_WS)
            if not value:
                raise SipParseError(f"empty value for {what} parameter {name!r}")
            if value[0] == '"':
                _check_quoted(value)
            elif not _param_value_ok(value):
                raise SipParseError(f"bad value for {what} parameter {name!r}")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


# gen-value = token / host / quoted-string; host covers IPv6 references with brackets and colons
# (RFC 5118 via-received-param-no-delim asks us to accept an unbracketed IPv6 received= too).
_PARAM_VALUE: Final = r"[A-Za-z0-9\-.!%*_+`'~\[\]:/&$@?=]+"
_SIMPLE_PARAMS_RE: Final = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=" + _PARAM_VALUE + r")?)+\Z")


_PARAM_VALUE_TABLE: Final = char_table(_ALNUM + _TOKEN_MARKS + "[]:/&$@?=")  # _PARAM_VALUE


def _param_value_ok(value: str) -> bool:
    return all_in(value, _PARAM_VALUE_TABLE)


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _check_quoted(value: str) -> None:
    if len(value) < 2 or value[-1] != '"' or (len(value) > 2 and _quoted_end(value, 0) != len(value) - 1):
        raise SipParseError(f"unbalanced quotes in {value[:40]!r}")


def _quoted_end(text: str, start: int) -> int:
    """Index of the closing quote of the quoted string starting at ``start`` (honours backslash escapes)."""
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise SipParseError(f"unterminated quoted string in {text[start:start + 40]!r}")


def unquote(text: str) -> str:
    """The content of a quoted-string with backslash escapes removed, or ``text`` if it is not quoted."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        return re.sub(r"\\(.)", r"\1", inner, flags=re.S)
    return text


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i = _quoted_end(text, i) + 1
            continue
        if ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_comma(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and ``<...>`` (RFC 3261 7.3.1)."""
    if "," not in value:  # one value (a proxy's own Via, a Route): stripped once, not split
        stripped = value.strip(_WS)
        return [stripped] if stripped else []
    if '"' not in value and "<" not in value:  # nothing can hide a comma: split in C
        return [part.strip(_WS) for part in value.split(",")]
    parts: list[str] = []
    start = 0
    depth = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == '"':
            i = _quoted_end(value, i) + 1
            continue
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip(_WS))
            start = i + 1
        i += 1
    parts.append(value[start:].strip(_WS))
    return parts


@dataclass(slots=True)
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 19.1). ``user`` and ``password`` stay escaped as written.

    Parsed URIs are shared by the parse cache: never change one, use :meth:`with_changes`."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str | None
    text: str

    # An explicit __init__ (not the one @dataclass generates) so mypyc compiles it: generated ones stay
    # interpreted. Built for every message; treat as immutable once built (shared by the parse caches).
    def __init__(self, scheme: str, user: str | None, password: str | None, host: str, port: int | None,
                 params: dict[str, str | None] | None = None, headers: str | None = None, text: str = "") -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = headers
        self.text = text

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unescape(self.user)

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme, 5060)

    @property
    def transport(self) -> str:
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def aor(self) -> str:
        """The address-of-record key ``user@host`` (host lower-cased, user unescaped; RFC 3261 10.3 step 5)."""
        user = self.user_unescaped
        return f"{user}@{self.host.lower()}" if user is not None else self.host.lower()

    def build(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + self.headers)
        return "".join(out)

    def __str__(self) -> str:
        return self.text or self.build()

    def with_changes(self, **changes: object) -> SipURI:
        """A copy with some fields replaced and the text rebuilt."""
        values: dict[str, object] = {
            "scheme": self.scheme,
            "user": self.user,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "params": dict(self.params),
            "headers": self.headers,
        }
        values.update(changes)
        uri = SipURI(**values)  # type: ignore[arg-type]
        uri.text = uri.build()
        return uri


@dataclass(slots=True)
class AbsoluteURI:
    """Any other URI scheme (tel:, urn:, http: ...). Kept opaque: leansip routes only SIP URIs."""

    scheme: str
    rest: str
    text: str

    def __init__(self, scheme: str, rest: str, text: str = "") -> None:
        self.scheme = scheme
        self.rest = rest
        self.text = text

    def __str__(self) -> str:
        return self.text

    def aor(self) -> str:
        return self.text


URI = SipURI | AbsoluteURI


_URI_CACHE: Final[dict[str, URI]] = {}
_NAME_ADDR_CACHE: Final[dict[str, NameAddr]] = {}
_CACHE_MAX: Final = 16384
#: 16,384 keys, 2 M characters (128 on average: a full cache of usual URIs, or 4,096 of the longest kept)
_URI_BOUND: Final = TextBound(_CACHE_MAX, 2 << 20)
_NAME_ADDR_BOUND: Final = TextBound(_CACHE_MAX, 2 << 20)
_Key = TypeVar("_Key")


def cache_put(cache: dict[_Key, _Parsed], key: _Key, value: _Parsed, limit: int) -> None:
    """The parse caches' one rule for growing (and the core's other memos'): past ``limit`` entries the cache
    starts over (cheaper than any eviction order, and what repeats is back in it within a few messages)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value




def parse_uri(text: str) -> URI:
    """Parse a URI, reusing the result for text seen recently: the same Request-URIs, AORs and contacts come
    back in every refresh and every call, and parsing is the hot path's largest cost. The returned object is
    shared: treat it as immutable (use :meth:`SipURI.with_changes`)."""
    uri = _URI_CACHE.get(text)
    if uri is None:
        uri = _parse_uri(text)
        cache_text(_URI_CACHE, _URI_BOUND, text, uri)
    return uri


def _parse_uri(text: str) -> URI:
    """Parse a Request-URI or the addr-spec inside ``<...>``.

    ``sip:user;par=u%40example.net@example.com`` is legal: ``;`` can be part of the user (RFC 4475 3.1.1.10), so
    the user part ends at the last ``@`` before any ``?``.
    """
    # compiled, `in` is a direct memchr each; a regex call is a method lookup by name plus the engine (~1,800
    # instructions): the usual URI (sip scheme, alphanumeric user) needs no regex at all
    if not text or " " in text or "<" in text or ">" in text or "\t" in text or "\r" in text or "\n" in text:
        raise SipParseError(f"bad URI {text[:60]!r}")
    scheme, colon, rest = text.partition(":")
    if colon and (scheme == "sip" or scheme == "sips"):
        lscheme = scheme
    elif not colon or not _SCHEME_RE.match(scheme):
        raise SipParseError(f"URI without a scheme: {text[:60]!r}")
    else:
        lscheme = scheme.lower()
    if lscheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(f"empty {scheme}: URI")
        return AbsoluteURI(lscheme, rest, text)
    # '?' and ';' are legal in the user part (user-unreserved), '@' is legal in neither parameters nor headers:
    # so the user part ends at the last '@', and only then do '?' and ';' mean headers and parameters.
    at = rest.rfind("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user or not ((user.isascii() and user.isalnum()) or _USER_RE.match(user)) \
                or (password is not None and password and not _USER_RE.match(password)):
            raise SipParseError(f"bad user part in URI {text[:60]!r}")
    rest, qmark, headers = rest.partition("?")
    semi = rest.find(";")
    if semi >= 0:
        hostport, params = rest[:semi], parse_params(rest[semi:], what="URI")
    else:
        hostport, params = rest, {}
    host, port = split_host_port(hostport)
    if not valid_host(host):
        raise SipParseError(f"bad host {host[:60]!r} in URI")
    return SipURI(lscheme, user, password, host, port, params, headers if qmark else None, text)


def uri_equal(a: URI, b: URI) -> bool:
    """URI equality after RFC 3261 19.1.4 (used for Contact matching in the registrar)."""
    if isinstance(a, AbsoluteURI) or isinstance(b, AbsoluteURI):
        return str(a) == str(b)
    # userinfo is compared case-sensitively but after unescaping, like the rest (%65 equals e)
    pa, pb = a.password, b.password
    if a.scheme != b.scheme or a.user_unescaped != b.user_unescaped or (pa and unescape(pa)) != (pb and unescape(pb)):
        return False
    if a.host.lower() != b.host.lower() or a.port != b.port:
        return False
    for name in ("user", "ttl", "method", "maddr", "transport"):
        va, vb = a.params.get(name), b.params.get(name)
        if (name in a.params) != (name in b.params):
            return False
        if va is not None and vb is not None and unescape(va).lower() != unescape(vb).lower():
            return False
    for name, va in a.params.items():
        if name in b.params:
            vb = b.params[name]
            if unescape(va or "").lower() != unescape(vb or "").lower():
                return False
    # "URI header components are never ignored": same set of headers, in any order (the 19.1.4 example
    # ?subject=project%20x&priority=urgent equals ?priority=urgent&subject=project%20x)
    return _uri_headers(a.headers) == _uri_headers(b.headers)


def _uri_headers(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return []
    out = []
    for part in text.split("&"):
        name, _, value = part.partition("=")
        out.append((unescape(name).lower(), unescape(value)))
    return sorted(out)


def uri_key(uri: URI) -> str:
    """A string that is equal for equal URIs in the common cases (lower-case host, unescaped user, no
    parameters except the ones RFC 3261 19.1.4 says must match). Used as a dictionary key for contacts."""
    if isinstance(uri, AbsoluteURI):
        return uri.text
    key = [uri.scheme, ":"]
    user = uri.user_unescaped
    if user is not None:
        key.append(user)
        key.append("@")
    key.append(uri.host.lower())
    if uri.port is not None:
        key.append(f":{uri.port}")
    for name in ("transport", "user", "maddr", "ttl", "method"):
        if name in uri.params:
            key.append(f";{name}={(uri.params[name] or '').lower()}")
    return "".join(key)


@dataclass(slots=True)
class NameAddr:
    """A To/From/Contact/Route style value: optional display name, URI, header parameters.

    Shared by the parse cache: never change one."""

    display: str | None
    uri_text: str
    params: dict[str, str | None]
    bracketed: bool
    _uri: URI | None = field(compare=False)  # parsed on first use: not part of the value

    # An explicit __init__ (not the one @dataclass generates) so mypyc compiles it: generated ones stay
    # interpreted. Built for every message; treat as immutable once built (shared by the parse caches).
    def __init__(self, display: str | None, uri_text: str, params: dict[str, str | None],
                 bracketed: bool = True, _uri: URI | None = None) -> None:
        self.display = display
        self.uri_text = uri_text
        self.params = params
        self.bracketed = bracketed
        self._uri = _uri

    @property
    def uri(self) -> URI:
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri_text)  # parsed on first use only
        return uri

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def build(self) -> str:
        head = f"{self.display} " if self.display else ""
        return f"{head}<{self.uri_text}>{format_params(self.params)}"

    def __str__(self) -> str:
        return self.build()


def parse_name_addr(text: str) -> NameAddr:
    """Cached :func:`_parse_name_addr` (To/From/Contact values repeat across refreshes and dialogs); the result
    is shared: treat it as immutable."""
    na = _NAME_ADDR_CACHE.get(text)
    if na is None:
        tagged = _with_tag(text)
        if tagged is not None:
            return tagged
        na = _parse_name_addr(text)
        cache_text(_NAME_ADDR_CACHE, _NAME_ADDR_BOUND, text, na)
    return na


def _with_tag(text: str) -> NameAddr | None:
    """``<uri>;...;tag=x`` as the cached parse of the part before the tag plus the tag, or None to parse it all.

    From and To tags are new in every dialog, so a cache keyed by the whole value would never hit for them and
    would fill with values never seen again, pushing out the ones that do repeat. Only the plain case takes
    this path (the tag last, lower-case, no spaces, a valid value, after the ``>``); anything else gets the
    full parse, so the result and its errors are the same as :func:`_parse_name_addr`'s."""
    i = text.rfind(";tag=")
    if i <= 0:
        return None
    tag = text[i + 5:]
    if not tag or ";" in tag or not _param_value_ok(tag) or text.rfind(">") > i:
        return None
    base = parse_name_addr(text[:i])
    params = dict(base.params)
    params["tag"] = tag
    return NameAddr(base.display, base.uri_text, params, base.bracketed, base._uri)


def _parse_name_addr(text: str) -> NameAddr:
    """Parse ``[display-name] <addr-spec> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 20.10, 20.20).

    In the addr-spec form the URI cannot carry parameters or headers: everything after the first ``;`` is a
    header parameter, and a ``?`` or ``,`` in the URI is an error (RFC 3261 20: such URIs need ``<>``).
    """
    text = text.strip(_WS)
    if not text:
        raise SipParseError("empty name-addr")
    display: str | None = None
    rest = text
    if rest[0] == '"':
        end = _quoted_end(rest, 0)
        display = rest[: end + 1]
        rest = rest[end + 1 :].lstrip(_WS)
        if not rest.startswith("<"):
            raise SipParseError(f"quoted display name without <URI>: {text[:60]!r}")
    lt = rest.find("<")
    if lt >= 0:
        if display is None:
            raw_display = rest[:lt].strip(_WS)
            if raw_display:
                # unquoted display-name = *(token LWS); RFC 4475 3.3.8 (baddn) has ',' and other non-tokens
                if not all(is_token(word) for word in raw_display.split()):
                    raise SipParseError(f"display name must be tokens or quoted: {raw_display[:40]!r}")
                display = raw_display
        gt = rest.find(">", lt)
        if gt < 0:
            raise SipParseError(f"'<' without '>' in {text[:60]!r}")
        uri_text = rest[lt + 1 : gt].strip(_WS)
        params = parse_params(rest[gt + 1 :])
        if not uri_text:
            raise SipParseError("empty URI in <>")
        return NameAddr(display, uri_text, params, True, None)
    if display is not None:
        raise SipParseError(f"display name without <URI> in {text[:60]!r}")
    semi = rest.find(";")
    uri_text = rest if semi < 0 else rest[:semi]
    uri_text = uri_text.strip(_WS)
    if "?" in uri_text or " " in uri_text:
        raise SipParseError(f"URI with headers or spaces must be in <>: {uri_text[:60]!r}")
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    return NameAddr(None, uri_text, params, False, None)




_VIA_RE: Final = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[^\]]*\]|[^;\s:\[]+)(?:\s*:\s*([^;\s]*))?\s*(.*)\Z",
    re.S,
)


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 20.42): ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    protocol: str
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]
    text: str

    # An explicit __init__ (not the one @dataclass generates) so mypyc compiles it: generated ones stay
    # interpreted. Built for every message; treat as immutable once built (shared by the parse caches).
    def __init__(self, protocol: str, transport: str, host: str, port: int | None,
                 params: dict[str, str | None], text: str = "") -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self.text = text

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def build(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"

    def __str__(self) -> str:
        return self.text or self.build()


#: transports a Via takes the fast path for (written in upper case, as every UA writes them)
_VIA_TRANSPORTS: Final = frozenset({"UDP", "TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


#: parsed Via values by their text (the parse cache's rule: treat a Via as immutable). A transaction's Vias come
#: back in each of its responses: the proxy's own (put here when written, see :func:`remember_via`) and the
#: client's as the proxy stamped it. Smaller than the URI caches: a Via lives as long as its transaction.
_VIA_CACHE: Final[dict[str, Via]] = {}
_VIA_CACHE_MAX: Final = 4096
#: 4,096 keys, 1 M characters (256 on average: a Via with received, rport and a branch is about 100)
_VIA_BOUND: Final = TextBound(_VIA_CACHE_MAX, 1 << 20)
_VIA_SHAPES_BOUND: Final = TextBound(_VIA_CACHE_MAX, 1 << 20)


def remember_via(via: Via) -> None:
    """Put a Via built by hand (ours, or a client's stamped with received/rport) in the parse cache under its
    text: it must be what :func:`parse_via` would make of that text (tests hold the two builders to it)."""
    cache_text(_VIA_CACHE, _VIA_BOUND, via.text, via)


#: parsed Vias by their text with the branch value cut out (:func:`_with_branch`): one entry per client sent-by
_VIA_SHAPES: Final[dict[str, Via]] = {}


def parse_via(text: str) -> Via:
    """One Via value: from the cache of those seen or written lately, else the cached parse of its text without
    the branch plus the branch (:func:`_with_branch`), else parsed (:func:`_parse_via`)."""
    via = _VIA_CACHE.get(text)
    if via is None:
        via = _with_branch(text)
        if via is None:
            via = _parse_via(text)
            cache_text(_VIA_CACHE, _VIA_BOUND, text, via)
    return via


def _with_branch(text: str) -> Via | None:
    """``SIP/2.0/UDP host:port;...;branch=x;...`` as the cached parse of the same text with another branch, plus
    this branch; None to parse it all.

    A request's branch is new in every transaction (RFC 3261 8.1.1.7), so a cache keyed by the whole value never
    hits for the Via of a new request, while the rest of the value (one client's sent-by and parameters) repeats
    in all its requests. Such Vias are not put in the whole-text cache either: filling it with values never
    seen again would push out the ones that come back (responses), and free them all cold when it starts over.
    Only the plain case takes this path (``;branch=`` in lower case; no quotes; no LWS at the end; a non-empty,
    valid value; and a shape is kept only when no other parameter could be a branch); anything else gets the
    full parse, so results and errors are :func:`_parse_via`'s."""
    i = text.find(";branch=")
    if i <= 0 or '"' in text or not text.startswith("SIP/2.0/"):
        return None
    start = i + 8
    end = text.find(";", start)
    if end < 0:
        end = len(text)
    branch = text[start:end]
    if not branch or not _param_value_ok(branch) or text[-1] in _WS:
        return None
    key = text[:start] + text[end:]
    shape = _VIA_SHAPES.get(key)
    if shape is None:
        via = _parse_via(text)  # a bad Via raises here, as it would have anyway
        # "branch" once in the rest, in any case: no other parameter (a second ;branch=, names being case-blind
        # and LWS allowed around '=') can override ours, in this text or any other with the same key
        if key.lower().count("branch") == 1:
            cache_text(_VIA_SHAPES, _VIA_SHAPES_BOUND, key, via)
        return via
    params = dict(shape.params)
    params["branch"] = branch
    return Via(shape.protocol, shape.transport, shape.host, shape.port, params, text)


def _parse_via(text: str) -> Via:
    """Parse one Via value. The usual form (``SIP/2.0/UDP host[:port];params``, no spaces inside the sent-by,
    no IPv6 reference) is split with string operations; anything else goes through the full grammar
    (:func:`_parse_via_grammar`). Both end in the same checks, so they accept, reject and build the same:
    a property test holds them to it."""
    if text.startswith("SIP/2.0/"):
        sp = text.find(" ", 8)
        semi = text.find(";", sp + 1) if sp > 0 else -1
        if semi > sp + 1:
            transport = text[8:sp]
            sent_by = text[sp + 1:semi]
            # isprintable() is False for every character the grammar's \s matches except " "
            if (transport in _VIA_TRANSPORTS and sent_by.isprintable() and " " not in sent_by
                    and "[" not in sent_by and sent_by.count(":") <= 1 and sent_by[0] != ":"):
                host, colon, port_text = sent_by.partition(":")
                return _checked_via("SIP/2.0", transport, host, port_text if colon else None, text[semi:], text)
    return _parse_via_grammar(text)


def _parse_via_grammar(text: str) -> Via:
    m = _VIA_RE.match(text)
    if m is None:
        raise SipParseError(f"bad Via {text[:60]!r}")
    # sent-by = host [ COLON port ] and COLON = SWS ":" SWS: RFC 3261 20.42 itself writes "first.example.com: 4000"
    name, version, transport, host, port_text, rest = m.groups()
    return _checked_via(f"{name.upper()}/{version}", transport.upper(), host, port_text, rest, text)


def _checked_via(protocol: str, transport: str, host: str, port_text: str | None, rest: str, text: str) -> Via:
    # host and port come split already (a host is bracketed or holds no ':'): check the port here rather than
    # joining and re-splitting them through split_host_port
    port: int | None = None
    if port_text is not None:
        port = digits_value(port_text, 5)
        if port < 0 or port > 65535:
            raise SipParseError(f"bad port in {f'{host}:{port_text}'!r}")
    if host not in _VALID_HOSTS and not valid_host(host):
        raise SipParseError(f"bad Via host {host[:60]!r}")
    params = parse_params(rest, what="Via")
    if "branch" in params and not params["branch"]:
        raise SipParseError("Via branch without a value")
    ttl = params.get("ttl")
    if ttl is not None and not 0 <= digits_value(ttl, 3) <= 255:
        raise SipParseError("bad Via ttl")
    rport = params.get("rport")
    if rport is not None and not 0 <= digits_value(rport, 5) <= 65535:
        raise SipParseError("bad Via rport")
    return Via(protocol, transport, host, port, params, text.strip(_WS))
