"""The SIP message parser: a datagram or framed message in, a Request or Response out (RFC 3261 7, 18.3).

Theory of operation
-------------------
:func:`parse_message` does one pass over the header section: it splits lines, unfolds continuation lines,
maps compact header names (``v``, ``i``, ``m`` ...) to their long form and stores every header as a
:class:`~leansip.sip.message_headers.Header` holding the canonical lower-case name, the unfolded value text
and the *original line*. On the way it notes the first line of each header the server's straight path reads
(``KIND_*``) and which come twice, so reading one of those is a list read, not a scan of the lines. Nothing
else is parsed here: the model parses a value when it is asked for.

Header names as spelled on the wire are remembered (bounded: the spelling slots are a fixed table, the name
cache 4,096 entries), because peers spell the same few names the same way in every message.

Why a module of its own: the parser is the one place that turns a peer's bytes into a message, and the
hottest loop of the core; the model it fills is :mod:`leansip.sip.message_model`. Users import
:func:`parse_message` from :mod:`leansip.sip.message`, its public home.
"""

from __future__ import annotations

import sys
from typing import Final

from leansip.sip.errors import SipParseError
from leansip.sip.message_headers import (
    _KIND_COUNT,
    _KINDS,
    _NAME_KEY_MAX,
    _WS,
    COMPACT_FORMS,
    KIND_CONTENT_LENGTH,
    Header,
)
from leansip.sip.message_model import _METHODS, Message, Request, Response
from leansip.sip.uri import TOKEN_CHARS, digits_value, is_token

__all__ = ["parse_message"]


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
