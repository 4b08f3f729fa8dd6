"""No acknowledged registration is lost (``--durability durable``, the default): a REGISTER's 200 OK leaves only
after the SQLite batch holding its binding is committed (group commit, leansip/io/commit.py).

The SIPp test registers distinct users at 2,000/s, SIGKILLs the server in the middle of the load, restarts it on
the same database and checks that every user whose 200 OK SIPp received (read from SIPp's message log) is
registered after the restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from leansip.io.commit import GroupCommitter, PolledCommitter
from leansip.io.diskflush import DiskFlush
from leansip.server.location import Binding, LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores.replica import Batch
from leansip.server.stores.sqlite import SqliteStore
from leansip.sip.send import Send
from tests.conftest import free_tcp_port, free_udp_port, require_program
from tests.integration.helpers import SERVING, ServerProcess

SIPP_REGISTER = Path(__file__).resolve().parents[2] / "bench" / "sipp" / "register.xml"
NOW = 1_000_000.0


def _binding(user: str) -> Binding:
    return Binding(aor=user, contact=f"sip:{user}@192.0.2.1:5060", expires_at=NOW + 600, call_id="c", cseq=1)


class _FlakyStore(SqliteStore):
    """A real SQLite store whose first commit fails (a full disk that is then cleared)."""

    __slots__ = ("fail_next",)

    def __init__(self, path: Path) -> None:
        super().__init__(path, now=NOW, durability="durable")
        self.fail_next = True

    def write_batch(self, batch: Batch) -> None:
        if self.fail_next:
            self.fail_next = False
            raise sqlite3.OperationalError("database or disk is full")
        super().write_batch(batch)


def _stored(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT aor FROM bindings")}


def test_committer_releases_held_replies_after_their_commit(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    store = _FlakyStore(db)
    loc = LocationService(store, key=contact_key)

    async def scenario() -> None:
        sent: list[Send] = []
        arrived = asyncio.Event()

        def send(out: list[Send]) -> None:
            sent.extend(out)
            arrived.set()

        committer = GroupCommitter(store, send, retry=0.01)
        loc.put(_binding("alice"))
        first = Send(b"SIP/2.0 200 OK alice", ("127.0.0.1", 9))
        first.after_commit = loc.write_ticket()
        assert committer.hold(first)
        assert committer.hold(first) and committer.absorbed == 1  # a retransmission's cached answer: absorbed
        loc.put(_binding("bob"))
        second = Send(b"SIP/2.0 200 OK bob", ("127.0.0.1", 9))
        second.after_commit = loc.write_ticket()
        assert committer.hold(second) and committer.held == 2
        while len(sent) < 2:  # the first commit fails, the retry commits both
            await arrived.wait()
            arrived.clear()
            assert _stored(db) >= {b.data.decode().rsplit(" ", 1)[1] for b in sent}  # never before the commit
        assert sent == [first, second] and committer.failures == 1 and committer.held == 0
        assert not committer.hold(first)  # committed now: a late retransmission is answered at once
        await committer.close()

    asyncio.run(scenario())
    assert _stored(db) == {"alice", "bob"}
    store.close()


def test_held_replies_are_bounded(tmp_path: Path) -> None:
    """Past ``max_held`` the oldest held reply is dropped (its client's retransmission gets it from the reply
    cache once committed); the others still go out after their commit."""
    store = SqliteStore(tmp_path / "loc.db", now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)

    async def scenario() -> None:
        sent: list[Send] = []
        done = asyncio.Event()

        def send(out: list[Send]) -> None:
            sent.extend(out)
            done.set()

        committer = GroupCommitter(store, send, max_held=2)
        replies = []
        for user in ("a", "b", "c"):
            loc.put(_binding(user))
            reply = Send(user.encode(), ("127.0.0.1", 9))
            reply.after_commit = loc.write_ticket()
            assert committer.hold(reply)
            replies.append(reply)
        assert committer.held == 2 and committer.dropped == 1
        while len(sent) < 2:
            await done.wait()
            done.clear()
        assert sent == replies[1:] and committer.state()["dropped"] == 1
        await committer.close()

    asyncio.run(scenario())
    assert _stored(tmp_path / "loc.db") == {"a", "b", "c"}  # dropping a reply drops no binding
    store.close()


#: a descriptor number that is never open: fdatasync(-1) fails with EBADF
NOT_A_FD = -1


class _SyncFailsOnce(DiskFlush):
    """A real flush thread whose first sync is of a descriptor that is not open (the kernel says EBADF), as a
    disk that fails once."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self.good_fd = fd
        self.fd = NOT_A_FD

    def start(self, cpus: frozenset[int] | None = None) -> None:
        super().start(cpus)
        self.fd = self.good_fd


