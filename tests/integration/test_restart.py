"""Registrations survive ``kill -9``: the SQLite store's write-behind flushes every 50 ms (stores/sqlite.py), so
whatever it has committed before the crash is there after a restart on the same ``--db`` (the tests wait until
the database holds the bindings, then kill), and bindings that expired while the server was down are not."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.integration.helpers import ServerProcess, contacts_in, register, status_of

SHORT = 2  # seconds: the registration that lapses while the server is down


def _args(db: Path) -> list[str]:
    return ["--no-auth", "--location", "sqlite", "--db", str(db), "--min-expires", "1", "--stateless"]


def _wait_flushed(db: Path, contacts: set[str], timeout: float = 10.0) -> None:
    """Until the server's write-behind has committed exactly ``contacts`` (``user@host:port``) to ``db``: the crash
    comes after what the server says is durable, whatever the machine's load (read-only, WAL readers do not
    block the writer)."""
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = [row[0] for row in conn.execute("SELECT contact FROM bindings")]
        if len(rows) == len(contacts) and all(any(c in row for row in rows) for c in contacts):
            return
        assert time.monotonic() < deadline, f"not flushed after {timeout} s: {sorted(rows)}"
        time.sleep(0.02)


def test_bindings_survive_sigkill_and_lapsed_ones_are_gone(tmp_path: Path) -> None:
    db = tmp_path / "var" / "leansip.db"
    users = [f"u{i}" for i in range(10)]
    first = ServerProcess(_args(db), tmp_path, name="first")
    with first:
        port = first.port
        for i, user in enumerate(users):
            [reply] = register(port, user, (f"<sip:{user}@127.0.0.1:{20000 + i}>",), expires=600)
            assert status_of(reply) == 200
        # two contacts for one user, one with a q value
        [reply] = register(port, "multi", ("<sip:multi@127.0.0.1:21000>;q=0.5", "<sip:multi@127.0.0.1:21001>"),
                           expires=900)
        assert status_of(reply) == 200
        # removed before the crash: must stay removed
        [reply] = register(port, "u9", ("<sip:u9@127.0.0.1:20009>;expires=0",))
        assert status_of(reply) == 200 and contacts_in(reply) == {}
        [reply] = register(port, "brief", ("<sip:brief@127.0.0.1:22000>",), expires=SHORT)
        assert status_of(reply) == 200
        short_registered = time.time()
        _wait_flushed(db, {f"{user}@127.0.0.1:{20000 + i}" for i, user in enumerate(users[:9])}
                      | {"multi@127.0.0.1:21000", "multi@127.0.0.1:21001", "brief@127.0.0.1:22000"})
        first.kill()
    assert first.proc is not None and first.proc.returncode == -9

    # let the short registration lapse while nothing is running
    time.sleep(max(0.0, short_registered + SHORT + 0.2 - time.time()))

    with ServerProcess(_args(db), tmp_path, name="second") as second:
        for i, user in enumerate(users[:9]):
            [reply] = register(second.port, user)
            assert status_of(reply) == 200
            listed = contacts_in(reply)
            assert list(listed) == [f"sip:{user}@127.0.0.1:{20000 + i}"], (user, listed, second.output())
            assert 590 < listed[f"sip:{user}@127.0.0.1:{20000 + i}"] <= 600
        [reply] = register(second.port, "multi")
        assert list(contacts_in(reply)) == ["sip:multi@127.0.0.1:21001", "sip:multi@127.0.0.1:21000"]
        assert b";q=0.5" in reply
        [reply] = register(second.port, "u9")
        assert contacts_in(reply) == {}
        [reply] = register(second.port, "brief")
        assert status_of(reply) == 200 and contacts_in(reply) == {}, second.output()


def test_registration_right_after_restart_replaces_the_old_one(tmp_path: Path) -> None:
    """After a crash the stored Call-ID/CSeq still apply (RFC 3261 10.3 step 7): a UA that rebooted (new Call-ID)
    replaces its binding, an old CSeq of the stored Call-ID is refused."""
    db = tmp_path / "leansip.db"
    with ServerProcess(_args(db), tmp_path, name="first") as first:
        [reply] = register(first.port, "alice", ("<sip:alice@127.0.0.1:23000>",), expires=600, call_id="boot-1",
                           cseq=5)
        assert status_of(reply) == 200
        _wait_flushed(db, {"alice@127.0.0.1:23000"})
        first.kill()
    with ServerProcess(_args(db), tmp_path, name="second") as second:
        [reply] = register(second.port, "alice", ("<sip:alice@127.0.0.1:23000>",), expires=300, call_id="boot-1",
                           cseq=4)
        assert status_of(reply) >= 400  # out of order for the persisted Call-ID
        [reply] = register(second.port, "alice", ("<sip:alice@127.0.0.1:23000>",), expires=300, call_id="boot-2",
                           cseq=1)
        assert status_of(reply) == 200
        listed = contacts_in(reply)
        assert list(listed) == ["sip:alice@127.0.0.1:23000"] and 290 < listed["sip:alice@127.0.0.1:23000"] <= 300
