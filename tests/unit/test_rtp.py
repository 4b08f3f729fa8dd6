"""RTP packet parse/serialize table, invalid packets with exact errors, sender state."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leansip.media.rtp import (
    RtpPacket,
    RtpParseError,
    RtpSender,
    is_rtcp,
    uint16_add,
    uint16_diff,
    uint16_gt,
    uint16_gte,
    uint32_add,
    uint32_diff,
    uint32_gt,
)

# (wire bytes, expected packet): one table checks the parser and the serializer.
CASES = [
    (
        bytes.fromhex("80 00 1234 00000a00 deadbeef") + b"\xff" * 4,
        RtpPacket(payload_type=0, sequence_number=0x1234, timestamp=0xA00, ssrc=0xDEADBEEF, payload=b"\xff" * 4),
    ),
    (  # marker, PT 8, two CSRCs
        bytes.fromhex("82 88 ffff ffffffff 00000001 00000002 00000003") + b"ab",
        RtpPacket(payload_type=8, marker=True, sequence_number=0xFFFF, timestamp=0xFFFFFFFF, ssrc=1,
                  csrc=[2, 3], payload=b"ab"),
    ),
    (  # header extension (profile 0xBEDE, one word) and 3 octets of padding
        bytes.fromhex("b0 65 0001 00000002 00000003 bede 0001 10ff0000") + b"xyz" + b"\x00\x00\x03",
        RtpPacket(payload_type=101, sequence_number=1, timestamp=2, ssrc=3, extension_profile=0xBEDE,
                  extension=bytes.fromhex("10ff0000"), padding=3, payload=b"xyz"),
    ),
    (  # empty payload is legal (e.g. keep-alive)
        bytes.fromhex("80 0d 0000 00000000 00000000"),
        RtpPacket(payload_type=13),
    ),
]


@pytest.mark.parametrize(("wire", "packet"), CASES)
def test_parse_and_serialize(wire: bytes, packet: RtpPacket) -> None:
    assert RtpPacket.parse(wire) == packet
    assert packet.serialize() == wire


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x80\x00\x00", "RTP packet length is less than 12 bytes"),
        (bytes.fromhex("40 00 0000 00000000 00000000"), "RTP packet has invalid version 1"),
        (bytes.fromhex("81 00 0000 00000000 00000000"), "RTP packet truncated in CSRC list"),
        (bytes.fromhex("90 00 0000 00000000 00000000 bede"), "RTP packet truncated in extension header"),
        (bytes.fromhex("90 00 0000 00000000 00000000 bede 0002 00000000"), "RTP packet truncated in extension data"),
        (bytes.fromhex("a0 00 0000 00000000 00000000 0000"), "RTP packet padding length is invalid"),
        (bytes.fromhex("a0 00 0000 00000000 00000000 05"), "RTP packet padding length is invalid"),
    ],
)
def test_invalid_packets(wire: bytes, message: str) -> None:
    with pytest.raises(RtpParseError) as info:
        RtpPacket.parse(wire)
    assert str(info.value) == message


@given(st.binary(max_size=80))
def test_parse_only_raises_our_error(data: bytes) -> None:
    try:
        pkt = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert RtpPacket.parse(pkt.serialize()) == pkt


@given(
    pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 0xFFFFFFFF),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15), marker=st.booleans(),
    padding=st.integers(0, 255), payload=st.binary(max_size=200),
)
def test_round_trip(pt: int, seq: int, ts: int, csrc: list[int], marker: bool, padding: int,
                    payload: bytes) -> None:
    pkt = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=ts, ssrc=7, csrc=csrc,
                    marker=marker, padding=padding, payload=payload)
    assert RtpPacket.parse(pkt.serialize()) == pkt


def test_invalid_fields_rejected() -> None:
    with pytest.raises(ValueError):
        RtpPacket(payload_type=128)
    with pytest.raises(ValueError):
        RtpPacket(extension_profile=1, extension=b"abc")
    with pytest.raises(ValueError):
        RtpPacket(csrc=list(range(16)))


def test_wrap_helpers() -> None:
    assert uint16_gt(1, 0xFFFF) and not uint16_gt(0xFFFF, 1)
    assert uint16_gt(0x8000 - 1, 0) and not uint16_gt(0x8000, 0)
    assert uint16_gte(5, 5) and not uint16_gt(5, 5)
    assert uint16_add(0xFFFF, 2) == 1
    assert uint16_diff(1, 0xFFFF) == 2 and uint16_diff(0xFFFF, 1) == -2
    assert uint32_add(0xFFFFFFFF, 160) == 159
    assert uint32_diff(159, 0xFFFFFFFF) == 160
    assert uint32_gt(10, 0xFFFFFF00) and not uint32_gt(0xFFFFFF00, 10)


def test_rtcp_demux() -> None:
    assert is_rtcp(bytes.fromhex("80c8")) and is_rtcp(bytes.fromhex("80c9"))
    assert not is_rtcp(bytes.fromhex("8000")) and not is_rtcp(bytes.fromhex("8088"))


def test_sender_sequence_timestamp_marker_and_wrap() -> None:
    s = RtpSender(0, ssrc=42, sequence_number=0xFFFE, timestamp=0xFFFFFFFF - 159)
    p1, p2, p3 = (s.packet(b"\xff" * 160) for _ in range(3))
    assert [p.sequence_number for p in (p1, p2, p3)] == [0xFFFE, 0xFFFF, 0]
    assert [p.timestamp for p in (p1, p2, p3)] == [0xFFFFFFFF - 159, 0, 160]
    assert [p.marker for p in (p1, p2, p3)] == [True, False, False]
    assert {p.ssrc for p in (p1, p2, p3)} == {42}
    assert s.packet_count == 3 and s.octet_count == 480
    s.skip(2)  # two silent frames: timestamp jumps, seq does not, marker on resume
    p4 = s.packet(b"\xff" * 160)
    assert p4.sequence_number == 1 and p4.timestamp == 160 * 4 and p4.marker


def test_sender_random_initial_state_and_dtmf_timestamp() -> None:
    a = RtpSender(8, rng=random.Random(1))
    b = RtpSender(8, rng=random.Random(2))
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)
    ts = a.timestamp
    e1 = a.packet(b"\x01\x0a\x00\xa0", payload_type=101, advance=False)
    e2 = a.packet(b"\x01\x0a\x01\x40", payload_type=101, advance=False, marker=False)
    assert e1.timestamp == e2.timestamp == ts and e1.payload_type == 101 and e1.marker and not e2.marker