def _poll_until(committer: PolledCommitter, done: Callable[[], bool]) -> None:
    """What the polling loop does: poll the committer, yielding while its sync runs, until ``done()``."""
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, committer.state()
        if not committer.poll() and committer.flushing:
            os.sched_yield()


def test_disk_flush_runs_fdatasync_on_a_thread_without_python(tmp_path: Path) -> None:
    with open(tmp_path / "f", "wb") as fh:
        fh.write(b"x" * 100)
        fh.flush()
        flush = DiskFlush(fh.fileno())
        assert flush.poll() and flush.ok  # nothing running
        flush.start(frozenset(os.sched_getaffinity(0)))
        with pytest.raises(RuntimeError):
            flush.start()  # one at a time
        assert flush.wait() and not flush.running and flush.started == 1
        flush.start()
        while not flush.poll():
            os.sched_yield()
        assert flush.ok
        flush.close()
    bad = DiskFlush(NOT_A_FD)
    bad.start()
    assert bad.wait() is False and not bad.ok  # fdatasync's -1 (EBADF) comes back as a failure
    bad.close()


def test_polled_committer_commits_on_the_calling_thread_and_releases_after_the_sync(tmp_path: Path) -> None:
    """serve --bare's committer: the polling loop's poll() commits at once (synchronous=NORMAL), starts the
    WAL's sync, and releases the held replies in a later poll once the sync returned; a failed sync keeps them
    held and the batch is retried; checkpoints run off the polling thread."""
    db = tmp_path / "loc.db"
    store = SqliteStore(db, now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)
    assert store.sync_by_caller()
    assert store._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL: the WAL's sync is ours now

    async def scenario() -> None:
        sent: list[Send] = []
        committer = PolledCommitter(store, sent.extend, retry=0.01, checkpoint_every=2,
                                    flush=_SyncFailsOnce(store.wal_fd()))
        assert not committer.active and not committer.poll()  # nothing to do
        loc.put(_binding("alice"))
        first = Send(b"alice", ("127.0.0.1", 9))
        first.after_commit = loc.write_ticket()
        assert committer.hold(first) and committer.active
        assert committer.poll() and committer.flushing  # committed, its sync started
        assert _stored(db) == {"alice"} and sent == []  # in the database, not yet on disk: still held
        loc.put(_binding("bob"))  # joins the next batch, after this sync
        second = Send(b"bob", ("127.0.0.1", 9))
        second.after_commit = loc.write_ticket()
        assert committer.hold(second)
        _poll_until(committer, lambda: not committer.flushing)  # the first sync fails (EBADF)
        assert sent == [] and committer.failures == 1 and committer.sync_failures == 1 and store.pending == 2
        while len(sent) < 2:  # the retry (after `retry`) commits both and syncs them
            await asyncio.sleep(0.005)
            _poll_until(committer, lambda: not committer.active)
        assert sent == [first, second] and committer.held == 0 and committer.batches == 1
        assert not committer.active and not committer.hold(first)
        await committer.close()  # waits for the checkpoint the two changes asked for
        assert committer.checkpoints == 1 and committer.state()["writer"] == "polling loop"

    asyncio.run(scenario())
    assert _stored(db) == {"alice", "bob"}
    store.close()


def test_polled_committer_failed_commit_keeps_the_replies_and_retries(tmp_path: Path) -> None:
    """A commit the database refuses (another connection holds the write lock: "database is locked") is the
    thread committer's failure path: nothing sent, the changes pending again, retried after ``retry``."""
    db = tmp_path / "loc.db"
    store = SqliteStore(db, now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)
    store._db.execute("PRAGMA busy_timeout=0")  # fail at once instead of waiting 5 s for the lock
    other = sqlite3.connect(db, isolation_level=None)

    async def scenario() -> None:
        sent: list[Send] = []
        committer = PolledCommitter(store, sent.extend, retry=0.01)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held by another writer
        loc.put(_binding("carol"))
        reply = Send(b"carol", ("127.0.0.1", 9))
        reply.after_commit = loc.write_ticket()
        assert committer.hold(reply)
        assert committer.poll()  # tried: refused
        assert committer.failures == 1 and not committer.flushing and not committer.active
        assert sent == [] and store.pending == 1 and committer.state()["failing"] is True
        other.execute("ROLLBACK")
        while not sent:  # the retry timer kicks it again
            await asyncio.sleep(0.005)
            _poll_until(committer, lambda: not committer.active)
        assert sent == [reply] and committer.state()["failing"] is False and committer.batches == 1
        await committer.close()

    asyncio.run(scenario())
    other.close()
    assert _stored(db) == {"carol"}
    store.close()


