"""SIP messages: the public home of the message names, and what is checked and answered (RFC 3261 8.2, 16.3).

Layout: the work is done in three modules, each with one responsibility, and every name is imported from here
(``from leansip.sip.message import Request, parse_message``):

* :mod:`leansip.sip.message_headers` -- header names (compact forms, spelling, list and single headers), the
  ``KIND_*`` numbering of the headers the straight path reads, and :class:`Header`, one line;
* :mod:`leansip.sip.message_model` -- :class:`Message`, :class:`Request`, :class:`Response`: lazy views,
  editing, splice-on-forward serialization, :func:`footprint`;
* :mod:`leansip.sip.message_parse` -- :func:`parse_message`, one pass over the bytes.

This module holds what comes after parsing: :func:`validate_request` (or :func:`validate_response`) before
acting on a message, both raising :class:`SipParseError` with the status to answer; :func:`make_response`
(RFC 3261 8.2.6.2, copied lines kept as received) and :func:`build_request`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from leansip.sip.errors import SipParseError
from leansip.sip.message_headers import (
    COMPACT_FORMS,
    KIND_CALL_ID,
    KIND_CONTACT,
    KIND_CONTENT_LENGTH,
    KIND_CSEQ,
    KIND_EXPIRES,
    KIND_FROM,
    KIND_MAX_FORWARDS,
    KIND_NAMES,
    KIND_PATH,
    KIND_PROXY_REQUIRE,
    KIND_RECORD_ROUTE,
    KIND_REQUIRE,
    KIND_ROUTE,
    KIND_TO,
    KIND_USER_AGENT,
    KIND_VIA,
    LIST_HEADERS,
    SINGLE_HEADERS,
    Header,
    _header_key,
    canonical_name,
    display_name,
)
from leansip.sip.message_model import REASONS, Message, Request, Response, footprint
from leansip.sip.message_parse import parse_message
from leansip.sip.uri import URI, SipURI, parse_name_addr

__all__ = [
    "COMPACT_FORMS",
    "KIND_CALL_ID",
    "KIND_CONTACT",
    "KIND_CONTENT_LENGTH",
    "KIND_CSEQ",
    "KIND_EXPIRES",
    "KIND_FROM",
    "KIND_MAX_FORWARDS",
    "KIND_NAMES",
    "KIND_PATH",
    "KIND_PROXY_REQUIRE",
    "KIND_RECORD_ROUTE",
    "KIND_REQUIRE",
    "KIND_ROUTE",
    "KIND_TO",
    "KIND_USER_AGENT",
    "KIND_VIA",
    "LIST_HEADERS",
    "REASONS",
    "SINGLE_HEADERS",
    "Header",
    "Message",
    "Request",
    "Response",
    "SipParseError",
    "build_request",
    "canonical_name",
    "display_name",
    "footprint",
    "is_sip_uri",
    "make_response",
    "parse_message",
    "reason_phrase",
    "validate_request",
    "validate_response",
]


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
