"""The SIP message model: requests and responses read lazily, edited, re-emitted by splicing (RFC 3261 7, 20).

Theory of operation
-------------------
A message is its header lines (:class:`~leansip.sip.message_headers.Header`: canonical name, unfolded value,
the original line) and its body. Nothing is parsed until somebody asks: ``msg.top_via``, ``msg.cseq``,
``msg.from_tag`` ... parse the one value they need and cache it in a slot. While the parser's index (the first
line of each ``KIND_*`` header, and which come twice) still describes the lines, reading one of those headers
is a list read, not a scan.

When a header is changed through the editing methods its original line is dropped and the header is rebuilt
from ``name: value`` on output; headers nobody touched are written back byte for byte (the "lump" idea of
Kamailio's forwarding). A proxy therefore pays only for the headers it edits: the Via it adds, Max-Forwards,
Route and Record-Route.

Header text is decoded as latin-1 so that every byte maps to one character and back, losslessly, whatever
charset the peer used; structure in SIP is all ASCII.

Why a module of its own: the model is what every part of the core holds and reads; how a message is made
from bytes (:mod:`leansip.sip.message_parse`) and what is checked and answered (:mod:`leansip.sip.message`)
are apart from it. Users import these names from :mod:`leansip.sip.message`, their public home.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from leansip.sip.errors import SipParseError
from leansip.sip.message_headers import (
    _KINDS,
    _WS,
    KIND_CALL_ID,
    KIND_CONTACT,
    KIND_CSEQ,
    KIND_EXPIRES,
    KIND_FROM,
    KIND_MAX_FORWARDS,
    KIND_NAMES,
    KIND_TO,
    KIND_VIA,
    Header,
    _header_key,
    canonical_name,
    display_name,
)
from leansip.sip.uri import (
    URI,
    NameAddr,
    Via,
    digits_value,
    is_digits,
    is_token,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_comma,
)

__all__ = ["REASONS", "Message", "Request", "Response", "footprint"]

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

_MAX_CSEQ: Final = 2**31 - 1  # RFC 3261 8.1.1.5: the sequence number MUST be less than 2**31

#: the methods leansip knows, as its own (interned) strings: the request carries the constant, so every later
#: ``method == "INVITE"`` is an identity hit and the per-method counter finds its key's hash cached
_METHODS: Final[dict[str, str]] = {m: m for m in (
    "REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER",
    "SUBSCRIBE", "NOTIFY", "PUBLISH")}


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
