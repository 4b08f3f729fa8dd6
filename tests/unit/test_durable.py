"""Durable registrations: the store's change numbers and batches, and the core holding a REGISTER's 200 OK until
its binding is committed (the group committer that releases it is tested in tests/integration/test_durable.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from leansip.server.core import CoreSettings, ServerCore
from leansip.server.location import Binding, LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores import open_store
from leansip.server.stores.sqlite import SqliteStore

NOW = 1_000_000.0
HERE = "127.0.0.1:5060"


def mk(contact: str, exp: float = NOW + 100.0, cseq: int = 1) -> Binding:
    return Binding(aor="alice", contact=contact, expires_at=exp, call_id="c1", cseq=cseq)


def rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT aor, contact FROM bindings").fetchall())


def test_durable_store_counts_changes_and_commits_them_in_batches(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    store = SqliteStore(db, now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)
    assert store.flush_interval == 0 and loc.write_ticket() == 0  # nothing to wait for
    loc.put(mk("sip:alice@10.0.0.1"))
    loc.put(mk("sip:alice@10.0.0.2"))
    assert loc.write_ticket() == 2 and store.pending == 2 and rows(db) == []  # not written: replies must wait
    batch = store.take_batch()
    assert batch is not None and len(batch) == 2 and batch.seq == 2 and store.pending == 0
    loc.remove("alice", "sip:alice@10.0.0.1")  # a change made while the batch is being written
    assert loc.write_ticket() == 3
    store.write_batch(batch)  # what the writer thread does
    store.batch_done(batch)
    assert store.committed == 2 and loc.write_ticket() == 3  # the remove is still pending
    assert rows(db) == [("alice", "sip:alice@10.0.0.1"), ("alice", "sip:alice@10.0.0.2")]
    store.flush()
    assert loc.write_ticket() == 0 and rows(db) == [("alice", "sip:alice@10.0.0.2")]
    assert store.flushes == 2
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: see the module docstring
    store.close()


def test_a_failed_batch_is_retried_under_the_newer_changes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loc.db", now=NOW, durability="durable")
    loc = LocationService(store, key=contact_key)
    loc.put(mk("sip:alice@10.0.0.1", cseq=1))
    batch = store.take_batch()
    assert batch is not None
    loc.put(mk("sip:alice@10.0.0.1", cseq=2))  # newer than the batch's copy
    store.batch_failed(batch)  # the writer's commit raised
    assert store.committed == 0 and loc.write_ticket() == 2
    retry = store.take_batch()
    assert retry is not None and retry.seq == 2
    [b] = [b for b in retry.changes.values() if b is not None]
    assert b.cseq == 2  # the newer change won
    store.write_batch(retry)
    store.batch_done(retry)
    assert loc.write_ticket() == 0
    store.close()


def test_relaxed_store_promises_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loc.db", now=NOW, durability="relaxed")
    loc = LocationService(store, key=contact_key)
    loc.put(mk("sip:alice@10.0.0.1"))
    assert loc.write_ticket() == 0 and store.pending == 1 and store.flush_interval == 0.05
    assert store._db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    store.close()
    with pytest.raises(ValueError, match="durability"):
        open_store("sqlite", path=tmp_path / "x.db", now=NOW, durability="sometimes")


def _core(store: SqliteStore) -> ServerCore:
    settings = CoreSettings(mode="registrar", stateful=False, realm="leansip")
    return ServerCore(settings, LocationService(store, key=contact_key), local_addresses=[("udp", "127.0.0.1", 5060)],
                      secret=b"k" * 32)


def _register(user: str, *, contact: str | None = None, expires: int = 600, cseq: int = 1) -> bytes:
    lines = [f"REGISTER sip:{HERE} SIP/2.0", f"Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-{user}-{cseq}",
             "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag=t{user}", f"To: <sip:{user}@127.0.0.1>",
             f"Call-ID: reg-{user}", f"CSeq: {cseq} REGISTER"]
    if contact is not None:
        lines.append(f"Contact: {contact};expires={expires}")
    return "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()


def test_core_holds_a_register_200_until_its_change_is_committed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loc.db", now=NOW, durability="durable")
    core = _core(store)
    src = ("192.0.2.9", 5070)
    first = _register("alice", contact="<sip:alice@192.0.2.9:5070>")
    [ok] = core.receive(first, src, "udp", NOW)
    assert ok.data.startswith(b"SIP/2.0 200 ") and ok.after_commit == 1
    # the retransmission is answered from the reply cache with the very same (held) reply: not processed again
    [again] = core.receive(first, src, "udp", NOW + 0.5)
    assert again is ok and store.seq == 1
    [ok2] = core.receive(_register("bob", contact="<sip:bob@192.0.2.9:5071>"), src, "udp", NOW)
    assert ok2.after_commit == 2
    store.flush()
    # a query changes nothing and everything it lists is committed: it goes out at once
    [query] = core.receive(_register("alice", cseq=2), src, "udp", NOW)
    assert query.data.startswith(b"SIP/2.0 200 ") and query.after_commit == 0
    # an error answer waits for nothing
    [brief] = core.receive(_register("carol", contact="<sip:carol@192.0.2.9:5072>", expires=5), src, "udp", NOW)
    assert brief.data.startswith(b"SIP/2.0 423 ") and brief.after_commit == 0
    store.close()


def test_core_under_a_relaxed_store_sends_at_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loc.db", now=NOW, durability="relaxed")
    [ok] = _core(store).receive(_register("alice", contact="<sip:alice@192.0.2.9:5070>"), ("192.0.2.9", 5070),
                                "udp", NOW)
    assert ok.data.startswith(b"SIP/2.0 200 ") and ok.after_commit == 0
    store.close()
