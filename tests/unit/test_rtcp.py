"""RTCP packets (RFC 3550 6.4-6.6) and receiver statistics (A.1, A.3, A.8)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leansip.media.rtcp import (
    ReceiverStats,
    ReportBlock,
    RtcpBye,
    RtcpParseError,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    RtcpUnknown,
    SdesChunk,
    ntp_middle32,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)

BLOCK = ReportBlock(ssrc=0x11223344, fraction_lost=25, packets_lost=-2, highest_sequence=0x1000A,
                    jitter=80, lsr=0xAABBCCDD, dlsr=0x8000)
BLOCK_WIRE = bytes.fromhex("11223344 19 fffffe 0001000a 00000050 aabbccdd 00008000")

CASES = [
    (
        [RtcpSenderReport(ssrc=1, ntp_timestamp=0x0102030405060708, rtp_timestamp=160, packet_count=3,
                          octet_count=480, reports=(BLOCK,))],
        bytes.fromhex("81c8000c 00000001 0102030405060708 000000a0 00000003 000001e0") + BLOCK_WIRE,
    ),
    (
        [RtcpReceiverReport(ssrc=2)],
        bytes.fromhex("80c90001 00000002"),
    ),
    (  # SDES CNAME "ab": 4 ssrc + 1 type + 1 len + 2 + 1 null = 9, padded to 12
        [RtcpSdes(chunks=(SdesChunk(ssrc=5, items=((1, b"ab"),)),))],
        bytes.fromhex("81ca0003 00000005 01026162 00000000"),
    ),
    (
        [RtcpBye(sources=(5,), reason="bye")],
        bytes.fromhex("81cb0002 00000005 03627965"),
    ),
    (  # an APP packet we do not interpret survives as RtcpUnknown
        [RtcpUnknown(packet_type=204, count=1, body=bytes.fromhex("00000005 6e616d65"))],
        bytes.fromhex("81cc0002 00000005 6e616d65"),
    ),
]


@pytest.mark.parametrize(("packets", "wire"), CASES)
def test_serialize_and_parse(packets: list, wire: bytes) -> None:
    assert serialize_compound(packets) == wire
    assert parse_compound(wire) == packets


def test_compound_sr_sdes_bye() -> None:
    pkts = [
        RtcpSenderReport(ssrc=9, ntp_timestamp=ntp_timestamp(1700000000.25), rtp_timestamp=1, packet_count=2,
                         octet_count=3),
        RtcpSdes(chunks=(SdesChunk(ssrc=9, items=((1, b"alice@example.com"), (6, b"leansip"))),)),
        RtcpBye(sources=(9,)),
    ]
    out = parse_compound(serialize_compound(pkts))
    assert out == pkts
    assert out[1].chunks[0].cname == "alice@example.com"


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x80\xc9", "RTCP packet length is less than 4 bytes"),
        (bytes.fromhex("40c90001 00000002"), "RTCP packet has invalid version 1"),
        (bytes.fromhex("80c90002 00000002"), "RTCP packet length exceeds datagram"),
        (bytes.fromhex("81c90001 00000002"), "RTCP report blocks exceed packet length"),
        (bytes.fromhex("80c80001 00000002"), "RTCP SR truncated"),
        (bytes.fromhex("a0c90001 00000002 80c90001 00000002"), "RTCP padding on a packet that is not the last"),
        (bytes.fromhex("a0c90001 00000009"), "RTCP padding length is invalid"),
        (bytes.fromhex("81ca0002 00000005 01056162"), "RTCP SDES item truncated"),
        (bytes.fromhex("81ca0002 00000005 01026162"), "RTCP SDES item list not terminated"),
        (bytes.fromhex("82cb0001 00000005"), "RTCP BYE truncated"),
        (bytes.fromhex("80c90001 00000002 80"), "RTCP packet header truncated"),
    ],
)
def test_invalid(wire: bytes, message: str) -> None:
    with pytest.raises(RtcpParseError) as info:
        parse_compound(wire)
    assert str(info.value) == message


def test_padded_last_packet() -> None:
    wire = bytes.fromhex("a0c90002 00000002 00000004")
    assert parse_compound(wire) == [RtcpReceiverReport(ssrc=2)]


@given(st.binary(max_size=120))
def test_fuzz_only_our_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtcpParseError:
        pass


def test_ntp() -> None:
    assert ntp_timestamp(0.5) == (2208988800 << 32) | 0x80000000
    assert ntp_middle32(0x0102030405060708) == 0x03040506


def _feed(stats: ReceiverStats, seqs: list[int], start: float = 100.0) -> list[bool]:
    return [stats.update(s, (s * 160) & 0xFFFFFFFF, start + i * 0.02) for i, s in enumerate(seqs)]


def test_probation_then_loss_counts() -> None:
    st_ = ReceiverStats(ssrc=7)
    ok = _feed(st_, [1, 2, 3, 4, 6, 7, 8, 9, 10, 11])
    assert ok == [False] + [True] * 9  # first packet is probation
    block = st_.report_block(now=101.0)
    # base_seq = 2 (validated on the second packet); expected 2..11 = 10, received 9
    assert block.packets_lost == 1
    assert block.fraction_lost == (1 << 8) // 10
    assert block.highest_sequence == 11
    # next interval without loss: fraction 0, cumulative stays
    _feed(st_, [12, 13], start=101.0)
    block2 = st_.report_block(now=102.0)
    assert block2.fraction_lost == 0 and block2.packets_lost == 1


def test_sequence_wrap_extends_highest_seq() -> None:
    st_ = ReceiverStats(ssrc=7)
    _feed(st_, [65533, 65534, 65535, 0, 1])
    b = st_.report_block(now=200.0)
    assert b.highest_sequence == (1 << 16) + 1
    assert b.packets_lost == 0


def test_duplicates_give_negative_loss_and_big_jump_needs_confirmation() -> None:
    st_ = ReceiverStats(ssrc=7)
    _feed(st_, [10, 11, 12, 12])
    assert st_.cumulative_lost == -1
    assert st_.update(30000, 0, 300.0) is False  # a jump: not accepted yet
    assert st_.update(30001, 160, 300.02) is True  # confirmed: sequence re-synchronised
    assert st_.report_block(300.1).highest_sequence == 30001


def test_jitter_follows_a8() -> None:
    st_ = ReceiverStats(ssrc=7, clock_rate=8000)
    # timestamps advance 160 per packet; arrivals alternate 20 ms +/- 5 ms (40 ts units)
    arrivals = [0.0, 0.020, 0.045, 0.055, 0.085]
    expected = 0.0
    prev_transit = None
    for i, t in enumerate(arrivals):
        st_.update(100 + i, i * 160, t)
        if i >= 1:  # first packet is probation and ignored
            transit = t * 8000 - i * 160
            if prev_transit is not None:
                expected += (abs(transit - prev_transit) - expected) / 16
            prev_transit = transit
    assert st_.jitter == pytest.approx(expected)
    assert expected > 0
    assert st_.report_block(1.0).jitter == int(expected)


def test_constant_delay_has_zero_jitter() -> None:
    st_ = ReceiverStats(ssrc=7)
    _feed(st_, list(range(50)))
    assert st_.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_dlsr_and_rtt() -> None:
    st_ = ReceiverStats(ssrc=7)
    _feed(st_, [1, 2, 3])
    sr_time = 1700000000.0
    sr = RtcpSenderReport(ssrc=7, ntp_timestamp=ntp_timestamp(sr_time), rtp_timestamp=0, packet_count=0,
                          octet_count=0)
    st_.on_sender_report(sr, now=50.0)
    block = st_.report_block(now=50.5)
    assert block.lsr == ntp_middle32(ntp_timestamp(sr_time))
    assert block.dlsr == 32768
    # The sender gets the block back 0.6 s after its SR: RTT = 0.6 - 0.5
    assert round_trip_time(block, sr_time + 0.6) == pytest.approx(0.1, abs=1e-3)
    assert round_trip_time(ReportBlock(ssrc=1), sr_time) is None
