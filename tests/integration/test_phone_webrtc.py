"""WebRTC media (issue 27 part 4, the phone's side): ICE, DTLS-SRTP, UDP/TLS/RTP/SAVPF and Opus through aiortc,
on loopback only. A leansip media object against a second aiortc peer, then two leansip phones where the caller
offers WebRTC (as a browser would) and the callee answers it. Audio is checked by its frequency both ways."""

from __future__ import annotations

import asyncio
from array import array
from pathlib import Path

import pytest

from leansip.media.tone import dominant_frequency, sine_samples, write_tone_wav
from tests.conftest import free_udp_port
from tests.integration.helpers import start_phone, wait_exit, wait_for_text
from tests.integration.interop import check_tone, stop_proc

aiortc = pytest.importorskip("aiortc")


def test_media_against_a_second_aiortc_peer() -> None:
    from leansip.io.webrtc import WebRtcMedia, is_webrtc_sdp

    async def scenario() -> tuple[array, array, bytes]:
        heard_a, heard_b = array("h"), array("h")
        a = WebRtcMedia(local_host="127.0.0.1", on_frame=heard_a.extend, on_played=lambda ids: None)
        b = WebRtcMedia(local_host="127.0.0.1", on_frame=heard_b.extend, on_played=lambda ids: None)
        try:
            a.clips.play(sine_samples(1000, 3.0))
            b.clips.play(sine_samples(440, 3.0))
            offer = await a.offer()
            answer = await b.answer(offer)
            await a.accept(answer)
            for _ in range(200):
                if len(heard_a) >= 8000 * 2 and len(heard_b) >= 8000 * 2:
                    break
                await asyncio.sleep(0.05)
        finally:
            await a.close()
            await b.close()
        return heard_a, heard_b, offer

    heard_a, heard_b, offer = asyncio.run(scenario())
    assert is_webrtc_sdp(offer) and b"a=fingerprint:sha-256" in offer and b"a=rtcp-mux" in offer
    candidates = [line for line in offer.decode().splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c for c in candidates)  # loopback only, no STUN server asked
    assert len(heard_b) >= 16000 and len(heard_a) >= 16000
    assert abs(dominant_frequency(heard_b[-8000:], 8000) - 1000) <= 20
    assert abs(dominant_frequency(heard_a[-8000:], 8000) - 440) <= 20


def test_phone_offering_webrtc_calls_a_phone(tmp_path: Path) -> None:
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, 6.0)
    write_tone_wav(tmp_path / "tone440.wav", 440.0, 6.0)
    port = free_udp_port()
    bob_log, alice_log = tmp_path / "bob.log", tmp_path / "alice.log"
    bob = start_phone(["-v", "--user", "bob", "--local-port", str(port), "answer", "--record",
                       str(tmp_path / "bob.wav"), "--play", str(tmp_path / "tone440.wav"), "--timeout", "20"], bob_log)
    try:
        wait_for_text(bob_log, "event=started", proc=bob)
        alice = start_phone(["--webrtc", "--user", "alice", "call", f"sip:bob@127.0.0.1:{port}", "--play",
                             str(tmp_path / "tone1k.wav"), "--record", str(tmp_path / "alice.wav"), "--hangup-after",
                             "4", "--dtmf", "5", "--dtmf-delay", "1"], alice_log)
        assert wait_exit(alice, 30) == 0, alice_log.read_text() + bob_log.read_text()
        assert wait_exit(bob, 15) == 0, bob_log.read_text()
    finally:
        stop_proc(bob)
    bob_text, alice_text = bob_log.read_text(), alice_log.read_text()
    assert "m=audio" in bob_text and "UDP/TLS/RTP/SAVPF" in bob_text  # the offer bob got (-v logs SIP)
    assert "event=media_started profile=webrtc" in bob_text and "event=media_started profile=webrtc" in alice_text
    assert "event=dtmf_sent digits=5 via=info" in alice_text and "DTMF 5 100ms info" in bob_text
    check_tone(tmp_path / "bob.wav", 1000.0, 2.0)
    check_tone(tmp_path / "alice.wav", 440.0, 2.0)
