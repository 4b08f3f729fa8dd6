"""DTMF and call transfer with real peers (issue 27): baresip 1.0 for RFC 4733 digits and REFER, SIPp for SIP INFO,
and three ``leansip phone`` processes for the attended transfer (Replaces).

baresip sends digits with its ``sndcode`` control command and logs the ones it receives (``received DTMF: '5'``);
it transfers with ``transfer URI`` and follows a REFER by calling the target. The leansip phone prints every
digit it receives on stdout (``DTMF 5 100ms rfc4733``) and logs the transfer's steps.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from leansip.media.tone import write_tone_wav
from tests.conftest import free_udp_port, require_program
from tests.integration.helpers import ServerProcess, start_phone, wait_exit, wait_for_text
from tests.integration.interop import Baresip, check_tone, stop_proc
from tests.integration.sipp_kit import SCENARIOS, run_sipp

SERVER_ARGS = ["--auth", "--location", "memory", "--realm", "test", "--auth-algorithms", "MD5"]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\ncarol:carolpw\n")
    write_tone_wav(tmp_path / "tone440.wav", 440.0, 8.0)
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, 12.0)
    return tmp_path


def _server(tmp: Path) -> ServerProcess:
    return ServerProcess([*SERVER_ARGS, "--users", str(tmp / "users.txt")], tmp)


def _account(user: str, port: int, *params: str) -> str:
    return ";".join([f"<sip:{user}@127.0.0.1:{port};transport=udp>", f"auth_pass={user}pw", "regint=300",
                     *params])


def _creds(port: int, user: str) -> list[str]:
    return ["--server", f"127.0.0.1:{port}", "--user", user, "--password", f"{user}pw"]


def _logs(*paths: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in paths if p.exists())


def _digits(log: Path, via: str) -> list[str]:
    return re.findall(rf"^DTMF (\S) \d+ms {via}$", log.read_text(errors="replace"), re.MULTILINE)


# --------------------------------------------------------------------------------------------- DTMF


def test_baresip_sends_rfc4733_digits_to_leansip(tmp: Path) -> None:
    require_program("baresip")
    with _server(tmp) as srv:
        bob_log = tmp / "bob.log"
        bob = start_phone([*_creds(srv.port, "bob"), "answer", "--timeout", "20"], bob_log)
        try:
            wait_for_text(bob_log, "event=Registered", proc=bob)
            with Baresip(tmp, account=_account("alice", srv.port), source=tmp / "tone440.wav", lifetime=20,
                         command=f"/dial sip:bob@127.0.0.1:{srv.port}", name="alice", control=True) as alice:
                alice.wait_registered()
                alice.wait_for("Call established", 10)
                for digit in "159#":
                    alice.control("sndcode", digit)
                    time.sleep(0.3)
                wait_for_text(bob_log, "DTMF #", 10, proc=bob)
                assert wait_exit(bob, 15) == 0  # baresip hangs up when its WAV ends
        finally:
            stop_proc(bob)
            logs = _logs(bob_log, tmp / "alice.log")
    assert _digits(bob_log, "rfc4733") == list("159#"), logs
    assert "dtmf=rfc4733" in bob_log.read_text()  # telephone-event was agreed


def test_leansip_sends_rfc4733_digits_to_baresip(tmp: Path) -> None:
    require_program("baresip")
    with _server(tmp) as srv:
        with Baresip(tmp, account=_account("bob", srv.port, "answermode=auto"), source=tmp / "tone440.wav",
                     lifetime=20, name="bob", control=True) as bob:
            bob.wait_registered()
            events = bob.listen()  # baresip reports received digits as CALL_DTMF_START events
            alice_log = tmp / "alice.log"
            alice = start_phone([*_creds(srv.port, "alice"), "call", "bob", "--dtmf", "2580*", "--dtmf-delay", "1",
                                 "--hangup-after", "4", "--timeout", "8"], alice_log)
            try:
                assert wait_exit(alice, 20) == 0, _logs(alice_log, bob.log)
                bob.wait_for("terminated (duration:", 5)
            finally:
                stop_proc(alice)
    logs = _logs(alice_log, bob.log)
    assert "event=dtmf_sent digits=2580* via=rfc4733" in alice_log.read_text(), logs
    digits = [e.get("param") for e in events if e.get("type") == "CALL_DTMF_START"]
    assert digits == list("2580*"), (events, logs)


def test_sipp_sends_info_digits_to_leansip(tmp: Path) -> None:
    require_program("sipp")
    port = free_udp_port()
    bob_log = tmp / "bob.log"
    bob = start_phone(["--user", "bob", "--local-port", str(port), "answer", "--timeout", "20"], bob_log)
    try:
        wait_for_text(bob_log, "event=started", proc=bob)
        result = run_sipp(port, SCENARIOS / "uac-info-dtmf.xml", tmp, ["-m", "1", "-s", "bob"], name="info",
                          timeout=30)
        assert result.returncode == 0, result
        assert wait_exit(bob, 10) == 0
    finally:
        stop_proc(bob)
    text = bob_log.read_text()
    assert _digits(bob_log, "info") == ["5", "#"], text
    assert "DTMF 5 160ms info" in text and "DTMF # 250ms info" in text


def test_leansip_falls_back_to_info_when_the_answer_has_no_telephone_event(tmp: Path) -> None:
    require_program("sipp")
    port = free_udp_port()
    errors = tmp / "uas.errors"
    uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas-info-dtmf.xml"), "-i", "127.0.0.1", "-p", str(port),
                            "-m", "1", "-nostdin", "-timeout", "30", "-trace_err", "-error_file", str(errors)],
                           cwd=tmp, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    alice_log = tmp / "alice.log"
    try:
        time.sleep(0.5)  # sipp binds its port
        alice = start_phone(["--user", "alice", "call", f"sip:uas@127.0.0.1:{port}", "--dtmf", "1#",
                             "--dtmf-delay", "0.5", "--hangup-after", "2"], alice_log)
        assert wait_exit(alice, 20) == 0, alice_log.read_text()
        rc = uas.wait(15)
    finally:
        stop_proc(uas)  # type: ignore[arg-type]
    text = alice_log.read_text()
    assert "event=dtmf_sent digits=1# via=info" in text and "dtmf=info" in text, text
    assert rc == 0, (errors.read_text(errors="replace") if errors.exists() else "") + text


# --------------------------------------------------------------------------------------------- transfer


def test_leansip_transfers_baresip_to_leansip(tmp: Path) -> None:
    """Blind transfer: alice (leansip, transferor) calls bob (baresip), REFERs him to carol (leansip); bob calls
    carol, whose recording holds bob's tone; alice learns the outcome from the NOTIFYs and hangs up."""
    require_program("baresip")
    with _server(tmp) as srv:
        carol_log, alice_log = tmp / "carol.log", tmp / "alice.log"
        carol = start_phone([*_creds(srv.port, "carol"), "answer", "--record", str(tmp / "carol.wav"),
                             "--hangup-after", "3", "--timeout", "25"], carol_log)
        alice = None
        try:
            wait_for_text(carol_log, "event=Registered", proc=carol)
            with Baresip(tmp, account=_account("bob", srv.port, "answermode=auto"), source=tmp / "tone440.wav",
                         lifetime=25, name="bob") as bob:
                bob.wait_registered()
                alice = start_phone([*_creds(srv.port, "alice"), "transfer", "carol", "--call", "bob", "--after",
                                     "1.5", "--timeout", "15"], alice_log)
                alice_rc = wait_exit(alice, 30)
                carol_rc = wait_exit(carol, 20)
        finally:
            stop_proc(carol)
            stop_proc(alice)
            logs = _logs(alice_log, carol_log, tmp / "bob.log")
    assert alice_rc == 0, logs
    assert carol_rc == 0, logs
    text = alice_log.read_text()
    assert "event=TransferProgress status=202" in text and "event=transfer_result status=200" in text, logs
    check_tone(tmp / "carol.wav", 440.0, 1.5)


