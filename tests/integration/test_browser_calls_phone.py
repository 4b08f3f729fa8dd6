"""A browser phone and the leansip phone call each other through ``leansip serve`` (issue 27 part 4): JsSIP in
headless Chromium registers over ws:, the leansip phone over UDP; the phone answers the browser's WebRTC offer
(ICE, DTLS-SRTP, UDP/TLS/RTP/SAVPF, rtcp-mux, Opus) with aiortc, and offers WebRTC itself (--webrtc) when it
calls the page. Chromium's fake microphone plays a tone file; the phone records it and the test measures its
frequency, and the page reports ICE connected and the remote audio track."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from leansip.media.tone import write_tone_wav
from tests.integration.browser_kit import Browser, BrowserPhone, require_jssip
from tests.integration.helpers import ServerProcess, start_phone, wait_exit, wait_for_text
from tests.integration.interop import check_tone, stop_proc

pytestmark = [pytest.mark.external, pytest.mark.timeout(120)]
pytest.importorskip("aiortc")

BROWSER_TONE = 600.0


def _server(tmp: Path) -> ServerProcess:
    (tmp / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    return ServerProcess(["--auth", "--auth-algorithms", "MD5", "--users", str(tmp / "users.txt"), "--realm",
                          "leansip", "--location", "memory", "--listen", "ws:127.0.0.1:0", "--log-level", "info"],
                         tmp)


def _browser(tmp: Path) -> Browser:
    # the fake microphone plays our tone (Chromium loops the file); 48 kHz stereo as a sound card would give
    write_tone_wav(tmp / "mic.wav", BROWSER_TONE, 10.0, rate=48000, channels=2)
    return Browser(args=[f"--use-file-for-fake-audio-capture={tmp / 'mic.wav'}"])


def _page(browser: Browser, url: str) -> BrowserPhone:
    page = browser.phone("alice").start(url, "sip:alice@leansip", "alicepw")
    page.wait("registered", status=200)
    return page


def _phone(tmp: Path, port: int, *args: str, ready: str = "event=Registered") -> tuple[object, Path]:
    log = tmp / "bob.log"
    proc = start_phone(["-v", "--server", f"127.0.0.1:{port}", "--realm", "leansip", "--user", "bob", "--password",
                        "bobpw", *args], log)
    wait_for_text(log, ready, proc=proc)  # type: ignore[arg-type]
    return proc, log


def test_browser_calls_the_phone(tmp_path: Path) -> None:
    require_jssip()
    with _server(tmp_path) as srv:
        url = f"ws://127.0.0.1:{srv.listening()['ws'][1]}"
        bob, bob_log = _phone(tmp_path, srv.port, "answer", "--record", str(tmp_path / "bob.wav"), "--timeout", "30")
        try:
            with _browser(tmp_path) as browser:
                alice = _page(browser, url)
                alice.call("sip:bob@leansip")
                alice.wait("confirmed", timeout=15)
                alice.wait("ice", state="connected", timeout=15)
                alice.wait("track", kind="audio")
                time.sleep(3.0)
                alice.hangup()
                alice.wait("ended", originator="local")
                assert alice.errors == [], alice.errors
            assert wait_exit(bob, 15) == 0  # type: ignore[arg-type]
        finally:
            stop_proc(bob)  # type: ignore[arg-type]
        text = bob_log.read_text()
    assert "UDP/TLS/RTP/SAVPF" in text and "event=media_started profile=webrtc" in text, text[-3000:]
    assert "event=CallEnded reason='remote hangup'" in text, text[-3000:]
    check_tone(tmp_path / "bob.wav", BROWSER_TONE, 1.5)


def test_phone_calls_the_browser(tmp_path: Path) -> None:
    require_jssip()
    with _server(tmp_path) as srv:
        url = f"ws://127.0.0.1:{srv.listening()['ws'][1]}"
        with _browser(tmp_path) as browser:
            alice = _page(browser, url)
            bob, bob_log = _phone(tmp_path, srv.port, "--webrtc", "call", "alice", "--record",
                                  str(tmp_path / "bob.wav"), "--hangup-after", "4", "--timeout", "15",
                                  ready="event=started")
            try:
                alice.wait("newRTCSession", originator="remote", timeout=15)
                alice.answer()
                alice.wait("confirmed", timeout=15)
                alice.wait("ice", state="connected", timeout=15)
                assert wait_exit(bob, 30) == 0  # type: ignore[arg-type]
                alice.wait("ended", originator="remote", timeout=10)
                assert alice.errors == [], alice.errors
            finally:
                stop_proc(bob)  # type: ignore[arg-type]
        text = bob_log.read_text()
    assert "event=media_started profile=webrtc" in text, text[-3000:]
    check_tone(tmp_path / "bob.wav", BROWSER_TONE, 1.5)
