"""Interop with Kamailio 5.6 as registrar and proxy: two ``leansip phone`` processes call through it.

Kamailio runs ``tests/data/kamailio/proxy.cfg`` (usrloc in memory, stateful ``t_relay``, Record-Route;
``-A WITH_AUTH`` adds MD5 digest from an htable). Bob registers and answers, Alice calls ``bob`` and hangs
up after CALL_SECONDS. Each plays a tone (Alice 1 kHz, Bob 440 Hz) and records: each recording must hold the
other's tone (+-20 Hz) for at least 80% of the call. The BYE must carry Kamailio's Record-Route as a Route
(so the proxy sees the end of the dialog) and both phones must exit 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from leansip.media.tone import write_tone_wav
from tests.conftest import require_program
from tests.integration.helpers import start_phone, wait_exit, wait_for_text
from tests.integration.interop import (
    KAMAILIO_CFG_DIR,
    Kamailio,
    check_tone,
    stop_proc,
)

CALL_SECONDS = 4.0
ALICE_TONE = 1000.0
BOB_TONE = 440.0


def _logs(*paths: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-6000:]}" for p in paths if p.exists())


@pytest.fixture
def tones(tmp_path: Path) -> Path:
    require_program("kamailio")
    write_tone_wav(tmp_path / "alice.tone.wav", ALICE_TONE, CALL_SECONDS + 2)
    write_tone_wav(tmp_path / "bob.tone.wav", BOB_TONE, CALL_SECONDS + 2)
    return tmp_path


@pytest.mark.parametrize(("auth", "srtp"), [(False, False), (True, False), (True, True)],
                         ids=["noauth", "auth", "auth-srtp"])
def test_call_through_kamailio(tones: Path, auth: bool, srtp: bool) -> None:
    tmp = tones
    defines = ["-A", "WITH_AUTH"] if auth else []
    extra = ["--srtp", "mandatory"] if srtp else []
    with Kamailio(KAMAILIO_CFG_DIR / "proxy.cfg", tmp, defines=defines) as kam:
        server = ["--server", f"127.0.0.1:{kam.port}"]
        bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
        bob = start_phone([*server, "--user", "bob", "--password", "bobpw", "-v", *extra, "answer",
                     "--record", str(tmp / "bob.wav"), "--play", str(tmp / "bob.tone.wav"), "--timeout", "20"],
                    bob_log)
        try:
            wait_for_text(bob_log, "event=Registered", proc=bob)
            alice = start_phone([*server, "--user", "alice", "--password", "alicepw", "-v", *extra, "call", "bob",
                           "--play", str(tmp / "alice.tone.wav"), "--record", str(tmp / "alice.wav"),
                           "--hangup-after", str(CALL_SECONDS), "--timeout", "8"], alice_log)
            try:
                alice_rc = wait_exit(alice, CALL_SECONDS + 15)
                bob_rc = wait_exit(bob, 10)
            finally:
                stop_proc(alice)
        finally:
            stop_proc(bob)
            logs = _logs(alice_log, bob_log) + f"\n--- kamailio\n{kam.text()[-4000:]}"
    assert alice_rc == 0, logs
    assert bob_rc == 0, logs
    alice_text, bob_text = alice_log.read_text(), bob_log.read_text()
    assert "event=CallEnded reason='local hangup' status=200" in alice_text, logs
    assert "event=CallEnded reason='remote hangup'" in bob_text, logs
    assert f"srtp={srtp}" in alice_text and f"srtp={srtp}" in bob_text, logs
    if srtp:
        assert "srtp_failures=0" in alice_text and "srtp_failures=0" in bob_text, logs
    if auth:  # both were challenged: REGISTER with 401, the INVITE with 407
        assert "SIP/2.0 401" in bob_text and "SIP/2.0 407" in alice_text, logs
    # the BYE went along Kamailio's Record-Route
    bye = alice_text[alice_text.index("BYE sip:"):]
    assert f"Route: <sip:127.0.0.1:{kam.port};lr" in bye.split("\n\n")[0], logs
    check_tone(tmp / "bob.wav", ALICE_TONE, 0.8 * CALL_SECONDS)
    check_tone(tmp / "alice.wav", BOB_TONE, 0.8 * CALL_SECONDS)


def test_kamailio_rejects_wrong_password(tones: Path) -> None:
    """The phone's exit status 1 for a registration Kamailio refuses (bad password: 401 again)."""
    with Kamailio(KAMAILIO_CFG_DIR / "proxy.cfg", tones, defines=["-A", "WITH_AUTH"]) as kam:
        log = tones / "alice.log"
        alice = start_phone(["--server", f"127.0.0.1:{kam.port}", "--user", "alice", "--password", "wrong",
                       "register"], log)
        try:
            rc = wait_exit(alice, 15)
        finally:
            stop_proc(alice)
    assert rc == 1, log.read_text()
