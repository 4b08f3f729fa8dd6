"""SIP messages: parse, inspect lazily, edit, and re-emit by splicing (RFC 3261 sections 7, 18.3, 20, 25).

Theory of operation
-------------------
:func:`parse_message` does one pass over the header section: it splits lines, unfolds continuation lines,
maps compact header names (``v``, ``i``, ``m`` ...) to their long form and stores every header as a
:class:`Header` holding the canonical lower-case name, the unfolded value text and the *original line*. On the
way it notes the first line of each header the server's straight path reads (``KIND_*``) and which come twice,
so reading one of those is a list read, not a scan of the lines. Nothing else is parsed until somebody asks:
``msg.top_via``, ``msg.cseq``, ``msg.from_tag`` ... parse the one value they need and cache it.

When a header is changed through the editing methods its original line is dropped and the header is rebuilt
from ``name: value`` on output; headers nobody touched are written back byte for byte (the "lump" idea of
Kamailio's forwarding). A proxy therefore pays only for the headers it edits: the Via it adds, Max-Forwards,
Route and Record-Route.

Header text is decoded as latin-1 so that every byte maps to one character and back, losslessly, whatever
charset the peer used; structure in SIP is all ASCII.

Call next: :func:`validate_request` (or :func:`validate_response`) before acting on a message; both raise
:class:`SipParseError` with the status to answer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Final

from leansip.sip.errors import SipParseError
from leansip.sip.uri import (
    TOKEN_CHARS,
    URI,
    NameAddr,
    SipURI,
    Via,
    digits_value,
    is_digits,
    is_token,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_comma,
)

__all__ = [
    "Header",
    "Message",
    "Request",
    "Response",
    "SipParseError",
    "parse_message",
    "validate_request",
    "validate_response",
    "REASONS",
    "canonical_name",
    "display_name",
    "footprint",
]

# RFC 3261 7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: Final = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "a": "accept-contact",
    "b": "referred-by",
    "d": "request-disposition",
    "j": "reject-contact",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
}

_SPECIAL_DISPLAY: Final = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers whose values are comma-separated lists (RFC 3261 7.3.1). Others (From, To, Call-ID,
# WWW-Authenticate, Date ...) may contain commas that are not separators.
LIST_HEADERS: Final = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "allow-events",
        "path",
        "service-route",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
    }
)

# Headers that may appear at most once (RFC 3261 20; RFC 4475 3.3.9 "multi01" must get 400).
SINGLE_HEADERS: Final = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})

REASONS: Final = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_WS: Final = " \t"

# The headers the server's straight path reads, numbered: a parsed message indexes the first line of each (and
# notes which appear more than once), so reading one is a list read instead of a scan of every line, an absent
# one is known at once, and validation needs no counting pass. Any other name is found by the scan.
KIND_VIA: Final = 0
KIND_FROM: Final = 1
KIND_TO: Final = 2
KIND_CALL_ID: Final = 3
KIND_CSEQ: Final = 4
KIND_MAX_FORWARDS: Final = 5
KIND_CONTACT: Final = 6
KIND_EXPIRES: Final = 7
KIND_CONTENT_LENGTH: Final = 8
KIND_ROUTE: Final = 9
KIND_RECORD_ROUTE: Final = 10
KIND_REQUIRE: Final = 11
KIND_PROXY_REQUIRE: Final = 12
KIND_PATH: Final = 13
KIND_USER_AGENT: Final = 14
KIND_NAMES: Final = ("via", "from", "to", "call-id", "cseq", "max-forwards", "contact", "expires", "content-length",
                     "route", "record-route", "require", "proxy-require", "path", "user-agent")
_KIND_COUNT: Final = len(KIND_NAMES)
#: canonical name -> kind, for the parser's first sight of a spelling
_KINDS: Final[dict[str, int]] = {name: kind for kind, name in enumerate(KIND_NAMES)}
_MAX_CSEQ: Final = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number MUST be less than 2**31


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (``V`` -> ``via``)."""
    lname = name.lower()
    return COMPACT_FORMS.get(lname, lname)


