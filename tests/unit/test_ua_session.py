"""MediaSession: two pure sessions wired back to back (no sockets), fake time, SDP from leansip.ua.sdp."""

from __future__ import annotations

import random
from array import array
from dataclasses import replace

import pytest

from leansip.media.dtmf import TelephoneEvent
from leansip.media.g711 import ulaw_encode
from leansip.media.rtp import RtpPacket
from leansip.media.tone import dominant_frequency, sine_samples
from leansip.ua.cli import EPILOG, build_parser, main
from leansip.ua.sdp import LocalSession, MediaConfig, process_answer
from leansip.ua.session import FRAME_SECONDS, MediaSession

A = ("127.0.0.1", 30000)
B = ("127.0.0.1", 31000)


def negotiate(srtp: str = "off") -> tuple[MediaSession, MediaSession]:
    """alice offers, bob answers; each session gets what it negotiated."""
    ca = MediaConfig(address=A[0], port=A[1], srtp=srtp)  # type: ignore[arg-type]
    cb = MediaConfig(address=B[0], port=B[1], srtp=srtp)  # type: ignore[arg-type]
    offer = LocalSession(address=A[0]).offer(ca)
    answer, bob_media = LocalSession(address=B[0]).answer(offer, cb)
    alice_media = process_answer(offer, answer, ca)
    tone = sine_samples(1000.0, 2.0)
    alice = MediaSession(alice_media, source=tone, rng=random.Random(1))
    bob = MediaSession(bob_media, rng=random.Random(2))
    return alice, bob


def test_plain_rtp_carries_the_tone() -> None:
    alice, bob = negotiate()
    heard = array("h")
    wire = []
    for i in range(100):
        now = i * FRAME_SECONDS
        for data, _dest in alice.tick(now)[0]:
            wire.append(data)
            bob.receive_rtp(data, A, now)
        heard.extend(bob.tick(now)[1])
    assert len(wire) == 100 and bob.stats.received_packets == 100
    pkt = RtpPacket.parse(wire[5])
    assert pkt.payload_type == 0 and len(pkt.payload) == 160
    assert abs(dominant_frequency(heard[800:], 8000) - 1000.0) < 20
    assert not alice.srtp_active


def test_srtp_packets_differ_from_plain_and_decrypt() -> None:
    alice, bob = negotiate("mandatory")
    assert alice.srtp_active and bob.srtp_active
    tone = sine_samples(1000.0, 0.02)
    plain_payload = ulaw_encode(tone)
    heard = array("h")
    wire = []
    for i in range(50):
        now = i * FRAME_SECONDS
        for data, _dest in alice.tick(now)[0]:
            wire.append(data)
            assert bob.receive_rtp(data, A, now)
        heard.extend(bob.tick(now)[1])
    first = wire[0]
    assert len(first) == 12 + 160 + 10  # 80-bit auth tag
    assert plain_payload not in first and first[12:172] != plain_payload
    assert len(set(wire[3][12:172])) > 60  # ciphertext, not a handful of u-law code words
    assert abs(dominant_frequency(heard[800:], 8000) - 1000.0) < 20
    # a tampered packet fails authentication and is dropped, not played
    bad = bytearray(wire[-1])
    bad[-1] ^= 1
    assert not bob.receive_rtp(bytes(bad), A, 2.0)
    assert bob.stats.srtp_failures == 1


def test_symmetric_rtp_latches_to_the_source() -> None:
    alice, bob = negotiate()
    nat = ("127.0.0.1", 45678)
    for i in range(3):
        for data, _ in alice.tick(i * FRAME_SECONDS)[0]:
            bob.receive_rtp(data, nat, i * FRAME_SECONDS)
    packets, _ = bob.tick(0.1)
    assert packets and packets[0][1] == nat
    assert bob.stats.latched == 1
    data, dest = bob.rtcp_report(0.2)
    assert dest == (nat[0], nat[1] + 1)


def test_garbage_and_foreign_payload_dropped() -> None:
    _alice, bob = negotiate()
    assert not bob.receive_rtp(b"\x80\x00", A, 0.0)
    comfort_noise = RtpPacket(payload_type=13, sequence_number=1, timestamp=1, ssrc=5, payload=b"\x40")
    assert not bob.receive_rtp(comfort_noise.serialize(), A, 0.0)
    assert bob.stats.dropped == 2 and bob.stats.received_packets == 0
    # a telephone-event (the negotiated 101) is not audio either, but it is taken: a digit
    dtmf = RtpPacket(payload_type=101, sequence_number=2, timestamp=1, ssrc=5,
                     payload=TelephoneEvent(event=5, end=True, duration=800).serialize())
    assert bob.receive_rtp(dtmf.serialize(), A, 0.0)
    assert [d.digit for d in bob.take_digits()] == ["5"] and bob.stats.received_packets == 0


def test_hold_stops_sending_and_resume_restarts() -> None:
    alice, bob = negotiate()
    assert alice.tick(0.0)[0]
    alice.update(replace(alice.media, direction="recvonly"))
    ts_before = alice.sender.timestamp
    assert alice.tick(0.02)[0] == []
    assert alice.sender.timestamp == (ts_before + 160) & 0xFFFFFFFF  # the RTP clock keeps running
    alice.update(replace(alice.media, direction="sendrecv"))
    packets = alice.tick(0.04)[0]
    assert packets and RtpPacket.parse(packets[0][0]).marker


def test_rtcp_reports_every_few_seconds() -> None:
    alice, bob = negotiate()
    sent = 0
    for i in range(int(12 / FRAME_SECONDS)):
        now = i * FRAME_SECONDS
        for data, _ in alice.tick(now)[0]:
            bob.receive_rtp(data, A, now)
        bob.tick(now)
        if alice.rtcp_due(now):
            data, dest = alice.rtcp_report(now)
            assert dest == (B[0], B[1] + 1)
            assert bob.receive_rtcp(data, A, now)
            sent += 1
    assert 1 <= sent <= 5  # 5 s on average, randomised 0.5-1.5 (RFC 3550 6.2)


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--user", "a", "call", "bob"]) == 2  # no server: target must be a URI
    assert main(["--user", "a", "register"]) == 2
    assert main(["call"]) == 2
    assert main(["--user", "a", "--server", "nope", "register"]) == 2
    assert "exit status" in build_parser().format_help()
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 "):
        assert f"  {code}" in EPILOG