def test_polled_committer_close_answers_every_held_reply(tmp_path: Path) -> None:
    """Shutdown with a sync running and a change not yet committed: close() waits for the sync, commits the
    rest itself (with its own sync), and sends both replies, in order."""
    db = tmp_path / "loc.db"
    store = SqliteStore(db, now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)

    async def scenario() -> None:
        sent: list[Send] = []
        committer = PolledCommitter(store, sent.extend)
        replies = []
        for user in ("dave", "erin"):
            loc.put(_binding(user))
            reply = Send(user.encode(), ("127.0.0.1", 9))
            reply.after_commit = loc.write_ticket()
            assert committer.hold(reply)
            replies.append(reply)
            if user == "dave":
                assert committer.poll() and committer.flushing  # dave's sync runs; erin's change waits
        assert committer.held == 2 and store.pending == 1
        await committer.close()
        assert sent == replies and committer.held == 0 and not committer.active
        assert not committer.poll()  # closed: nothing more

    asyncio.run(scenario())
    assert _stored(db) == {"dave", "erin"}
    store.close()


def _acknowledged(message_log: Path) -> set[str]:
    """Users whose REGISTER got a 200 OK, from SIPp's ``-trace_msg`` log (the To of each received 200)."""
    text = message_log.read_text(errors="replace")
    users = set()
    for chunk in text.split("message received")[1:]:
        body = chunk.split("\n\n", 1)[-1].lstrip()
        if body.startswith("SIP/2.0 200"):
            match = re.search(r"^To:\s*<sip:([^@>]+)@", body, re.MULTILINE | re.IGNORECASE)
            assert match is not None, body[:400]
            users.add(match.group(1))
    return users


def _admin_bindings(admin_port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/api/bindings", timeout=10) as resp:
        return {b["aor"] for b in json.loads(resp.read())}


@pytest.mark.parametrize("serving", ["loop", "bare"])
def test_no_acknowledged_registration_is_lost_on_sigkill(tmp_path: Path, serving: str,
                                                         record_property: pytest.RecordProperty) -> None:
    """With the event loop (a writer thread commits) and with --bare (the polling loop commits, a thread
    without Python syncs the WAL)."""
    sipp = require_program("sipp")
    total, rate, kill_after = 12000, 2000, 3000
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"d{i};x\n" for i in range(total)))
    db = tmp_path / "var" / "leansip.db"
    args = ["--no-auth", "--mode", "registrar", "--stateless", "--location", "sqlite", "--db", str(db),
            *SERVING[serving]]
    messages = tmp_path / "sipp.messages"
    server = ServerProcess(args, tmp_path, name="first").start()
    cmd = [sipp, f"127.0.0.1:{server.port}", "-sf", str(SIPP_REGISTER), "-inf", str(users), "-m", str(total),
           "-r", str(rate), "-l", "5000", "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin",
           "-recv_timeout", "2000", "-timeout", "40s", "-trace_msg", "-message_file", str(messages)]
    load = subprocess.Popen(cmd, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and load.poll() is None:  # until the load is well under way
            if messages.exists() and messages.read_text(errors="replace").count("\nSIP/2.0 200") >= kill_after:
                break
            time.sleep(0.05)
        server.kill()  # SIGKILL, in the middle of the load
        load.send_signal(signal.SIGUSR1)  # SIPp: stop making calls, let the open ones time out, write the log
        load.wait(timeout=40)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
        server.stop()
    acked = _acknowledged(messages)
    assert len(acked) >= kill_after // 2, (len(acked), server.output())  # the kill came mid-load, not before

    admin = free_tcp_port()
    with ServerProcess([*args, "--admin", f"127.0.0.1:{admin}"], tmp_path, name="second") as again:
        present = _admin_bindings(admin)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/status", timeout=10) as resp:
            store = json.loads(resp.read())["store"]
        assert store["durability"] == "durable" and store["held"] == 0, store
        assert store["writer"] == ("polling loop" if serving == "bare" else "thread"), store
        assert again.alive()
    lost = acked - present
    record_property("acknowledged", len(acked))
    record_property("lost", len(lost))
    print(f"\ndurable ({serving}): {len(acked)} registrations acknowledged before SIGKILL, {len(lost)} lost, "
          f"{len(present)} present after restart")
    assert not lost, sorted(lost)[:20]
