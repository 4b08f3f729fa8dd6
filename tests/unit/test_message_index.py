"""The parser's header index (``Message._index``): what it answers must be what a scan of the lines answers,
before and after every kind of edit, and validation must reject the same messages with the same reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    KIND_CALL_ID,
    KIND_CONTACT,
    KIND_CSEQ,
    KIND_EXPIRES,
    KIND_FROM,
    KIND_NAMES,
    KIND_PROXY_REQUIRE,
    KIND_ROUTE,
    KIND_TO,
    KIND_VIA,
    Header,
    Request,
    make_response,
    parse_message,
    validate_request,
)

BASE = [
    "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1",
    "Max-Forwards: 70",
    "From: <sip:a@example.com>;tag=1",
    "To: <sip:b@example.com>",
    "Call-ID: abc@10.0.0.1",
    "CSeq: 1 REGISTER",
    "Contact: <sip:a@10.0.0.1:5060>",
    "Expires: 60",
    "Content-Length: 0",
]


def _parse(lines: list[str]) -> Request:
    msg = parse_message(("REGISTER sip:example.com SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def _scanned(msg: Request) -> Request:
    """The same message without the index: every read scans."""
    copy = msg.copy()
    assert copy._index is None
    return copy


def _reads(msg: Request) -> list[object]:
    return [(msg.first_value(kind), msg.values_of(kind), msg.repeated(kind)) for kind in range(len(KIND_NAMES))]


def test_index_answers_as_a_scan_does() -> None:
    msg = _parse([*BASE, "Route: <sip:p1;lr>, <sip:p2;lr>", "Route: <sip:p3;lr>", "Via: SIP/2.0/UDP 10.0.0.2"])
    assert msg._index is not None
    assert _reads(msg) == _reads(_scanned(msg))
    assert msg.first_value(KIND_ROUTE) == "<sip:p1;lr>, <sip:p2;lr>"
    assert msg.values_of(KIND_ROUTE) == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    assert msg.repeated(KIND_VIA) and not msg.repeated(KIND_FROM)
    assert msg.first_value(KIND_PROXY_REQUIRE) is None


def test_compact_and_odd_spellings_are_indexed() -> None:
    msg = _parse(["v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2", "f: <sip:a@x>;tag=9", "t: <sip:b@x>", "i: cid",
                  "CSEQ: 4 REGISTER", "m: <sip:a@10.0.0.1>", "l: 0"])
    assert (msg.first_value(KIND_CALL_ID), msg.first_value(KIND_CSEQ), msg.values_of(KIND_CONTACT)) == (
        "cid", "4 REGISTER", ["<sip:a@10.0.0.1>"])
    assert _reads(msg) == _reads(_scanned(msg))
    validate_request(msg)


def test_folded_value_is_read_unfolded() -> None:
    msg = _parse([*BASE[:-1], "Route: <sip:p1;lr>,", "  <sip:p2;lr>", "Content-Length: 0"])
    assert msg.values_of(KIND_ROUTE) == ["<sip:p1;lr>", "<sip:p2;lr>"]


def test_every_edit_is_seen() -> None:
    msg = _parse(BASE)
    msg.add_header("Expires", "30", first=True)
    assert msg.first_value(KIND_EXPIRES) == "30" and msg.repeated(KIND_EXPIRES)
    msg = _parse(BASE)
    msg.set_header("To", "<sip:c@example.com>")
    assert msg.first_value(KIND_TO) == "<sip:c@example.com>" and msg.to.uri_text == "sip:c@example.com"
    msg = _parse(BASE)
    msg.remove_header("contact")
    assert msg.values_of(KIND_CONTACT) == [] and msg.contacts == []
    msg = _parse([*BASE, "Route: <sip:p1;lr>, <sip:p2;lr>"])
    assert msg.pop_first_value("route") == "<sip:p1;lr>"
    assert msg.first_value(KIND_ROUTE) == "<sip:p2;lr>"
    msg = _parse(BASE)
    msg.set_body(b"x", "text/plain")
    assert msg.header("content-length") == "1"


def test_replace_header_keeps_the_index_true() -> None:
    msg = _parse(BASE)
    msg.replace_header(0, Header("via", "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-3"))
    assert msg._index is not None  # kept: the same name in the same place
    assert msg.first_value(KIND_VIA) == "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-3"
    assert msg.top_via.host == "10.0.0.9"
    msg.replace_header(1, Header("x-other", "1"))  # another name: the index cannot follow, reads scan
    assert msg._index is None and msg.header("max-forwards") is None and msg.max_forwards is None


def test_a_direct_edit_of_another_length_is_not_trusted() -> None:
    msg = _parse(BASE)
    msg.headers.insert(0, Header("call-id", "other"))
    assert msg.first_value(KIND_CALL_ID) == "other" and msg.repeated(KIND_CALL_ID)
    with pytest.raises(SipParseError, match="more than one Call-ID"):
        validate_request(msg)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([line for line in BASE if not line.startswith("Call-ID")], "missing Call-ID"),
        ([*BASE, "i: again"], "more than one Call-ID"),
        ([*BASE, "From: <sip:x@y>;tag=2"], "more than one From"),
        ([*BASE, "t: <sip:x@y>"], "more than one To"),
        ([*BASE, "CSeq: 2 REGISTER"], "more than one CSeq"),
        ([*BASE, "Max-Forwards: 9"], "more than one Max-Forwards"),
    ],
)
def test_validation_reasons_are_the_scans(lines: list[str], reason: str) -> None:
    with pytest.raises(SipParseError, match=reason):
        validate_request(_parse(lines))
    with pytest.raises(SipParseError, match=reason):
        validate_request(_scanned(_parse(lines)))


def test_response_copies_through_the_index_as_through_the_lines() -> None:
    req = _parse(BASE)
    validate_request(req)
    fast = make_response(req, 200, to_tag="t1")
    slow = make_response(_scanned(req), 200, to_tag="t1")
    assert sorted(fast.to_bytes().split(b"\r\n")) == sorted(slow.to_bytes().split(b"\r\n"))
    assert fast.to.tag == "t1"
    tagged = _parse([*BASE[:3], "To: <sip:b@example.com>;tag=old", *BASE[4:]])
    validate_request(tagged)
    assert make_response(tagged, 200, to_tag="t1").to.tag == "old"
    two_vias = _parse([*BASE, "Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-0"])
    assert [v.host for v in make_response(two_vias, 200, to_tag="t").vias] == ["10.0.0.1", "10.0.0.2"]


_NAMES = st.sampled_from(["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Max-Forwards", "Contact",
                          "m", "Expires", "Route", "Record-Route", "Require", "Proxy-Require", "Path",
                          "User-Agent", "Subject", "X-Other", "content-length"])
_VALUES = st.sampled_from(["SIP/2.0/UDP h;branch=z9hG4bK-x", "<sip:a@h>;tag=1", "1 REGISTER", "70", "a, b",
                           "<sip:p;lr>", "0", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=14))
def test_any_header_list_reads_alike_indexed_or_scanned(pairs: list[tuple[str, str]]) -> None:
    try:
        msg = _parse([f"{name}: {value}" for name, value in pairs])
    except SipParseError:
        return  # a conflicting Content-Length, say: not what this test is about
    assert _reads(msg) == _reads(_scanned(msg))
    outcomes = []
    for candidate in (msg, _scanned(msg)):
        try:
            validate_request(candidate)
            outcomes.append("ok")
        except SipParseError as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1]
