"""RFC 4733 telephone-events and INFO bodies: the sender's packets frame by frame, the receiver's digits, and two
media sessions exchanging digits with loss, duplicates and reordering. Pure, fake clock."""

from __future__ import annotations

import random

import pytest

from leansip.media.dtmf import (
    DtmfDigit,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    info_body,
    parse_info_body,
)
from leansip.media.rtp import RtpPacket
from leansip.ua.sdp import NegotiatedMedia
from leansip.ua.session import MediaSession


def test_event_payload_round_trip_and_bits() -> None:
    e = TelephoneEvent(event=11, end=True, volume=10, duration=800)
    assert e.serialize() == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert TelephoneEvent.parse(e.serialize()) == e
    assert TelephoneEvent.parse(bytes([1, 0x40 | 7, 0, 160])) == TelephoneEvent(event=1, volume=7, duration=160)
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x02\x03")


def test_sender_frames_follow_rfc_4733() -> None:
    tx = DtmfSender(duration_ms=100, gap_ms=60)
    tx.send("1#")
    ts = 1000
    frames = []
    for _ in range(25):
        frames.append(tx.frame(ts))
        ts += 160  # the stream clock runs on, event or not
    first = [TelephoneEvent.parse(f.payload) for f in frames[:7] if f is not None]
    # 100 ms = 5 frames, durations growing by 160; the 5th has E and is sent three times in all (2.5.1.4)
    assert [e.duration for e in first] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in first] == [False] * 4 + [True] * 3
    assert {e.event for e in first} == {1}
    assert [f.timestamp for f in frames[:7]] == [1000] * 7  # all carry the event's start (2.5.1.2)
    assert [f.marker for f in frames[:7]] == [True] + [False] * 6  # M on the first packet only
    assert frames[7:10] == [None, None, None]  # 60 ms of audio between the digits
    second = frames[10:17]
    assert all(f is not None for f in second)
    assert {f.timestamp for f in second} == {1000 + 10 * 160}  # a new event, a new timestamp
    assert TelephoneEvent.parse(second[0].payload).event == 11 and second[0].marker
    assert frames[17:] == [None] * 8 and not tx.busy


def test_sender_refuses_bad_digits_and_bounds() -> None:
    tx = DtmfSender()
    with pytest.raises(DtmfError):
        tx.send("12x")
    assert not tx.busy  # nothing of a refused string is queued
    with pytest.raises(DtmfError):
        tx.send("1", duration_ms=10)
    with pytest.raises(DtmfError):
        tx.send("1" * 300)


def _events(tx: DtmfSender, start: int = 5000, frames: int = 40) -> list[tuple[int, bytes]]:
    out = []
    ts = start
    for _ in range(frames):
        f = tx.frame(ts)
        if f is not None:
            out.append((f.timestamp, f.payload))
        ts += 160
    return out


def test_receiver_reports_each_digit_once_with_its_duration() -> None:
    tx = DtmfSender(duration_ms=120)
    tx.send("7*")
    rx = DtmfReceiver()
    digits = []
    for i, (ts, payload) in enumerate(_events(tx)):
        digits += rx.receive(payload, ts, 0xABC, i * 0.02)
        digits += rx.receive(payload, ts, 0xABC, i * 0.02)  # every packet twice: duplicates change nothing
    assert digits == [DtmfDigit(digit="7", duration_ms=120), DtmfDigit(digit="*", duration_ms=120)]


def test_receiver_survives_lost_end_packets_and_late_ones() -> None:
    tx = DtmfSender(duration_ms=100)
    tx.send("45")
    packets = _events(tx)
    rx = DtmfReceiver()
    ends_of_4 = [i for i, p in enumerate(packets) if p[0] == packets[0][0] and TelephoneEvent.parse(p[1]).end]
    assert len(ends_of_4) == 3
    kept = [p for i, p in enumerate(packets) if i not in ends_of_4[:2]]  # two of the three end packets lost
    got = [d for i, (ts, pl) in enumerate(kept) for d in rx.receive(pl, ts, 1, i * 0.02)]
    assert [(d.digit, d.duration_ms) for d in got] == [("4", 100), ("5", 100)]
    # a late update of the first event, after the second began: ignored
    assert rx.receive(packets[1][1], packets[1][0], 1, 1.0) == []
    # all end packets lost: the digit is reported when the next event starts, with what was heard
    rx2 = DtmfReceiver()
    no_ends = [p for p in packets if not TelephoneEvent.parse(p[1]).end]
    got2 = [d for i, (ts, pl) in enumerate(no_ends) for d in rx2.receive(pl, ts, 1, i * 0.02)]
    assert [(d.digit, d.duration_ms) for d in got2] == [("4", 80)]
    # ... or EVENT_TIMEOUT after its last packet
    assert rx2.poll(10.0) == [DtmfDigit(digit="5", duration_ms=80)]
    assert rx2.poll(11.0) == []


