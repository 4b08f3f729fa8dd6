"""The example route scripts (examples/routes/) in a real ``leansip serve``, driven by real programs over real
sockets: leansip phones (calls with audio, busy and unanswered callees, a voicemail box that records) and SIPp
(carriers and local users for the prefix plan)."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from leansip.media.audiofile import read_audio
from leansip.media.tone import active_duration, dominant_frequency, write_tone_wav
from tests.conftest import REPO_ROOT, free_udp_port, require_program
from tests.integration.helpers import (
    ServerProcess,
    send_recv,
    sip_request,
    start_phone,
    status_of,
    wait_exit,
    wait_for_text,
)
from tests.integration.sipp_kit import SippServer, run_sipp, scenario

EXAMPLES = REPO_ROOT / "examples" / "routes"
USERS = "alice:alicepw\nbob:bobpw\ncarol:carolpw\n"
TALK = 3.0  # seconds the caller talks once answered


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "users.txt").write_text(USERS)
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, TALK + 2.0)
    write_tone_wav(tmp_path / "greeting.wav", 440.0, TALK + 4.0)
    return tmp_path


def _server(tmp: Path, script: str, *extra: str) -> ServerProcess:
    return ServerProcess(["--routes", str(EXAMPLES / script), "--users", str(tmp / "users.txt"), "--realm", "test",
                          "--location", "memory", *extra], tmp, name=script.removesuffix(".py"))


def _phone(port: int, user: str) -> list[str]:
    return ["--server", f"127.0.0.1:{port}", "--user", user, "--password", f"{user}pw"]


@contextmanager
def _running(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _call(tmp: Path, port: int, caller: str, callee: str, name: str, *, hangup_after: float = TALK,
          timeout: float = 12.0) -> tuple[int, str]:
    """``caller`` calls ``callee`` playing the 1 kHz tone; (exit status, log) once the call is over."""
    log = tmp / f"{name}.log"
    proc = start_phone([*_phone(port, caller), "call", callee, "--play", str(tmp / "tone1k.wav"),
                        "--record", str(tmp / f"{name}.wav"), "--hangup-after", str(hangup_after),
                        "--timeout", str(timeout)], log)
    with _running(proc):
        rc = wait_exit(proc, timeout + hangup_after + 15)
    return rc, log.read_text()


def _heard(path: Path, frequency: float, at_least: float) -> None:
    samples, rate, _ = read_audio(path)
    assert abs(dominant_frequency(samples, rate) - frequency) <= 20.0, path
    assert active_duration(samples, rate) >= at_least, (path, active_duration(samples, rate))


# ------------------------------------------------------------------------------------------------ pbx.py

@pytest.mark.parametrize("callee_does", ["busy", "no-answer"])
def test_pbx_sends_a_busy_or_unanswered_call_to_voicemail_which_records_it(
        workdir: Path, monkeypatch: pytest.MonkeyPatch, callee_does: str) -> None:
    tmp = workdir
    vm_port = free_udp_port()
    monkeypatch.setenv("PBX_VOICEMAIL", f"sip:vm@127.0.0.1:{vm_port}")
    monkeypatch.setenv("PBX_RING_SECONDS", "2")
    vm_log, bob_log = tmp / "vm.log", tmp / "bob.log"
    with _server(tmp, "pbx.py", "--auth") as srv:
        vm = start_phone(["--user", "vm", "--local-port", str(vm_port), "answer", "--play", str(tmp / "greeting.wav"),
                          "--record", str(tmp / "vm.wav"), "--timeout", "30"], vm_log)
        busy = ["--reject", "486"] if callee_does == "busy" else ["--auto-answer-after", "20"]
        bob = start_phone([*_phone(srv.port, "bob"), "answer", *busy, "--timeout", "30"], bob_log)
        with _running(vm, bob):
            wait_for_text(vm_log, "event=started", proc=vm)
            wait_for_text(bob_log, "event=Registered", proc=bob)
            rc, alice_log = _call(tmp, srv.port, "alice", "bob", "alice")
            assert rc == 0, f"{alice_log}\n{srv.output()}"
            assert "event=CallEnded reason='local hangup' status=200" in alice_log
            assert wait_exit(vm, 15) == 0, vm_log.read_text()
            wait_exit(bob, 15)
        bob_text = bob_log.read_text()
        assert "IncomingCall" in bob_text  # bob's phone rang first: serial forking, not straight to voicemail
        if callee_does == "no-answer":
            assert "reason='cancelled'" in bob_text, bob_text
    _heard(tmp / "vm.wav", 1000.0, 0.7 * TALK)  # the voicemail box recorded alice
    _heard(tmp / "alice.wav", 440.0, 0.7 * TALK)  # and alice heard its greeting


def test_pbx_answers_404_for_strangers_and_407_without_credentials(workdir: Path) -> None:
    tmp = workdir
    with _server(tmp, "pbx.py", "--auth") as srv:
        rc, log = _call(tmp, srv.port, "alice", "nobody", "alice-nobody", timeout=5)
        assert rc != 0 and "status=404" in log, log
        replies = send_recv(srv.port, sip_request("INVITE", f"sip:bob@127.0.0.1:{srv.port}", user="alice"))
        assert 407 in [status_of(p) for p in replies]


# --------------------------------------------------------------------------------------------- prefix.py

def test_prefix_sends_numbers_to_their_carrier_users_to_their_phone_and_the_rest_404(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_program("sipp")
    (tmp_path / "users.txt").write_text(USERS)
    srv = _server(tmp_path, "prefix.py")
    us = SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, srv.port, name="carrier-us")
    uk = SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, srv.port, name="carrier-uk")
    bob = SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, srv.port, name="bob")
    monkeypatch.setenv("PREFIX_ROUTES", f"+1=127.0.0.1:{us.port},+44=127.0.0.1:{uk.port}")
    uac = scenario("uac-proxy.xml", tmp_path)
    with srv, us, uk, bob:
        reg = run_sipp(srv.port, scenario("proxy-register.xml", tmp_path), tmp_path,
                       ["-m", "1", "-s", "bob", "-key", "callee_port", str(bob.port)], name="register", timeout=20)
        assert reg.returncode == 0, f"{reg}\n{srv.output()}"
        for number, calls in (("+15551234567", 3), ("+442071234567", 2), ("bob", 2)):
            result = run_sipp(srv.port, uac, tmp_path, ["-m", str(calls), "-r", "20", "-s", number,
                                                        "-key", "caller", "alice"], name=f"uac{number}")
            assert result.count("SuccessfulCall") == calls and result.returncode == 0, f"{result}\n{srv.output()}"
        assert (us.received("INVITE"), uk.received("INVITE"), bob.received("INVITE")) == (3, 2, 2)
        assert us.received("INVITE sip:+15551234567@127.0.0.1") == 3
        for nowhere in ("+33123456789", "carol"):  # no carrier; a user with no phone registered
            replies = send_recv(srv.port, sip_request("INVITE", f"sip:{nowhere}@127.0.0.1:{srv.port}", user="alice"))
            assert [status_of(p) for p in replies][-1] == 404
        assert (us.received("INVITE"), uk.received("INVITE"), bob.received("INVITE")) == (3, 2, 2)


# ------------------------------------------------------------------------------------------------ acl.py

def test_acl_blocks_a_destination_and_limits_simultaneous_calls(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    tmp = workdir
    monkeypatch.setenv("ACL_BLOCKED", "+1900")
    monkeypatch.setenv("ACL_MAX_CALLS", "1")
    bob_log = tmp / "bob.log"
    with _server(tmp, "acl.py") as srv:
        rc, log = _call(tmp, srv.port, "alice", "+19005550100", "blocked", timeout=5)
        assert rc != 0 and "status=403" in log, log
        bob = start_phone([*_phone(srv.port, "bob"), "answer", "--record", str(tmp / "bob.wav"), "--max-calls", "2",
                           "--timeout", "40"], bob_log)
        with _running(bob):
            wait_for_text(bob_log, "event=Registered", proc=bob)
            first_log = tmp / "first.log"
            first = start_phone([*_phone(srv.port, "alice"), "call", "bob", "--play", str(tmp / "tone1k.wav"),
                                 "--hangup-after", "6", "--timeout", "10"], first_log)
            with _running(first):
                wait_for_text(first_log, "event=CallEstablished", proc=first)
                rc, log = _call(tmp, srv.port, "alice", "bob", "second", timeout=5)
                assert rc != 0 and "status=486" in log, log  # alice already has her one call
                assert wait_exit(first, 20) == 0, first_log.read_text()
            # the first call's BYE went through the script: alice may call again
            rc, log = _call(tmp, srv.port, "alice", "bob", "third", hangup_after=1.0)
            assert rc == 0, f"{log}\n{srv.output()}"
            assert wait_exit(bob, 15) == 0, bob_log.read_text()


# -------------------------------------------------------------------------------------------- forward.py

def test_forward_follows_a_table_changed_while_the_server_runs(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = workdir
    db = tmp / "forward.db"
    monkeypatch.setenv("FORWARD_DB", str(db))
    bob_log, carol_log = tmp / "bob.log", tmp / "carol.log"
    with _server(tmp, "forward.py", "--auth") as srv:
        bob = start_phone([*_phone(srv.port, "bob"), "answer", "--record", str(tmp / "bob.wav"), "--timeout", "40"],
                          bob_log)
        carol = start_phone([*_phone(srv.port, "carol"), "answer", "--record", str(tmp / "carol.wav"),
                             "--timeout", "40"], carol_log)
        with _running(bob, carol):
            wait_for_text(bob_log, "event=Registered", proc=bob)
            wait_for_text(carol_log, "event=Registered", proc=carol)
            rc, log = _call(tmp, srv.port, "alice", "bob", "to-bob")
            assert rc == 0, f"{log}\n{srv.output()}"
            assert wait_exit(bob, 15) == 0, bob_log.read_text()
            with sqlite3.connect(db) as conn:  # while the server runs: bob's calls go to carol from now on
                conn.execute("INSERT INTO forward VALUES ('bob', 'carol')")
            rc, log = _call(tmp, srv.port, "alice", "bob", "to-carol")
            assert rc == 0, f"{log}\n{srv.output()}"
            assert wait_exit(carol, 15) == 0, carol_log.read_text()
    _heard(tmp / "bob.wav", 1000.0, 0.7 * TALK)
    _heard(tmp / "carol.wav", 1000.0, 0.7 * TALK)
