"""StreamFramer: every split point, several messages per read, keep-alives, broken lengths."""

from __future__ import annotations

import pytest

from leansip.sip.errors import SipParseError
from leansip.sip.framing import FramingError, StreamFramer
from leansip.sip.message import parse_message

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK74bf9\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=9fxced76sl\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: 3848276298220188511@example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 25\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1 IN IP4 x\r\n\r\n"
)
assert len(INVITE.split(b"\r\n\r\n", 1)[1]) == 25  # the body itself contains a double CRLF

REGISTER_NO_CL = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP c.example.com;branch=z9hG4bKr1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
    b"Call-ID: r1\r\nCSeq: 1 REGISTER\r\n\r\n"
)

RESPONSE_COMPACT = (
    b"SIP/2.0 200 OK\r\nv: SIP/2.0/TCP c.example.com;branch=z9hG4bKr1\r\n"
    b"f: <sip:a@example.com>;tag=1\r\nt: <sip:a@example.com>;tag=2\r\ni: r1\r\n"
    b"CSeq: 1 REGISTER\r\nl:  4\r\n\r\nabcd"
)


def feed_all(framer: StreamFramer, *chunks: bytes) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


@pytest.mark.parametrize("message", [INVITE, REGISTER_NO_CL, RESPONSE_COMPACT], ids=["invite", "no-cl", "compact"])
def test_every_split_point_across_two_reads(message: bytes) -> None:
    for cut in range(len(message) + 1):
        framer = StreamFramer()
        first = framer.feed(message[:cut])
        assert first == ([message] if cut == len(message) else []), cut
        second = framer.feed(message[cut:])
        assert first + second == [message], cut
        assert framer.buffered == 0


def test_every_split_point_of_two_messages_with_a_ping_between() -> None:
    stream = INVITE + b"\r\n\r\n" + REGISTER_NO_CL
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        assert feed_all(framer, stream[:cut], stream[cut:]) == [INVITE, REGISTER_NO_CL], cut
        assert framer.take_pings() == 1, cut


def test_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    stream = INVITE + RESPONSE_COMPACT + REGISTER_NO_CL
    out = feed_all(framer, *(stream[i : i + 1] for i in range(len(stream))))
    assert out == [INVITE, RESPONSE_COMPACT, REGISTER_NO_CL]


def test_several_messages_in_one_read_parse() -> None:
    framer = StreamFramer()
    out = framer.feed(INVITE + REGISTER_NO_CL + RESPONSE_COMPACT + INVITE[:10])
    assert out == [INVITE, REGISTER_NO_CL, RESPONSE_COMPACT]
    assert framer.buffered == 10
    invite = parse_message(out[0], stream=True)
    assert invite.body == b"v=0\r\no=- 1 1 IN IP4 x\r\n\r\n"
    assert parse_message(out[1], stream=True).body == b""  # RFC 3261 18.3: missing on a stream = empty
    assert parse_message(out[2], stream=True).body == b"abcd"


def test_keepalives_ping_and_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.take_pings() == 1
    assert framer.take_pings() == 0
    # a single CRLF is a pong (or a lone keep-alive): skipped, not answered, not an incomplete message
    assert framer.feed(b"\r\n") == []
    assert framer.buffered == 0
    assert framer.feed(REGISTER_NO_CL) == [REGISTER_NO_CL]
    assert framer.take_pings() == 0
    assert framer.pongs == 1
    # three pings in one read, split oddly
    assert feed_all(framer, b"\r\n\r", b"\n\r\n\r\n\r\n", b"\r\n") == []
    assert framer.take_pings() == 3


def test_ping_split_across_reads_is_not_a_message() -> None:
    framer = StreamFramer()
    for part in (b"\r", b"\n", b"\r", b"\n"):
        assert framer.feed(part) == []
    assert framer.take_pings() == 1
    assert framer.buffered == 0


def test_lying_content_length_swallows_the_next_message_bytes() -> None:
    # A Content-Length larger than the body makes the framer take the following bytes as body: that is what
    # the peer said, and the next message is then cut wrong (that peer's problem, RFC 3261 18.3).
    lying = INVITE.replace(b"Content-Length: 25", b"Content-Length: 35")
    framer = StreamFramer()
    out = framer.feed(lying + REGISTER_NO_CL)
    assert out == [lying + REGISTER_NO_CL[:10], REGISTER_NO_CL[10:]]
    assert framer.buffered == 0
    with pytest.raises(SipParseError):  # the remainder is garbage, which the core drops
        parse_message(out[1], stream=True)
    # too short: the rest of the body is cut as a next "message" (its leading CRLF skipped as a keep-alive)
    short = INVITE.replace(b"Content-Length: 25", b"Content-Length: 3")
    framer = StreamFramer()
    out = framer.feed(short)
    assert out == [short[: short.index(b"\r\n\r\n") + 4 + 3], b"o=- 1 1 IN IP4 x\r\n\r\n"]
    with pytest.raises(SipParseError):
        parse_message(out[1], stream=True)


@pytest.mark.parametrize("value", [b"-1", b"abc", b"1e3", b"12345678901", b"0x10", b""])
def test_invalid_content_length_is_a_framing_error(value: bytes) -> None:
    msg = REGISTER_NO_CL.replace(b"\r\n\r\n", b"\r\nContent-Length: " + value + b"\r\n\r\n")
    with pytest.raises(FramingError):
        StreamFramer().feed(msg)


def test_conflicting_content_lengths() -> None:
    msg = REGISTER_NO_CL.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\nl: 4\r\n\r\nabcd")
    with pytest.raises(FramingError, match="conflicting"):
        StreamFramer().feed(msg)
    same = REGISTER_NO_CL.replace(b"\r\n\r\n", b"\r\nContent-Length: 4\r\nl: 4\r\n\r\nabcd")
    assert StreamFramer().feed(same) == [same]


def test_header_limit_without_end() -> None:
    framer = StreamFramer(max_header=1000)
    framer.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    with pytest.raises(FramingError, match="header section"):
        for _ in range(100):
            framer.feed(b"X-Pad: " + b"a" * 20 + b"\r\n")


def test_header_limit_with_end_in_one_read() -> None:
    big = b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"a" * 2000 + b"\r\n\r\n"
    with pytest.raises(FramingError):
        StreamFramer(max_header=1000).feed(big)
    assert StreamFramer(max_header=4000).feed(big) == [big]


def test_body_limit() -> None:
    msg = REGISTER_NO_CL.replace(b"\r\n\r\n", b"\r\nContent-Length: 5000\r\n\r\n")
    with pytest.raises(FramingError, match="body"):
        StreamFramer(max_body=4096).feed(msg)


def test_bare_lf_messages() -> None:
    msg = REGISTER_NO_CL.replace(b"\r\n", b"\n").replace(b"\n\n", b"\nContent-Length: 2\n\nhi")
    framer = StreamFramer()
    assert feed_all(framer, msg[:40], msg[40:] + msg) == [msg, msg]
