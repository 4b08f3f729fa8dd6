"""Calls you can see and bill, end to end: ``leansip serve`` (stateful proxy, admin endpoint) with real phones and
SIPp over real sockets, read back through ``/api/calls``, ``/api/cdrs``, ``leansip cdr`` and the SQLite file.

* two leansip phones in a call: ``/api/calls`` shows it while it lasts (caller, callee, answered, the legs), and
  its record has the right caller, callee, who hung up, and a duration within a second of the one the caller's
  log measured;
* 500 SIPp calls: 500 complete records, none left in progress, and they are still there after a ``kill -9``;
* a BYE that never comes: the call ends at ``--call-timeout`` and its record says so;
* a stateless proxy says plainly that it tracks no calls.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import require_program
from tests.integration.admin_server import Server, run_server
from tests.integration.helpers import start_phone, wait_exit, wait_for_text
from tests.integration.sipp_kit import SippServer, run_sipp, scenario

USERS = "alice:alicepw\nbob:bobpw\ncallee:callee\n"


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something true; its value, or a failure naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value!r}")
        time.sleep(0.05)


def _ts(log: Path, event: str) -> float:
    """The time of the first log line of ``event`` (the phone starts each line with its local time)."""
    for line in log.read_text().splitlines():
        if f"event={event}" in line:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", line)
            assert m, line
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise AssertionError(f"no {event} in {log}:\n{log.read_text()}")


def _register_callee(server: Server, uas: SippServer, tmp: Path) -> None:
    reg = run_sipp(server.sip_port, scenario("proxy-register.xml", tmp), tmp,
                   ["-m", "1", "-s", "callee", "-key", "callee_port", str(uas.port)], name="register", timeout=20)
    assert reg.count("SuccessfulCall") == 1, reg


def test_a_call_between_two_phones_is_live_on_the_api_then_billed_right(tmp_path: Path) -> None:
    with run_server(tmp_path, "--stateful", "--auth", "--realm", "test", users=USERS) as server:
        args = ["--server", f"127.0.0.1:{server.sip_port}"]
        bob_log, alice_log = tmp_path / "bob.log", tmp_path / "alice.log"
        bob = start_phone([*args, "--user", "bob", "--password", "bobpw", "answer", "--timeout", "30"], bob_log)
        alice = None
        try:
            wait_for_text(bob_log, "event=Registered")
            alice = start_phone([*args, "--user", "alice", "--password", "alicepw", "call", "bob",
                                 "--hangup-after", "3", "--timeout", "10"], alice_log)

            def answered() -> list[dict[str, Any]]:
                return [c for c in server.get("/api/calls")["calls"] if c["state"] == "answered"]

            (live,) = wait_until(answered, "the call on /api/calls")
            assert (live["caller"], live["callee"]) == ("alice@127.0.0.1", "bob@127.0.0.1"), live
            assert live["caller_transport"] == live["callee_transport"] == "udp"
            assert live["caller_addr"].startswith("127.0.0.1:") and live["callee_addr"].startswith("127.0.0.1:")
            assert live["caller_addr"] != live["callee_addr"]
            status = server.get("/api/status")
            assert status["calls"] == 1 and status["calls_tracked"] is True
            assert wait_exit(alice, 20) == 0, alice_log.read_text()
            assert wait_exit(bob, 10) == 0, bob_log.read_text()
        finally:
            for proc in (alice, bob):
                if proc is not None and proc.poll() is None:
                    proc.kill()
        doc = wait_until(lambda: (d := server.get("/api/cdrs")) and d["total"] and d["cdrs"][0]["end"] and d,
                         "the call's record")
        assert server.get("/api/calls")["calls"] == []
    (record,) = doc["cdrs"]
    assert (record["caller"], record["callee"], record["status"]) == ("alice@127.0.0.1", "bob@127.0.0.1", 200)
    assert (record["end_reason"], record["hangup"]) == ("bye", "caller")
    talked = _ts(alice_log, "CallEnded") - _ts(alice_log, "CallEstablished")
    assert abs(record["duration"] - talked) <= 1.0, (record, talked)
    assert record["duration"] >= 2.0  # --hangup-after 3: not a record of nothing
    # the same record from the command line, after the server stopped
    out = subprocess.run([sys.executable, "-m", "leansip", "cdr", "--db", str(tmp_path / "var" / "cdr.db"),
                          "--user", "bob", "--csv"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    fields = dict(zip(header.split(","), row.split(","), strict=True))
    assert (fields["caller"], fields["hangup"], fields["status"]) == ("alice@127.0.0.1", "caller", "200")


def test_500_sipp_calls_leave_500_complete_records_that_survive_kill_9(tmp_path: Path) -> None:
    require_program("sipp")
    calls = 500
    with run_server(tmp_path, "--stateful", users=USERS) as server:
        with SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, server.sip_port) as uas:
            _register_callee(server, uas, tmp_path)
            result = run_sipp(server.sip_port, scenario("uac-proxy.xml", tmp_path), tmp_path,
                              ["-m", str(calls), "-r", "100", "-s", "callee", "-key", "caller", "alice"],
                              name="uac", timeout=90)
            assert result.count("SuccessfulCall") == calls, result
        wait_until(lambda: server.get("/api/cdrs?limit=1")["total"] == calls, f"{calls} records")
        assert server.get("/api/calls")["calls_in_progress"] == 0
        records = []
        offset: int | None = 0
        while offset is not None:  # page through them as a client would
            page = server.get(f"/api/cdrs?limit=200&offset={offset}")
            records += page["cdrs"]
            offset = page["next_offset"]
        assert len(records) == calls and len({r["call_id"] for r in records}) == calls
        for r in records:
            assert (r["status"], r["end_reason"], r["hangup"], r["caller"]) == (200, "bye", "caller",
                                                                               "alice@127.0.0.1"), r
            assert r["answer"] is not None and r["end"] >= r["answer"] >= r["start"] and r["duration"] >= 0, r
            assert r["callee_addr"] == f"127.0.0.1:{uas.port}", r
        metrics = server.get("/metrics")
        assert f"leansip_calls_answered_total {calls}.0" in metrics
        assert f"leansip_call_setup_seconds_count {calls}.0" in metrics
        assert 'leansip_calls_in_progress{state="answered"} 0.0' in metrics
        # a crash: what was committed stays
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
    db = sqlite3.connect(tmp_path / "var" / "cdr.db")
    (complete,) = db.execute("SELECT COUNT(*) FROM cdrs WHERE end_time IS NOT NULL AND end_reason = 'bye'").fetchone()
    db.close()
    assert complete == calls


def test_a_bye_that_never_comes_ends_the_call_at_the_timeout(tmp_path: Path) -> None:
    require_program("sipp")
    with run_server(tmp_path, "--stateful", "--call-timeout", "2", users=USERS) as server:
        with SippServer(scenario("uas-no-bye.xml", tmp_path), tmp_path, server.sip_port) as uas:
            _register_callee(server, uas, tmp_path)
            result = run_sipp(server.sip_port, scenario("uac-no-bye.xml", tmp_path), tmp_path,
                              ["-m", "1", "-s", "callee", "-key", "caller", "alice"], name="uac", timeout=30)
            assert result.count("SuccessfulCall") == 1, result
            wait_until(lambda: server.get("/api/calls")["calls_in_progress"] == 1, "the call up")
            doc = wait_until(lambda: (d := server.get("/api/cdrs")) and d["total"] and d["cdrs"][0]["end"] and d,
                             "the call to end", timeout=15)
    (record,) = doc["cdrs"]
    assert (record["end_reason"], record["hangup"], record["status"]) == ("timeout", "proxy", 200), record
    # deadlines fall on whole seconds and the tick runs twice a second
    assert 2.0 <= record["duration"] < 4.0, record


def test_a_stateless_proxy_says_it_tracks_no_calls(tmp_path: Path) -> None:
    with run_server(tmp_path, "--stateless", users=USERS) as server:
        calls = server.get("/api/calls")
        assert calls["tracking"] is False and "stateless" in calls["reason"] and calls["calls"] == []
        cdrs = server.get("/api/cdrs")
        assert cdrs["recording"] is False and "stateless" in cdrs["reason"]
        status_doc = server.get("/api/status")
        assert status_doc["calls_tracked"] is False and "stateless" in status_doc["calls_note"]
        status = subprocess.run([sys.executable, "-m", "leansip", "status", "--admin", server.url],
                                capture_output=True, text=True, timeout=30)
        assert "calls: not tracked (stateless proxy" in status.stdout, status.stdout
