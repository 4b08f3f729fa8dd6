"""Location service: bindings, ordering, expiry cost and SQLite persistence (fake clock)."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest

from leansip.server.location import (
    Binding,
    LocationService,
    binding_from_dict,
    binding_to_dict,
    canonical_aor,
    contact_key,
)
from leansip.server.stores import open_store
from leansip.server.stores.memory import MemoryStore
from leansip.server.stores.sqlite import SqliteStore


def mk(
    aor: str = "alice@example.com", contact: str = "sip:alice@10.0.0.1", exp: float = 100.0, **kw: object
) -> Binding:
    fields: dict[str, object] = dict(
        aor=aor,
        contact=contact,
        expires_at=exp,
        call_id="c1",
        cseq=1,
        source=("10.0.0.1", 5060),
        registered_at=0.0,
    )
    fields.update(kw)
    return Binding(**fields)  # type: ignore[arg-type]


# -- contact keys and AORs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:alice@EXAMPLE.com", "SIP:alice@example.COM"),
        ('"Alice" <sip:alice@h;transport=TCP>', "sip:alice@h;transport=tcp"),
        ("<sip:alice@h;lr;transport=udp>", "sip:alice@h;transport=udp;lr"),
        ('"x <y> \\" z" <sip:a@h>', "sip:a@h"),
        ("<sip:a@h>;expires=60;q=0.5", "sip:a@h"),
        ("sip:a@[2001:DB8::1]:5070", "sip:a@[2001:db8::1]:5070"),
        ("sip:a;p=X@h", "sip:a;p=X@H"),
    ],
)
def test_contact_key_equal(a: str, b: str) -> None:
    assert contact_key(a) == contact_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:Alice@h", "sip:alice@h"),  # userinfo is case-sensitive (RFC 3261 19.1.4)
        ("sip:a@h", "sip:a@h:5060"),  # an explicit default port is still different
        ("sip:a@h", "sips:a@h"),
        ("sip:a@h;transport=tcp", "sip:a@h;transport=udp"),
    ],
)
def test_contact_key_different(a: str, b: str) -> None:
    assert contact_key(a) != contact_key(b)


def test_canonical_aor_lowercases_domain_only() -> None:
    assert canonical_aor("Alice@Example.COM") == "Alice@example.com"
    assert canonical_aor("a@b@C") == "a@b@c"


def test_binding_dict_round_trip() -> None:
    b = mk(
        path=["<sip:p1;lr>", "<sip:p2;lr>"],
        instance='"<urn:uuid:x>"',
        reg_id=2,
        received="sip:1.2.3.4:9",
        conn_id="c7",
    )
    assert binding_to_dict(binding_from_dict(binding_to_dict(b))) == binding_to_dict(b)


# -- add / refresh / remove / expire -------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> LocationService:
    if request.param == "memory":
        return LocationService(MemoryStore())
    return LocationService(SqliteStore(tmp_path / "loc.db", now=0.0, flush_interval=0.05))


def test_add_refresh_remove(loc: LocationService) -> None:
    loc.put(mk(exp=100.0, cseq=1))
    assert loc.count() == 1
    # Same contact written differently is the same binding: a refresh replaces it.
    loc.put(mk(contact="<sip:alice@10.0.0.1>", aor="alice@EXAMPLE.com", exp=200.0, cseq=2))
    assert loc.count() == 1
    (b,) = loc.lookup("alice@example.com", now=150.0)
    assert b.cseq == 2 and b.expires_at == 200.0 and b.contact == "<sip:alice@10.0.0.1>"
    got = loc.get("alice@Example.com", "sip:alice@10.0.0.1")
    assert got is b
    assert loc.remove("alice@example.com", "sip:alice@10.0.0.1") is b
    assert loc.remove("alice@example.com", "sip:alice@10.0.0.1") is None
    assert loc.lookup("alice@example.com", now=0.0) == [] and loc.count() == 0
    assert loc.aors() == []


def test_remove_all(loc: LocationService) -> None:
    for i in range(3):
        loc.put(mk(contact=f"sip:a@h{i}"))
    loc.put(mk(aor="bob@example.com", contact="sip:b@h"))
    assert len(loc.remove_all("alice@example.com")) == 3
    assert loc.remove_all("alice@example.com") == []
    assert loc.aors() == ["bob@example.com"] and loc.count() == 1


def test_lookup_orders_by_q_then_newest(loc: LocationService) -> None:
    loc.put(mk(contact="sip:a@low", q=0.1, registered_at=5.0))
    loc.put(mk(contact="sip:a@old", q=0.8, registered_at=1.0))
    loc.put(mk(contact="sip:a@new", q=0.8, registered_at=3.0))
    loc.put(mk(contact="sip:a@top", q=1.0, registered_at=0.0))
    got = [b.contact for b in loc.lookup("alice@example.com", now=10.0)]
    assert got == ["sip:a@top", "sip:a@new", "sip:a@old", "sip:a@low"]


def test_lookup_hides_lapsed_before_expire_runs(loc: LocationService) -> None:
    loc.put(mk(contact="sip:a@1", exp=10.0))
    loc.put(mk(contact="sip:a@2", exp=20.0))
    assert [b.contact for b in loc.lookup("alice@example.com", now=10.0)] == ["sip:a@2"]
    # get() still sees it: the registrar needs its Call-ID/CSeq.
    assert loc.get("alice@example.com", "sip:a@1") is not None
    assert loc.count() == 2


def test_expire(loc: LocationService) -> None:
    loc.put(mk(contact="sip:a@1", exp=10.0))
    loc.put(mk(contact="sip:a@2", exp=20.0))
    loc.put(mk(aor="bob@x", contact="sip:b@1", exp=10.0))
    assert loc.expire(now=9.99) == []
    gone = loc.expire(now=10.0)
    assert sorted(b.contact for b in gone) == ["sip:a@1", "sip:b@1"]
    assert loc.expire(now=10.0) == []
    assert loc.aors() == ["alice@example.com"] and loc.count() == 1
    assert [b.contact for b in loc.all_bindings(now=15.0)] == ["sip:a@2"]


def test_refreshed_binding_is_not_expired_at_old_time(loc: LocationService) -> None:
    loc.put(mk(exp=10.0))
    loc.put(mk(exp=60.0))  # refresh
    assert loc.expire(now=30.0) == []
    assert len(loc.lookup("alice@example.com", now=30.0)) == 1
    assert len(loc.expire(now=60.0)) == 1


def test_removed_then_readded_expires_at_new_time(loc: LocationService) -> None:
    loc.put(mk(exp=10.0))
    loc.remove("alice@example.com", "sip:alice@10.0.0.1")
    loc.put(mk(exp=50.0))
    assert loc.expire(now=10.0) == []
    assert [b.expires_at for b in loc.expire(now=50.0)] == [50.0]


def test_expires_in() -> None:
    b = mk(exp=100.0)
    assert b.expires_in(40.5) == 59 and b.expires_in(100.0) == 0 and b.expires_in(500.0) == 0


# -- expiry cost ----------------------------------------------------------------------


def test_expire_cost_is_proportional_to_what_expires() -> None:
    store = MemoryStore()
    loc = LocationService(store)
    rng = random.Random(7)
    n = 100_000
    for i in range(n):
        loc.put(mk(aor=f"user{i}@x", contact=f"sip:user{i}@h", exp=1000.0 + rng.random() * 3600.0))
    # Exactly 10 more bindings expire just before the rest.
    for i in range(10):
        loc.put(mk(aor=f"early{i}@x", contact=f"sip:e{i}@h", exp=500.0 + i))
    ops = store.heap_ops
    assert loc.expire(now=400.0) == []
    assert store.heap_ops == ops  # nothing due: not a single pop
    gone = loc.expire(now=600.0)
    assert len(gone) == 10
    assert store.heap_ops - ops == 10
    assert loc.count() == n


def test_refreshes_leave_nothing_stale() -> None:
    """A refresh moves its binding between expiry buckets: every binding is indexed exactly once, whatever the
    number of refreshes (no stale entries, so nothing ever has to be rebuilt)."""
    store = MemoryStore()
    loc = LocationService(store)
    for i in range(100):
        loc.put(mk(aor=f"u{i}@x", contact="sip:u@h", exp=10.0))
    for r in range(200):  # every binding refreshed 200 times
        for i in range(100):
            loc.put(mk(aor=f"u{i}@x", contact="sip:u@h", exp=10.0 + r))
    assert sum(len(bucket) for bucket in store._buckets.values()) == store.count() == 100
    assert len(store._seconds) == len(store._buckets) == 200  # one per second used, emptied ones until due
    assert len(loc.expire(now=10.0 + 198)) == 0
    assert len(store._buckets) == 1
    assert len(loc.expire(now=10.0 + 199)) == 100
    assert store._buckets == {} and store._seconds == [] and store.count() == 0


def test_expiry_within_a_second_is_exact() -> None:
    """Bindings are bucketed by whole second, but expire(now) returns exactly those with expires_at <= now."""
    loc = LocationService(store := MemoryStore())
    for i, exp in enumerate((10.2, 10.5, 10.9, 11.0, 11.1)):
        loc.put(mk(aor=f"u{i}@x", contact="sip:u@h", exp=exp))
    assert store.next_expiry() == 11.0
    assert loc.expire(now=10.1) == []
    assert sorted(b.expires_at for b in loc.expire(now=10.5)) == [10.2, 10.5]
    assert [b.expires_at for b in loc.expire(now=10.95)] == [10.9]
    assert [b.expires_at for b in loc.expire(now=11.0)] == [11.0]
    assert store.next_expiry() == 12.0
    loc.remove("u4@x", "sip:u@h")
    assert loc.expire(now=20.0) == [] and store.count() == 0


def test_in_place_mutation_is_not_lost() -> None:
    loc = LocationService(MemoryStore())
    b = mk(exp=10.0)
    loc.put(b)
    b.expires_at = 30.0  # unsupported, but must not drop the binding early
    assert loc.expire(now=10.0) == []
    assert loc.expire(now=30.0) == [b]


# -- SQLite persistence ---------------------------------------------------------------


def test_sqlite_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    loc = LocationService(SqliteStore(db, now=0.0, flush_interval=0.05))
    full = mk(contact="sip:a@keep", exp=500.0, q=0.7, path=["<sip:p;lr>"], instance='"<urn:uuid:1>"', reg_id=1,
              received="sip:198.51.100.1:4000", conn_id="tcp:42", transport="tcp", user_agent="ua/1")  # fmt: skip
    loc.put(full)
    loc.put(mk(contact="sip:a@lapses", exp=50.0))
    loc.put(mk(aor="gone@x", contact="sip:g@h", exp=500.0))
    loc.remove("gone@x", "sip:g@h")
    assert loc.store.pending == 3  # type: ignore[attr-defined]
    loc.flush()
    assert loc.store.pending == 0  # type: ignore[attr-defined]
    # Simulate kill -9: no close(), a new object opens the same file later.
    restarted = LocationService(SqliteStore(db, now=100.0))
    got = restarted.lookup("alice@example.com", now=100.0)
    assert [b.contact for b in got] == ["sip:a@keep"]
    # connection ids are process-local; bindings compare by identity, so by their stored form
    assert binding_to_dict(got[0]) == binding_to_dict(dataclasses.replace(full, conn_id=None))
    assert restarted.count() == 1 and restarted.aors() == ["alice@example.com"]
    # The expired row was purged from disk, not only hidden.
    rows = sqlite3.connect(db).execute("SELECT contact FROM bindings").fetchall()
    assert rows == [("sip:a@keep",)]
    restarted.close()
    loc.close()


def test_sqlite_unflushed_writes_are_the_loss_window(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    loc = LocationService(SqliteStore(db, now=0.0, flush_interval=0.1))
    loc.put(mk(contact="sip:a@flushed"))
    loc.flush()
    loc.put(mk(contact="sip:a@pending"))
    other = LocationService(SqliteStore(db, now=0.0))  # what a restart after SIGKILL would see
    assert [b.contact for b in other.lookup("alice@example.com", 0.0)] == ["sip:a@flushed"]
    other.close()
    loc.close()  # close flushes
    again = LocationService(SqliteStore(db, now=0.0))
    assert len(again.lookup("alice@example.com", 0.0)) == 2
    again.close()


def test_sqlite_batches_coalesce_into_one_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "loc.db", now=0.0, flush_interval=0.05)
    loc = LocationService(store)
    for i in range(50):
        loc.put(mk(exp=100.0 + i, cseq=i))  # the same binding refreshed 50 times
    loc.put(mk(contact="sip:x@y"))
    assert store.pending == 2 and store.flushes == 0
    loc.flush()
    loc.flush()  # nothing pending: no empty transaction
    assert store.flushes == 1
    store.close()
    reopened = SqliteStore(tmp_path / "loc.db", now=0.0)
    b = reopened.get("alice@example.com", contact_key("sip:alice@10.0.0.1"))
    assert b is not None and b.cseq == 49
    reopened.close()


def test_sqlite_interval_zero_writes_synchronously(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    loc = LocationService(SqliteStore(db, now=0.0, flush_interval=0))
    loc.put(mk(contact="sip:a@1", exp=10.0))
    loc.put(mk(contact="sip:a@2", exp=20.0))
    loc.put(mk(contact="sip:a@3", exp=30.0))
    loc.remove("alice@example.com", "sip:a@3")
    assert len(loc.expire(now=10.0)) == 1
    assert loc.store.pending == 0  # type: ignore[attr-defined]
    rows = sqlite3.connect(db).execute("SELECT contact FROM bindings").fetchall()
    assert rows == [("sip:a@2",)]
    loc.remove_all("alice@example.com")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM bindings").fetchone() == (0,)
    loc.close()


def test_sqlite_expire_and_remove_all_reach_disk_after_flush(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    loc = LocationService(SqliteStore(db, now=0.0, flush_interval=1.0))
    loc.put(mk(contact="sip:a@1", exp=10.0))
    loc.put(mk(contact="sip:a@2", exp=1000.0))
    loc.put(mk(aor="bob@x", contact="sip:b@1", exp=1000.0))
    loc.flush()
    loc.expire(now=10.0)
    loc.remove_all("bob@x")
    loc.flush()
    rows = sqlite3.connect(db).execute("SELECT aor, contact FROM bindings").fetchall()
    assert rows == [("alice@example.com", "sip:a@2")]
    loc.close()


def test_sqlite_uses_wal_and_rejects_negative_interval(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    SqliteStore(db, now=0.0).close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(ValueError):
        SqliteStore(db, now=0.0, flush_interval=-1)


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    s = open_store("sqlite", path=tmp_path / "x.db", now=0.0, flush_interval=0.2)
    assert isinstance(s, SqliteStore) and s.flush_interval == 0.2
    s.close()
    with pytest.raises(ValueError, match="unknown location store"):
        open_store("mongo")


class _FailingDb:
    """Wraps a sqlite3 connection and fails the next executemany (disk full, locked...)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.fail = True

    def execute(self, *a: object) -> object:
        return self.db.execute(*a)  # type: ignore[arg-type]

    def executemany(self, *a: object) -> object:
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.executemany(*a)  # type: ignore[arg-type]

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def close(self) -> None:
        self.db.close()


