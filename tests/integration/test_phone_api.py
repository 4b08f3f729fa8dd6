"""The public asyncio API (leansip.ua) with real sockets: two phones in one event loop exchange PCM frame streams
and DTMF; the README's two example programs run against ``leansip serve`` and CLI phones."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leansip.media.tone import dominant_frequency, sine_samples, write_tone_wav
from leansip.ua import CallEnded, CallFailed, DtmfReceived, Phone, PhoneOptions
from tests.conftest import REPO_ROOT
from tests.integration.helpers import ServerProcess, phone_env, start_phone, wait_exit, wait_for_text
from tests.integration.interop import check_tone, stop_proc


def test_two_phones_stream_pcm_and_digits() -> None:
    async def scenario() -> None:
        alice = await Phone.start(PhoneOptions(user="alice"))
        bob = await Phone.start(PhoneOptions(user="bob"))
        try:
            host, port = bob.address
            dialling = asyncio.ensure_future(alice.call(f"sip:bob@{host}:{port}", timeout=10))
            incoming = await bob.next_call(10)
            assert incoming is not None and incoming.state == "incoming"
            await incoming.answer()
            call = await dialling
            assert call.established and await incoming.wait_established(5)

            tone = sine_samples(1000, 1.0)

            async def frames() -> AsyncIterator[array]:
                for i in range(0, len(tone), 160):
                    yield tone[i:i + 160]

            heard = array("h")

            async def listen() -> None:
                async for frame in incoming.frames():
                    heard.extend(frame)
                    if len(heard) >= 8000 + 4000:
                        return

            listener = asyncio.ensure_future(listen())
            await call.play_frames(frames())
            await asyncio.wait_for(listener, 5)
            assert abs(dominant_frequency(heard, 8000) - 1000) <= 20

            assert call.send_dtmf("42#") == "rfc4733"
            assert await incoming.read_digits(3, timeout=5) == "42#"
            assert incoming.send_dtmf("7") == "rfc4733"
            events = [e async for e in _until(call.events(), DtmfReceived)]
            assert isinstance(events[-1], DtmfReceived) and events[-1].digit == "7"

            incoming.hangup()
            ended = await call.wait_ended(5)
            assert isinstance(ended, CallEnded) and ended.reason == "remote hangup"
            assert call.state == "ended"
            with pytest.raises(CallFailed, match="no answer"):  # rings at bob, unanswered: cancelled
                await alice.call(f"sip:nobody@{host}:{port}", timeout=0.5)
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(scenario())


async def _until(events: AsyncIterator[object], kind: type) -> AsyncIterator[object]:
    async for e in events:
        yield e
        if isinstance(e, kind):
            return


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\ncarol:carolpw\nivr:ivrpw\n")
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, 12.0)
    write_tone_wav(tmp_path / "prompt.wav", 500.0, 1.0)
    return tmp_path


def _server(tmp: Path) -> ServerProcess:
    return ServerProcess(["--auth", "--location", "memory", "--realm", "test", "--users", str(tmp / "users.txt")],
                         tmp)


def _example(name: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, str(REPO_ROOT / "examples" / name), *args], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env=phone_env(), cwd=log.parent)


def _rc(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status, or None (the process is killed) when it runs past ``timeout``: the logs then say why."""
    try:
        return wait_exit(proc, timeout)
    except subprocess.TimeoutExpired:
        return None


def test_auto_attendant_example_transfers_on_a_digit(tmp: Path) -> None:
    with _server(tmp) as srv:
        server = f"127.0.0.1:{srv.port}"
        carol_log, ivr_log, alice_log = tmp / "carol.log", tmp / "ivr.log", tmp / "alice.log"
        carol = start_phone(["--server", server, "--user", "carol", "--password", "carolpw", "answer", "--record",
                             str(tmp / "carol.wav"), "--hangup-after", "3", "--timeout", "60"], carol_log)
        ivr = _example("auto_attendant.py", "--server", server, "--user", "ivr", "--password", "ivrpw", "--prompt",
                       str(tmp / "prompt.wav"), "--extension", f"1=sip:carol@{server}", "--calls", "1", log=ivr_log)
        alice = None
        try:
            wait_for_text(carol_log, "event=Registered", proc=carol)
            wait_for_text(ivr_log, "auto-attendant: registered", 15, proc=ivr)
            alice = start_phone(["--server", server, "--user", "alice", "--password", "alicepw", "call", "ivr",
                                 "--play", str(tmp / "tone1k.wav"), "--dtmf", "1", "--dtmf-delay", "1.5",
                                 "--hangup-after", "25", "--timeout", "10"], alice_log)
            carol_rc = _rc(carol, 60)  # generous: under load the chain of four processes is slow
            alice_rc = _rc(alice, 20)
            ivr_rc = _rc(ivr, 20)
        finally:
            for proc in (alice, carol, ivr):
                stop_proc(proc)
            logs = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                           for p in (ivr_log, alice_log, carol_log) if p.exists())
    assert (ivr_rc, alice_rc, carol_rc) == (0, 0, 0), logs
    assert "pressed 1, transfer done" in ivr_log.read_text(), logs
    check_tone(tmp / "carol.wav", 1000.0, 1.5)


def test_dialer_example_records(tmp: Path) -> None:
    with _server(tmp) as srv:
        server = f"127.0.0.1:{srv.port}"
        bob_log, dialer_log = tmp / "bob.log", tmp / "dialer.log"
        bob = start_phone(["--server", server, "--user", "bob", "--password", "bobpw", "answer", "--play",
                           str(tmp / "tone1k.wav"), "--timeout", "20"], bob_log)
        try:
            wait_for_text(bob_log, "event=Registered", proc=bob)
            dialer = _example("dialer.py", "--server", server, "--user", "alice", "--password", "alicepw",
                              "--seconds", "3", f"sip:bob@{server}", str(tmp / "out.flac"), log=dialer_log)
            dialer_rc = wait_exit(dialer, 30)
            bob_rc = wait_exit(bob, 10)
        finally:
            stop_proc(bob)
        logs = dialer_log.read_text(errors="replace") + bob_log.read_text(errors="replace")
    assert dialer_rc == 0 and bob_rc == 0, logs
    assert "the call ended: local hangup" in dialer_log.read_text(), logs
    check_tone(tmp / "out.flac", 1000.0, 2.0)


def test_ended_calls_are_forgotten_past_a_bound() -> None:
    """A long-running application makes calls without end: the phone keeps only the last few ended ones."""
    from leansip.ua.phone import KEEP_ENDED

    async def scenario() -> int:
        alice = await Phone.start(PhoneOptions(user="alice"))
        bob = await Phone.start(PhoneOptions(user="bob"))
        try:
            host, port = bob.address
            for _ in range(KEEP_ENDED + 4):
                call = await alice.dial(f"sip:bob@{host}:{port}")
                incoming = await bob.next_call(5)
                assert incoming is not None
                incoming.reject(486)
                assert await call.wait_ended(5) is not None
            return max(len(alice.calls), len(bob.calls), len(alice._ua().calls), len(bob._ua().calls))
        finally:
            await alice.close()
            await bob.close()

    assert asyncio.run(scenario()) <= KEEP_ENDED + 1