def test_baresip_transfers_leansip_to_leansip(tmp: Path) -> None:
    """Blind transfer the other way: alice (baresip) talks to bob (leansip) and transfers him to carol (leansip):
    bob answers the REFER with 202, calls carol with Referred-By, and reports 200 in a NOTIFY."""
    require_program("baresip")
    with _server(tmp) as srv:
        bob_log, carol_log = tmp / "bob.log", tmp / "carol.log"
        bob = start_phone([*_creds(srv.port, "bob"), "answer", "--play", str(tmp / "tone1k.wav"), "--timeout", "25",
                           "--hangup-after", "10"], bob_log)
        carol = start_phone([*_creds(srv.port, "carol"), "answer", "--record", str(tmp / "carol.wav"),
                             "--hangup-after", "3", "--timeout", "25"], carol_log)
        try:
            wait_for_text(bob_log, "event=Registered", proc=bob)
            wait_for_text(carol_log, "event=Registered", proc=carol)
            with Baresip(tmp, account=_account("alice", srv.port), source=tmp / "tone440.wav", lifetime=25,
                         command=f"/dial sip:bob@127.0.0.1:{srv.port}", name="alice", control=True) as alice:
                alice.wait_registered()
                alice.wait_for("Call established", 10)
                time.sleep(1.0)
                alice.control("transfer", f"sip:carol@127.0.0.1:{srv.port}")
                wait_for_text(bob_log, "event=transfer_followed", 10, proc=bob)
                carol_rc = wait_exit(carol, 20)
                bob_rc = wait_exit(bob, 20)
        finally:
            stop_proc(bob)
            stop_proc(carol)
            logs = _logs(bob_log, carol_log, tmp / "alice.log")
    assert carol_rc == 0 and bob_rc == 0, logs
    assert "event=TransferRequested" in bob_log.read_text(), logs
    check_tone(tmp / "carol.wav", 1000.0, 1.5)