def _header_key(name: str) -> str:
    """:func:`canonical_name` for the names code asks :meth:`Message.header` for, remembered: they are a few
    literals, and a dict hit on one costs a fraction of the ``lower()`` call it saves."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = canonical_name(name)
        if len(_KEY_CACHE) < 1024 and len(name) <= _NAME_KEY_MAX:
            _KEY_CACHE[name] = key
    return key


#: header names longer than this are not remembered by the name caches (the longest registered name is 29)
_NAME_KEY_MAX: Final = 64


_KEY_CACHE: Final[dict[str, str]] = {}


def display_name(name: str) -> str:
    """The conventional spelling of a canonical header name, for headers leansip writes itself."""
    spelled = _DISPLAY_CACHE.get(name)
    if spelled is None:
        spelled = _SPECIAL_DISPLAY.get(name)
        if spelled is None:
            spelled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_DISPLAY_CACHE) < 1024 and len(name) <= _NAME_KEY_MAX:  # the names leansip edits are few
            _DISPLAY_CACHE[name] = spelled
    return spelled


_DISPLAY_CACHE: Final[dict[str, str]] = {}


class Header:
    """One header line: canonical name, unfolded value, and the original line (``None`` once edited)."""

    __slots__ = ("name", "value", "raw")

    def __init__(self, name: str, value: str, raw: str | None = None) -> None:
        self.name = name
        self.value = value
        self.raw = raw

    def line(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"{display_name(self.name)}: {self.value}"

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.value!r})"


class Message:
    """Common part of requests and responses. Use :func:`parse_message` or the constructors of the subclasses."""

    __slots__ = ("headers", "body", "_start", "_top_via", "_vias", "_from", "_to", "_cseq", "_contacts",
                 "_max_forwards", "_max_forwards_read", "_index", "_repeated", "_index_len", "wire_len")

    def __init__(self, headers: Iterable[Header] = (), body: bytes = b"") -> None:
        self.headers: list[Header] = list(headers)
        self.body = body
        #: bytes of the datagram or stream message it was parsed from (0: built here); see :func:`footprint`
        self.wire_len = 0
        self._start: str | None = None
        # The parsed views, each None until asked for (slots, not a dict: compiled, a slot is a direct read and
        # costs no allocation; a dict of views cost an allocation, a resize and a hashed lookup per view).
        self._top_via: Via | None = None
        self._vias: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: tuple[int, str] | None = None
        self._contacts: list[NameAddr] | None = None
        self._max_forwards: int | None = None
        self._max_forwards_read = False  # Max-Forwards may be absent: None is a valid parsed value
        #: the parser's index: the first line of each KIND_* header (None: absent), a bit per kind seen on more
        #: than one line, and the length of ``headers`` it describes. None on a built message and after any edit
        #: through the methods; a list of another length (somebody edited ``headers`` directly) is not trusted.
        self._index: list[Header | None] | None = None
        self._repeated = 0
        self._index_len = 0

    # ----------------------------------------------------------------- reading
    def header(self, name: str) -> str | None:
        """Value of the first header called ``name`` (any case, compact forms accepted), or None."""
        # The core asks with canonical names (interned literals): found on the first pass, no name lookup. A
        # canonical name matches no other spelling, so a miss here means "absent" unless ``name`` is not canonical.
        for h in self.headers:
            if h.name == name:
                return h.value
        key = _header_key(name)
        if key != name:
            for h in self.headers:
                if h.name == key:
                    return h.value
        return None

    def _valid_index(self) -> list[Header | None] | None:
        """The parser's index while it still describes ``headers``, else None (read by scanning)."""
        index = self._index
        if index is not None and self._index_len == len(self.headers):
            return index
        return None

    def _first(self, kind: int) -> Header | None:
        """The first header line of a KIND_* header, from the parser's index while it holds, else by a scan."""
        index = self._valid_index()
        if index is not None:
            return index[kind]
        name = KIND_NAMES[kind]
        for h in self.headers:
            if h.name == name:
                return h
        return None

    def first_value(self, kind: int) -> str | None:
        """:meth:`header` for a KIND_* header (``msg.first_value(KIND_ROUTE)``): no name to compare line by line."""
        h = self._first(kind)
        return h.value if h is not None else None

    def repeated(self, kind: int) -> bool:
        """Is there more than one line of this KIND_* header?"""
        if self._valid_index() is not None:
            return (self._repeated >> kind) & 1 == 1
        name = KIND_NAMES[kind]
        seen = False
        for h in self.headers:
            if h.name == name:
                if seen:
                    return True
                seen = True
        return False

    def has(self, name: str) -> bool:
        return self.header(name) is not None

    def header_lines(self, name: str) -> list[str]:
        """Values of every header line called ``name``, in order, without splitting at commas."""
        key = _header_key(name)
        return [h.value for h in self.headers if h.name == key]

    def header_values(self, name: str) -> list[str]:
        """All values of a list header (RFC 3261 7.3.1): every line, split at commas outside quotes and <>."""
        key = _header_key(name)
        out: list[str] = []
        for h in self.headers:
            if h.name == key:
                out.extend(split_comma(h.value))
        return out

    def values_of(self, kind: int) -> list[str]:
        """:meth:`header_values` of a KIND_* header; with the parser's index, one line (or none) is read directly."""
        index = self._valid_index()
        if index is not None and not (self._repeated >> kind) & 1:
            h = index[kind]
            return split_comma(h.value) if h is not None else []
        return self.header_values(KIND_NAMES[kind])

    def forget_views(self) -> None:
        """Drop the parsed views (Vias, From/To, CSeq, ...); they are parsed again if asked for.

        For messages a transaction keeps through its long wait (RFC 3261 Timers J, L, M: 32 s) while nobody
        reads them: freed now, while in cache, they cost a fraction of what freeing them cold at the end costs."""
        self._top_via = self._vias = None
        self._from = self._to = None
        self._cseq = None
        self._contacts = None
        self._max_forwards = None
        self._max_forwards_read = False

    def has_views(self) -> bool:
        """Is any parsed view held (for tests of :meth:`forget_views`)?"""
        return (self._top_via is not None or self._vias is not None or self._from is not None
                or self._to is not None or self._cseq is not None or self._contacts is not None
                or self._max_forwards_read)

    def _copy_views(self, other: Message) -> None:
        """Give ``other`` (a copy) this message's parsed views: immutable values, shared until either is edited."""
        other._top_via = self._top_via
        other._vias = self._vias
        other._from = self._from
        other._to = self._to
        other._cseq = self._cseq
        other._contacts = self._contacts
        other._max_forwards = self._max_forwards
        other._max_forwards_read = self._max_forwards_read

    def set_top_via_view(self, via: Via) -> None:
        """After the first Via line was rewritten to ``via.text`` (``core.stamp_via``): the view to go with it."""
        self._top_via = via
        self._vias = None

    # ----------------------------------------------------------------- editing
    def _touch(self, key: str) -> None:
        """Forget the parsed views of header ``key`` (canonical name) after an edit; the others stay valid. The
        parser's index is dropped whatever the name: later reads scan the lines."""
        self._index = None
        self._forget_view(key)

    def _forget_view(self, key: str) -> None:
        if key == "via":
            self._top_via = self._vias = None
        elif key == "contact":
            self._contacts = None
        elif key == "cseq":
            self._cseq = None
        elif key == "from":
            self._from = None
        elif key == "to":
            self._to = None
        elif key == "max-forwards":
            self._max_forwards = None
            self._max_forwards_read = False

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Append (or, with ``first``, put before the first header of that name, or at the top)."""
        key = _header_key(name)
        header = Header(key, value)
        if first:
            for i, h in enumerate(self.headers):
                if h.name == key:
                    self.headers.insert(i, header)
                    break
            else:
                self.headers.insert(0, header)
        else:
            self.headers.append(header)
        self._touch(key)

    def replace_header(self, i: int, header: Header) -> None:
        """Put ``header`` in place of line ``i``, a header of the same name (a rewritten top Via); the parser's
        index follows when it named the old line."""
        old = self.headers[i]
        self.headers[i] = header
        index = self._index
        if index is not None:
            kind = _KINDS.get(old.name, -1)
            if old.name != header.name:
                self._index = None
            elif kind >= 0 and index[kind] is old:
                index[kind] = header
        self._forget_view(old.name)

    def set_header(self, name: str, value: str) -> None:
        """Replace the first header of that name (dropping later ones) or append it."""
        key = _header_key(name)
        found = False
        kept: list[Header] = []
        for h in self.headers:
            if h.name == key:
                if found:
                    continue
                found = True
                h = Header(key, value)
            kept.append(h)
        if not found:
            kept.append(Header(key, value))
        self.headers = kept
        self._touch(key)

    def remove_header(self, name: str) -> int:
        key = _header_key(name)
        before = len(self.headers)
        self.headers = [h for h in self.headers if h.name != key]
        self._touch(key)
        return before - len(self.headers)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the first value of a list header (top Via, first Route), splitting a line that
        holds several values and re-emitting only the remainder of that line."""
        key = _header_key(name)
        i = 0
        while i < len(self.headers):
            h = self.headers[i]
            if h.name != key:
                i += 1
                continue
            values = split_comma(h.value)
            if not values:
                del self.headers[i]  # an empty line holds no value; the next one is now at index i
                self._touch(key)
                continue
            first = values[0]
            if len(values) == 1:
                del self.headers[i]
            else:
                self.headers[i] = Header(key, ", ".join(values[1:]))
            self._touch(key)
            return first
        return None

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        self.body = body
        if content_type is not None:
            self.set_header("content-type", content_type)
        self.set_header("content-length", str(len(body)))

    # ----------------------------------------------------------------- lazy views
    @property
    def call_id(self) -> str:
        value = self.first_value(KIND_CALL_ID)
        if value is None:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        cached = self._cseq
        if cached is None:
            value = self.first_value(KIND_CSEQ)
            if value is None:
                raise SipParseError("missing CSeq")
            # "1 REGISTER": one space, a known method (leansip's constant: later compares are identity hits)
            sp = value.find(" ")
            if sp > 0:
                known = _METHODS.get(value[sp + 1:])
                if known is not None:
                    n = digits_value(value[:sp], 10)
                    if 0 <= n <= _MAX_CSEQ:
                        cached = (n, known)
                        self._cseq = cached
                        return cached
            num, _, method = value.strip(_WS).replace("\t", " ").partition(" ")  # LWS may be a tab
            method = method.strip(_WS)
            n = digits_value(num, 10)
            if n < 0:  # not digits, or longer than 10: leading zeros are allowed, so look again
                if not is_digits(num) or len(num.lstrip("0")) > 10:
                    raise SipParseError(f"bad CSeq {value[:40]!r}")
                n = int(num)
            if not method or not is_token(method):
                raise SipParseError(f"bad CSeq {value[:40]!r}")
            if n > _MAX_CSEQ:
                raise SipParseError("CSeq number too large")
            cached = (n, method)
            self._cseq = cached
        return cached

    def _name_addr(self, kind: int) -> NameAddr:
        value = self.first_value(kind)
        if value is None:
            raise SipParseError(f"missing {display_name(KIND_NAMES[kind])}")
        return parse_name_addr(value)

    @property
    def from_(self) -> NameAddr:
        cached = self._from
        if cached is None:
            cached = self._from = self._name_addr(KIND_FROM)
        return cached

    @property
    def to(self) -> NameAddr:
        cached = self._to
        if cached is None:
            cached = self._to = self._name_addr(KIND_TO)
        return cached

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def vias(self) -> list[Via]:
        cached = self._vias
        if cached is None:
            cached = self._vias = [parse_via(v) for v in self.header_values("via")]
        return cached

    @property
    def top_via(self) -> Via:
        cached = self._top_via
        if cached is None:
            value = self.first_value(KIND_VIA)
            if value is None:
                raise SipParseError("missing Via")
            if "," in value:
                value = split_comma(value)[0]
            cached = self._top_via = parse_via(value)
        return cached

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def contacts(self) -> list[NameAddr]:
        cached = self._contacts
        if cached is None:
            cached = self._contacts = [parse_name_addr(v) for v in self.values_of(KIND_CONTACT) if v.strip() != "*"]
        return cached

    def int_header(self, name: str, default: int | None = None, *, limit: int = 2**32 - 1) -> int | None:
        return _int_value(self.header(name), name, default, limit)

    @property
    def max_forwards(self) -> int | None:
        # cached: validation, the core and prepare_forward each ask; an edit clears it (_touch)
        if self._max_forwards_read:
            return self._max_forwards
        value = _int_value(self.first_value(KIND_MAX_FORWARDS), "max-forwards", None, 2**31 - 1)
        self._max_forwards = value
        self._max_forwards_read = True
        return value

    @property
    def expires(self) -> int | None:
        return _int_value(self.first_value(KIND_EXPIRES), "expires", None, 2**32 - 1)

    # ----------------------------------------------------------------- output
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize: untouched headers verbatim, edited ones rebuilt, then the body."""
        start = self.start_line()
        # keep the received start line (e.g. a status line without the SP before an empty reason) only while
        # it still says what the fields say: a copy whose method or status was changed must show the change
        if self._start is not None and self._start.rstrip(" ") == start.rstrip(" "):
            start = self._start
        lines = [start]
        lines.extend([h.raw if h.raw is not None else h.line() for h in self.headers])
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("latin-1") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _int_value(value: str | None, name: str, default: int | None, limit: int) -> int | None:
    """A header's value as a decimal number (``default`` when absent), at most ``limit``; 400 otherwise."""
    if value is None:
        return default
    value = value.strip(_WS)
    number = digits_value(value, 10)
    if number < 0 or number > limit:
        raise SipParseError(f"bad {display_name(canonical_name(name))} value {value[:20]!r}")
    return number