def test_sqlite_failed_flush_keeps_the_batch(tmp_path: Path) -> None:
    db = tmp_path / "loc.db"
    store = SqliteStore(db, now=0.0, flush_interval=0.05)
    loc = LocationService(store)
    loc.put(mk(contact="sip:a@1", cseq=1))
    store._db = _FailingDb(store._db)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        loc.flush()
    loc.put(mk(contact="sip:a@1", cseq=2))  # newer change made while the batch was out
    loc.put(mk(contact="sip:a@2"))
    assert store.pending == 2
    loc.flush()  # retry succeeds
    loc.close()
    again = SqliteStore(db, now=0.0)
    b = again.get("alice@example.com", contact_key("sip:a@1"))
    assert b is not None and b.cseq == 2 and again.count() == 2
    again.close()


def test_bare_user_aor_keeps_its_case() -> None:
    """With use_domain off the AOR is the user part alone, which RFC 3261 19.1.4 compares case-sensitively."""
    from leansip.server.location import canonical_aor

    assert canonical_aor("Alice") == "Alice"
    assert canonical_aor("Alice@Example.COM") == "Alice@example.com"


def test_a_custom_contact_key_is_used_for_every_read_and_write(loc: LocationService) -> None:
    """The direct calls on a MemoryStore (and SqliteStore's memory) must not bypass a non-default key."""
    service = LocationService(loc.store, key=lambda contact: contact.lower())
    service.put(mk(contact="sip:A@Host", exp=100.0, cseq=1))
    service.put(mk(contact="sip:a@host", exp=100.0, cseq=2))  # the same binding under this key: replaced
    assert [b.cseq for b in service.lookup("alice@example.com", now=0.0)] == [2]
    got = service.get("alice@example.com", "SIP:A@HOST")
    assert got is not None and got.cseq == 2
    assert service.remove("alice@example.com", "Sip:a@host") is not None and service.count() == 0