def test_receiver_ignores_other_events_and_short_payloads() -> None:
    rx = DtmfReceiver()
    assert rx.receive(TelephoneEvent(event=16, end=True, duration=800).serialize(), 10, 1, 0.0) == []  # flash
    assert rx.receive(b"\x01", 20, 1, 0.0) == []
    assert rx.dropped == 2


def _media(dtmf: int | None = 101, pt: int = 0) -> NegotiatedMedia:
    return NegotiatedMedia(codec="PCMU", payload_type=pt, clock_rate=8000, dtmf_payload_type=dtmf,
                           remote_address="127.0.0.1", remote_port=30000, remote_rtcp_port=30001,
                           direction="sendrecv", ptime=20, media_index=0)


def test_two_sessions_exchange_digits_in_the_rtp_stream() -> None:
    a = MediaSession(_media(), rng=random.Random(1))
    b = MediaSession(_media(), rng=random.Random(2))
    now = 0.0
    wire: list[RtpPacket] = []
    for i in range(65):
        if i == 5:
            a.send_dtmf("12#", duration_ms=100)  # after some audio, as a person presses keys mid-call
        packets, _ = a.tick(now)
        for data, _dest in packets:
            wire.append(RtpPacket.parse(data))
            b.receive_rtp(data, ("127.0.0.1", 30000), now)
        b.tick(now)
        now += 0.02
    assert [(d.digit, d.duration_ms) for d in b.take_digits()] == [("1", 100), ("2", 100), ("#", 100)]
    # one stream: consecutive sequence numbers through audio and events, the audio clock never skips
    seqs = [p.sequence_number for p in wire]
    assert all((y - x) % 65536 == 1 for x, y in zip(seqs, seqs[1:], strict=False))
    audio = [p for p in wire if p.payload_type == 0]
    assert all((y.timestamp - x.timestamp) % 2**32 >= 160 for x, y in zip(audio, audio[1:], strict=False))
    ev = [p for p in wire if p.payload_type == 101]
    assert len(ev) == 3 * 7
    assert ev[0].timestamp == (wire[4].timestamp + 160) % 2**32  # the event starts where the audio was
    after_first = wire[5 + 7]
    assert after_first.payload_type == 0 and not after_first.marker  # audio resumes, no new talkspurt
    assert after_first.timestamp == (ev[0].timestamp + 7 * 160) % 2**32


def test_session_without_telephone_event_refuses_rfc4733() -> None:
    s = MediaSession(_media(dtmf=None))
    assert not s.can_send_dtmf
    with pytest.raises(DtmfError):
        s.send_dtmf("1")


@pytest.mark.parametrize(("ctype", "body", "digit", "ms"), [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5", 160),
    ("Application/DTMF-Relay; charset=x", b"signal = #\nduration= 250\n", "#", 250),
    ("application/dtmf-relay", b"Signal=10\r\nDuration=100\r\n", "*", 100),
    ("application/dtmf", b"9", "9", 0),
    ("application/dtmf-relay", b"Signal=\r\n", None, 0),
    ("application/dtmf-relay", b"Signal=Z\r\n", None, 0),
    ("text/plain", b"Signal=5", None, 0),
])
def test_info_bodies(ctype: str, body: bytes, digit: str | None, ms: int) -> None:
    got = parse_info_body(ctype, body)
    assert (got.digit, got.duration_ms) == (digit, ms) if got is not None else digit is None


def test_info_body_written() -> None:
    assert info_body("a", 120) == b"Signal=A\r\nDuration=120\r\n"
    with pytest.raises(DtmfError):
        info_body("x", 100)