class Request(Message):
    """A SIP request. ``uri`` is the Request-URI text; ``ruri`` its parsed form (cached)."""

    __slots__ = ("method", "_uri", "version", "_ruri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[Header] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self._uri = uri
        self.version = version
        self._ruri: URI | None = None

    @property
    def uri(self) -> str:
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        self._uri = value
        self._ruri = None
        self._start = None

    @property
    def ruri(self) -> URI:
        if self._ruri is None:
            self._ruri = parse_uri(self._uri)
        return self._ruri

    def start_line(self) -> str:
        return f"{self.method} {self._uri} {self.version}"

    def copy(self) -> Request:
        """A shallow copy whose header list can be edited without touching this one (headers are shared
        until edited: editing replaces Header objects, it never mutates them)."""
        other = Request(self.method, self._uri, (), self.body, self.version)
        other.headers = list(self.headers)
        self._copy_views(other)  # parsed views are immutable values; an edit of the copy drops its own
        other._start = self._start
        other._ruri = self._ruri
        return other

    def skeleton(self) -> Request:
        """The method, the first Via line and the first To line, and nothing else (the lines shared, not
        copied): what a server transaction still reads once the request is answered (its branch, its method,
        the To tag of an RFC 2543 request), so the rest of a large request can go."""
        headers: list[Header] = []
        via = self._first(KIND_VIA)
        if via is not None:
            headers.append(via)
        to = self._first(KIND_TO)
        if to is not None:
            headers.append(to)
        return Request(self.method, "", headers, b"", self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[Header] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self.version = version

    def start_line(self) -> str:
        status = self.status
        if 100 <= status <= 699 and self.version == "SIP/2.0":
            # the line of a status with its usual reason, made once: the reason is REASONS' own string (an
            # identity hit), and formatting the number is most of the cost of the line
            known = _STATUS_LINES[status - 100]
            if known is not None and known[0] == self.reason:
                return known[1]
        return f"{self.version} {status} {self.reason}"

    def copy(self) -> Response:
        other = Response(self.status, self.reason, (), self.body, self.version)
        other.headers = list(self.headers)
        self._copy_views(other)
        other._start = self._start
        return other

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


#: "SIP/2.0 200 OK" by status - 100, with the reason it was made for, for the statuses REASONS names
_STATUS_LINES: Final[list[tuple[str, str] | None]] = [
    (REASONS[code], f"SIP/2.0 {code} {REASONS[code]}") if code in REASONS else None for code in range(100, 700)]

#: what a parsed header line costs besides its text: the Header object and two string headers (measured with
#: tracemalloc at about 155 bytes compiled; ``tests/unit/test_memory_bounds.py`` holds :func:`footprint` above
#: the truth)
_LINE_OVERHEAD: Final = 200
#: a message object, its header list and index (a parsed message without lines is about 700 bytes)
_MESSAGE_OVERHEAD: Final = 1024


def footprint(msg: Message) -> int:
    """An upper estimate of the bytes a message holds, for the byte bounds of what is kept per peer
    (transactions): a parsed line keeps its text twice (the line as received, and its value), plus a fixed
    cost per line and per message. A message built here (``wire_len`` 0) is counted by its lines' values."""
    lines = len(msg.headers)
    text = msg.wire_len
    if text == 0:
        for h in msg.headers:
            text += len(h.value)
        text += len(msg.body)
    return 2 * text + _LINE_OVERHEAD * lines + _MESSAGE_OVERHEAD


# --------------------------------------------------------------------- parsing


#: the header section is at the start of a message: a datagram is at most 65,507 bytes and stream framing caps
#: the header section at 64 KiB (``framing.MAX_HEADER_BYTES``), so a larger message's body need not be decoded
#: just to be skipped; only if no end shows within this window is the whole message searched, as before
_HEAD_WINDOW: Final = 64 * 1024 + 4


def _message_text(data: bytes) -> str:
    """The text to read the header section from: latin-1 decodes byte for byte, so offsets in the text are
    offsets in the bytes. Past the window only the window, if the header section ends in it (an empty line:
    LF LF or LF CR LF); a large body is not decoded just to be skipped."""
    if len(data) > _HEAD_WINDOW:
        window = data[:_HEAD_WINDOW].decode("latin-1")
        if "\n\n" in window or "\n\r\n" in window:
            return window
    return data.decode("latin-1")


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message from ``data`` (a whole datagram, or one framed message from a stream).

    Leading CRLFs are skipped (RFC 3261 7.5). The body is cut at Content-Length; on a datagram a
    Content-Length larger than what arrived is an error (RFC 3261 18.3), and bytes after the body are dropped
    (RFC 4475 dblreq). Raises :class:`SipParseError`; nothing else.
    """
    if data[:2] == b"\r\n" or data[:1] == b"\n":
        data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message", status=0)
    # The lines are cut out of the text one at a time: a line ends at LF, and a CR before it is dropped, so CRLF
    # and bare LF (RFC 3261 7.5 asks for CRLF; peers do not always) read alike; an empty line ends the header
    # section and the body starts after it. A datagram whose header section never ends (RFC 4475 baddn.dat is
    # archived that way) is all header section. One find per line: no list of lines, no second search for
    # the end of the section, no test of every line for a stray LF.
    text = _message_text(data)
    end = len(text)
    body_at = len(data)
    pos = 0
    start = ""
    first_line = True
    headers: list[Header] = []
    current: Header | None = None
    names = _NAME_CACHE
    spellings = _SPELLINGS
    spelled_names = _SPELLED_NAMES
    spelled_kinds = _SPELLED_KINDS
    #: the first broken header line: raised after the start line and the other headers are read, so a 400 can
    #: still be addressed by the Via (RFC 3261 8.2 / 16.3) instead of the request being dropped in silence
    bad_line: str | None = None
    index: list[Header | None] = [None] * _KIND_COUNT  # the first line of each KIND_* header
    repeated = 0  # a bit per kind seen on a second line
    while pos < end:
        nl = text.find("\n", pos)
        if nl < 0:
            stop = nxt = end
        else:
            stop = nl
            nxt = nl + 1
        if stop > pos and ord(text[stop - 1]) == 13:  # CR
            stop -= 1
        if stop == pos:
            body_at = nxt
            break
        line = text[pos:stop]
        pos = nxt
        if first_line:
            start = line
            first_line = False
            continue
        first = ord(line[0])  # compiled, read in place: no one-character string, no string compares
        if first == 32 or first == 9:  # SP, HTAB
            # RFC 3261 7.3.1 folding: a continuation line joins the previous value with one SP
            if current is None:
                bad_line = bad_line or "header section starts with a continuation line"
                continue
            stripped = line.strip(_WS)
            if stripped:
                current.value = f"{current.value} {stripped}" if current.value else stripped
            current.raw = f"{current.raw}\r\n{line}"
            continue
        colon = line.find(":")
        if colon <= 0:
            bad_line = bad_line or f"header line without a colon: {line[:40]!r}"
            current = None  # a continuation of a broken line belongs to nothing
            continue
        # The name as spelled before: the last two spellings seen with this first character and this colon
        # position ("Call-ID" and "Contact" share one), compared in place (no slice to make, hash and free, as a
        # dict lookup needs)
        slot = (first * _SPELL_COLONS + colon) * 2 if first < 128 and colon < _SPELL_COLONS else -1
        lname = None
        kind = -1
        if slot >= 0:
            spelled = spellings[slot]
            if spelled is not None and line.startswith(spelled):
                lname = spelled_names[slot]
                kind = spelled_kinds[slot]
            else:
                spelled = spellings[slot + 1]
                if spelled is not None and line.startswith(spelled):
                    lname = spelled_names[slot + 1]
                    kind = spelled_kinds[slot + 1]
        if lname is None:
            name = line[:colon]
            lname = names.get(name)
            if lname is None:
                try:
                    lname = _header_name(name)
                except SipParseError as exc:
                    bad_line = bad_line or exc.reason
                    current = None
                    continue
            kind = _KINDS.get(lname, -1)
            if slot >= 0:  # the newer spelling first, the one it displaces second
                spellings[slot + 1] = spellings[slot]
                spelled_names[slot + 1] = spelled_names[slot]
                spelled_kinds[slot + 1] = spelled_kinds[slot]
                spellings[slot] = name
                spelled_names[slot] = lname
                spelled_kinds[slot] = kind
        # "Name: value" in one slice; the general strip (an extra string) only for other spacing
        vstart = colon + 1
        vend = len(line)
        if vstart < vend and ord(line[vstart]) == 32:
            vstart += 1
        c = ord(line[vstart]) if vstart < vend else 32
        z = ord(line[vend - 1])
        if c != 32 and c != 9 and z != 32 and z != 9:
            value = line[vstart:]
        else:
            value = line[colon + 1 :].strip(_WS)
        current = Header(lname, value, line)
        headers.append(current)  # compiled, a direct PyList_Append; a bound `append` is a generic call
        if kind >= 0:
            if index[kind] is None:
                index[kind] = current
            else:
                repeated |= 1 << kind

    msg: Request | Response
    if start.startswith("SIP/"):
        msg = _parse_status_line(start, headers)
    else:
        msg = _parse_request_line(start, headers)
    if bad_line is not None:
        raise SipParseError(bad_line, message=msg if isinstance(msg, Request) else None)
    common: Message = msg  # compiled, attributes set through the union type would be looked up by name
    common._start = start
    common._index = index
    common._repeated = repeated
    common._index_len = len(headers)
    common.wire_len = len(data)
    common.body = _body(common, data[body_at:] if body_at < len(data) else b"", stream, index[KIND_CONTENT_LENGTH],
                        (repeated >> KIND_CONTENT_LENGTH) & 1 == 1)
    return msg


_NAME_CACHE: Final[dict[str, str]] = {}
#: header names as spelled on the wire, by first character and length (``first * _SPELL_COLONS + colon``): the
#: last two spellings seen in each slot and their canonical names. Peers spell the same few names the same way in
#: every message, so this nearly always holds the line's name; a miss (another spelling of that shape) takes the
#: dict and becomes the slot's first entry. Bounded: 128 x 32 x 2 entries, names of 32 characters or more are
#: not kept here.
_SPELL_COLONS: Final = 32
_SPELLINGS: Final[list[str | None]] = [None] * (128 * _SPELL_COLONS * 2)
_SPELLED_NAMES: Final[list[str]] = [""] * (128 * _SPELL_COLONS * 2)
_SPELLED_KINDS: Final[list[int]] = [-1] * (128 * _SPELL_COLONS * 2)


def _header_name(raw: str) -> str:
    """Canonical name of a header name as written (``MaX-fOrWaRdS `` -> ``max-forwards``, ``v`` -> ``via``),
    checked to be a token; remembered (bounded) because the same few spellings arrive in every message."""
    name = raw.rstrip(_WS)
    lname = name.lower()
    if len(lname) == 1:
        if lname not in TOKEN_CHARS:  # one-letter names are tokens too (RFC 3261 7.3.1)
            raise SipParseError(f"bad header name {name!r}")
        lname = COMPACT_FORMS.get(lname, lname)
    elif not is_token(name):
        raise SipParseError(f"bad header name {name[:40]!r}")
    # interned: the same object as the code's literals ("via", "call-id" ... are interned), so each of the many
    # name comparisons (validation, header lookups, make_response) is an identity hit, not a memcmp
    lname = sys.intern(lname)
    if len(_NAME_CACHE) < 4096 and len(raw) <= _NAME_KEY_MAX:
        _NAME_CACHE[raw] = lname
    return lname


#: the methods leansip knows, as its own (interned) strings: the request carries the constant, so every later
#: ``method == "INVITE"`` is an identity hit and the per-method counter finds its key's hash cached
_METHODS: Final[dict[str, str]] = {m: m for m in (
    "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER",
    "SUBSCRIBE", "NOTIFY", "PUBLISH")}


def _parse_request_line(start: str, headers: list[Header]) -> Request:
    # the usual line, "METHOD SP uri SP SIP/2.0" with a known method, cut by position; anything else is split
    sp = start.find(" ")
    if sp > 0 and start.endswith(" SIP/2.0"):
        end = len(start) - 8
        if start.find(" ", sp + 1) == end and ord(start[sp + 1]) != 60:  # a Request-URI in <> is refused below
            method = _METHODS.get(start[:sp])
            if method is not None:
                return Request(method, start[sp + 1:end], headers, b"", "SIP/2.0")
    parts = start.split(" ")
    if len(parts) != 3:
        partial = Request("UNKNOWN", "sip:invalid", headers)
        raise SipParseError("malformed request line", message=partial if len(parts) >= 2 else None)
    method, uri, version = parts
    msg = Request(method, uri, headers, b"", version)
    if not is_token(method):
        raise SipParseError(f"bad method {method[:20]!r}", message=None)
    if version != "SIP/2.0":
        if version.upper().startswith("SIP/") and version[4:5].isdigit():
            if version.upper() != "SIP/2.0":
                raise SipParseError(f"SIP version {version[:12]} not supported", status=505, message=msg)
        else:
            raise SipParseError(f"bad SIP version {version[:20]!r}", message=msg)
    if uri.startswith("<"):
        raise SipParseError("Request-URI must not be in <>", message=msg)
    return msg


def _parse_status_line(start: str, headers: list[Header]) -> Response:
    # "SIP/2.0 SP 3DIGIT [SP reason]" read by position (two partition() calls cost more than the rest)
    status = digits_value(start[8:11], 3)
    if start[:8] != "SIP/2.0 " or start[11:12] not in ("", " ") or status < 0:
        raise SipParseError(f"malformed status line {start[:40]!r}", status=0)
    if not 100 <= status <= 699:
        raise SipParseError(f"malformed status line {start[:40]!r}", status=0)
    return Response(status, start[12:], headers, b"", "SIP/2.0")


def _body(msg: Message, rest: bytes, stream: bool, first: Header | None, more: bool) -> bytes:
    """The body: ``rest`` cut at the Content-Length (``first``, the first such header; ``more`` if others follow)."""
    if first is None:
        return rest if not stream else b""
    if more:
        lengths = [h.value for h in msg.headers if h.name == "content-length"]
        if len({v.strip() for v in lengths}) > 1:
            raise SipParseError("conflicting Content-Length headers", message=msg)
    text = first.value.strip(_WS)
    length = digits_value(text, 9)
    if length < 0:
        raise SipParseError(f"bad Content-Length {text[:20]!r}", message=msg)
    if length > len(rest):
        raise SipParseError("Content-Length larger than the message", message=msg)
    return rest[:length]


# --------------------------------------------------------------------- validation


def _counts(req: Request) -> tuple[int, int, int, int, int, int]:
    """How many lines of Via, Call-ID, CSeq, From, To and Max-Forwards (two meaning "more than one")."""
    index = req._valid_index()
    if index is not None:
        rep = req._repeated
        return (_seen(index, rep, KIND_VIA), _seen(index, rep, KIND_CALL_ID), _seen(index, rep, KIND_CSEQ),
                _seen(index, rep, KIND_FROM), _seen(index, rep, KIND_TO), _seen(index, rep, KIND_MAX_FORWARDS))
    # one pass counts the headers that must appear once (compiled, it beats five list.count() calls)
    vias = call_ids = cseqs = froms = tos = max_forwards = 0
    for h in req.headers:
        name = h.name
        if name == "via":
            vias += 1
        elif name == "call-id":
            call_ids += 1
        elif name == "cseq":
            cseqs += 1
        elif name == "from":
            froms += 1
        elif name == "to":
            tos += 1
        elif name == "max-forwards":
            max_forwards += 1
    return vias, call_ids, cseqs, froms, tos, max_forwards


def _seen(index: list[Header | None], repeated: int, kind: int) -> int:
    """0, 1 or 2 (for "more than one") lines of a kind, from the parser's index."""
    if index[kind] is None:
        return 0
    return 2 if (repeated >> kind) & 1 else 1


def _exactly_once(name: str, count: int) -> None:
    if count == 0:
        raise SipParseError(f"missing {display_name(name)}")
    if count > 1:
        raise SipParseError(f"more than one {display_name(name)} header")


def validate_request(req: Request) -> None:
    """Check what RFC 3261 8.2 and 16.3 require before a request may be acted on.

    Mandatory headers present exactly once, CSeq well-formed with the request's method (RFC 4475
    mismatch01), a parsable top Via and Request-URI. Raises :class:`SipParseError` carrying the request, so
    the caller can answer 400 (or drop when no Via exists to answer to).
    """
    vias, call_ids, cseqs, froms, tos, max_forwards = _counts(req)
    try:
        if not vias:
            raise SipParseError("missing Via", status=0)
        req.top_via  # noqa: B018 - parses and caches; a broken Via means no reply can be routed
    except SipParseError as exc:
        exc.status = 0
        exc.message = None
        raise
    try:
        _exactly_once("call-id", call_ids)
        _exactly_once("cseq", cseqs)
        _exactly_once("from", froms)
        _exactly_once("to", tos)
        if max_forwards > 1:
            raise SipParseError("more than one Max-Forwards header")
        num, method = req.cseq
        if method != req.method:
            raise SipParseError("CSeq method does not match the request method")
        req.from_  # noqa: B018
        req.to  # noqa: B018
        req.max_forwards  # noqa: B018
        req.ruri  # noqa: B018
    except SipParseError as exc:
        exc.message = req
        raise


def validate_response(resp: Response) -> None:
    """A response needs a Via to be routed and a CSeq to be matched to its transaction; else drop it."""
    try:
        resp.top_via  # noqa: B018
        resp.cseq  # noqa: B018
        resp.call_id  # noqa: B018
    except SipParseError as exc:
        exc.status = 0
        raise


# --------------------------------------------------------------------- building


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


_RESPONSE_COPY: Final = ("via", "from", "call-id", "cseq")


def make_response(
    req: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``req`` after RFC 3261 8.2.6.2: Via (all, in order), From, To (with our tag
    added when the request had none and ``to_tag`` is given), Call-ID and CSeq copied, then extra headers and
    Content-Length. Copied headers keep their original lines."""
    out: list[Header] = []
    index = req._valid_index()
    if index is not None and not req._repeated & _COPIED_KINDS:
        # the parser's index: each copied header is on one line (Via, From, Call-ID, CSeq; To is read once
        # anyway), taken in the usual order without a pass over every line
        # (spelled out: compiled, a loop over a tuple of kinds boxes and unboxes each one, ~1 % of a REGISTER)
        _append_present(out, index[KIND_VIA])
        _append_present(out, index[KIND_FROM])
        to = index[KIND_TO]
        if to is not None:
            out.append(_response_to(req, to, status, to_tag))
        _append_present(out, index[KIND_CALL_ID])
        _append_present(out, index[KIND_CSEQ])
    else:
        to_done = False
        for h in req.headers:
            name = h.name
            if name in _RESPONSE_COPY:
                out.append(h)
            elif name == "to" and not to_done:
                to_done = True
                out.append(_response_to(req, h, status, to_tag))
    for name, value in headers:
        out.append(Header(_header_key(name), value))  # the few names leansip writes: memoized
    if content_type is not None:
        out.append(Header("content-type", content_type))
    out.append(Header("content-length", str(len(body))) if body else _NO_BODY_LENGTH)
    return Response(status, reason, out, body)


#: ``Content-Length: 0`` of every response without a body: one shared line (headers are never edited in place,
#: an edit replaces the Header), written as it is, without a name lookup and a format per response
_NO_BODY_LENGTH: Final = Header("content-length", "0", "Content-Length: 0")


#: the kinds make_response copies every line of: on one line each, the index gives them
_COPIED_KINDS: Final = (1 << KIND_VIA) | (1 << KIND_FROM) | (1 << KIND_CALL_ID) | (1 << KIND_CSEQ)


def _append_present(out: list[Header], header: Header | None) -> None:
    if header is not None:
        out.append(header)


def _response_to(req: Request, to: Header, status: int, to_tag: str | None) -> Header:
    """The response's To: the request's line, with ``to_tag`` added when it has no tag (not on 100)."""
    if not to_tag or status <= 100:
        return to
    view = req._to
    if view is not None and req._first(KIND_TO) is to:
        tagged = "tag" in view.params  # validation parsed this very line: no second parse
    else:
        tagged = _has_tag(to.value)
    if tagged:
        return to
    value = f"{to.value};tag={to_tag}"
    raw = to.raw
    # the received line with the tag after it, when the line ends with the value (one line, no trailing space):
    # written as it is, where a rebuilt line costs a name lookup and a second format at output
    if raw is not None and raw.endswith(to.value):
        return Header("to", value, f"{raw};tag={to_tag}")
    return Header("to", value)


def _has_tag(value: str) -> bool:
    """Does this To value already carry a tag parameter? Parsed, so that ``;mytag=1`` or a display name
    holding ``;tag=`` is not mistaken for one. An unparsable To (we may be answering 400 because of it)
    counts as untagged."""
    try:
        return "tag" in parse_name_addr(value).params
    except SipParseError:
        return False


def build_request(
    method: str,
    uri: str,
    headers: Iterable[tuple[str, str]],
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """A new request from ``(name, value)`` pairs; Content-Length is added."""
    out = [Header(canonical_name(n), v) for n, v in headers]
    if content_type is not None:
        out.append(Header("content-type", content_type))
    out.append(Header("content-length", str(len(body))))
    return Request(method, uri, out, body)


def is_sip_uri(uri: URI) -> bool:
    return isinstance(uri, SipURI)