def test_attended_transfer_between_three_leansip_phones(tmp: Path) -> None:
    """alice calls bob, holds him, calls carol, then REFERs bob to carol with Replaces: bob's new call takes the
    place of alice's call with carol (carol logs reason='replaced'), and bob and carol talk."""
    with _server(tmp) as srv:
        bob_log, carol_log, alice_log = tmp / "bob.log", tmp / "carol.log", tmp / "alice.log"
        bob = start_phone([*_creds(srv.port, "bob"), "answer", "--play", str(tmp / "tone1k.wav"), "--timeout", "25"],
                          bob_log)
        carol = start_phone([*_creds(srv.port, "carol"), "answer", "--record", str(tmp / "carol.wav"),
                             "--hangup-after", "6", "--timeout", "25"], carol_log)
        alice = None
        try:
            wait_for_text(bob_log, "event=Registered", proc=bob)
            wait_for_text(carol_log, "event=Registered", proc=carol)
            alice = start_phone([*_creds(srv.port, "alice"), "transfer", "carol", "--attended", "--call", "bob",
                                 "--after", "1", "--consult", "1", "--timeout", "15"], alice_log)
            alice_rc = wait_exit(alice, 30)
            carol_rc = wait_exit(carol, 20)
            bob_rc = wait_exit(bob, 20)
        finally:
            for proc in (alice, bob, carol):
                stop_proc(proc)
            logs = _logs(alice_log, bob_log, carol_log)
    assert (alice_rc, bob_rc, carol_rc) == (0, 0, 0), logs
    assert "reason='replaced'" in carol_log.read_text(), logs
    assert "replaces=" in carol_log.read_text(), logs
    check_tone(tmp / "carol.wav", 1000.0, 1.5)


def test_refused_transfer_is_reported_to_the_transferor(tmp: Path) -> None:
    """Direct calls, no server: bob refuses transfers; alice's REFER ends in a final NOTIFY 603, she says so
    (exit 3) and hangs up."""
    port = free_udp_port()
    bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
    bob = start_phone(["--user", "bob", "--local-port", str(port), "--no-follow-transfer", "answer", "--timeout",
                       "15"], bob_log)
    alice = None
    try:
        wait_for_text(bob_log, "event=started", proc=bob)
        alice = start_phone(["--user", "alice", "transfer", "sip:carol@127.0.0.1:9", "--call",
                             f"sip:bob@127.0.0.1:{port}", "--after", "0.5", "--timeout", "10"], alice_log)
        alice_rc = wait_exit(alice, 20)
        bob_rc = wait_exit(bob, 10)
    finally:
        stop_proc(alice)
        stop_proc(bob)
    logs = _logs(alice_log, bob_log)
    assert alice_rc == 3 and bob_rc == 0, logs
    assert "transfer failed: 603 Decline" in alice_log.read_text(), logs
    assert "event=TransferRequested" in bob_log.read_text() and "transfer_followed" not in bob_log.read_text()
