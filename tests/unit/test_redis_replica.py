"""The Redis store's replica logic without Redis: the queue and its bound, other nodes' changes, the resync merge
(the link that carries them over a real redis-server is tested in tests/integration/test_redis_store.py)."""

from __future__ import annotations

import json

from leansip.server.location import Binding, LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores.redis import RedisStore, parse_message, plan_merge, wire

NOW = 1_000_000.0


def mk(aor: str, contact: str, *, at: float = NOW, exp: float = NOW + 600) -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=exp, registered_at=at, call_id="c", cseq=1)


def node(name: str, max_queue: int = 1000) -> tuple[RedisStore, LocationService]:
    store = RedisStore("redis://127.0.0.1:1/0", node=name, max_queue=max_queue)
    return store, LocationService(store, key=contact_key)


def message(sender: str, wire: list[list[object]]) -> bytes:
    return (sender + "\n" + json.dumps(wire)).encode()


def test_changes_are_queued_once_per_binding_and_published_with_the_version_they_delete() -> None:
    store, loc = node("a")
    woken: list[int] = []
    store.on_pending = lambda: woken.append(store.pending)
    loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW))
    loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW + 1))  # a refresh before the write: queued once
    loc.put(mk("bob", "sip:bob@10.0.0.2", at=NOW + 2))
    assert woken == [1] and store.pending == 2  # the writer is woken once, by the first change
    taken = store.take_changes()
    assert taken is not None
    batch, tombs = taken
    assert len(batch) == 2 and store.pending == 0
    assert [(w[0], json.loads(w[1])["registered_at"], w[2]) for w in wire(batch, tombs)] == [
        ("alice\nsip:alice@10.0.0.1", NOW + 1, NOW + 600), ("bob\nsip:bob@10.0.0.2", NOW + 2, NOW + 600)]
    store.batch_done(batch)
    loc.remove("alice", "sip:alice@10.0.0.1")
    taken = store.take_changes()
    assert taken is not None
    deleted = [["alice\nsip:alice@10.0.0.1", False, NOW + 1]]  # deletes the version it saw
    assert wire(*taken) == deleted
    store.batch_failed(taken[0])  # Redis down: back in the queue, with its version
    again = store.take_changes()
    assert again is not None and wire(*again) == deleted
    assert loc.expire(NOW + 601) and store.pending == 0  # expiry is not queued: every node reaps by itself


def test_the_queue_is_bounded_and_an_overflow_pushes_the_whole_replica_at_the_next_sync() -> None:
    store, loc = node("a", max_queue=10)
    for i in range(25):
        loc.put(mk(f"u{i}", f"sip:u{i}@h"))
    assert store.pending <= 10 and store.dropped > 0 and store.count() == 25  # the replica keeps serving
    store.take_changes()
    push = store.merge_snapshot([], refill=False, since=NOW, now=NOW)
    assert sorted(w[0] for w in push) == sorted(f"u{i}\nsip:u{i}@h" for i in range(25)) and not store.overflowed


def test_other_nodes_changes_apply_over_older_versions_only() -> None:
    store, loc = node("b")
    loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW + 5))
    store.take_changes()
    older = json.dumps({"aor": "alice", "contact": "sip:alice@10.0.0.9", "expires_at": NOW + 600,
                        "registered_at": NOW + 1})
    newer_bob = json.dumps({"aor": "bob", "contact": "sip:bob@10.0.0.2", "expires_at": NOW + 600,
                            "registered_at": NOW + 2})
    changes = parse_message(message("a", [["alice\nsip:alice@10.0.0.1", older, NOW + 600],
                                          ["bob\nsip:bob@10.0.0.2", newer_bob, NOW + 600],
                                          ["broken", "{", 0], 7]), "b")
    assert store.apply_remote(changes) == 1  # alice's older copy lost to ours; bob is new; junk is skipped
    assert [b.contact for b in loc.lookup("alice", NOW)] == ["sip:alice@10.0.0.1"]
    assert [b.contact for b in loc.lookup("bob", NOW)] == ["sip:bob@10.0.0.2"]
    # a delete of an older version than ours leaves ours; of ours or newer, removes it
    assert store.apply_remote(parse_message(message("a", [["alice\nsip:alice@10.0.0.1", False, NOW + 4]]), "b")) == 0
    assert store.apply_remote(parse_message(message("a", [["alice\nsip:alice@10.0.0.1", False, NOW + 5]]), "b")) == 1
    assert loc.lookup("alice", NOW) == [] and store.pending == 0  # nothing of it goes back to Redis
    assert parse_message(message("b", [["bob\nsip:bob@10.0.0.2", newer_bob, NOW + 600]]), "b") == []  # our own
    assert parse_message(b"garbage", "b") == [] and parse_message(b"a\n{not json", "b") == []


def test_a_newer_remote_change_replaces_our_queued_older_one() -> None:
    store, loc = node("b")
    loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW + 1))
    newer = json.dumps({"aor": "alice", "contact": "sip:alice@10.0.0.1", "expires_at": NOW + 900,
                        "registered_at": NOW + 3})
    store.apply_remote(parse_message(message("a", [["alice\nsip:alice@10.0.0.1", newer, NOW + 900]]), "b"))
    assert store.pending == 0  # ours would overwrite the newer one in Redis
    [b] = loc.lookup("alice", NOW)
    assert b.expires_at == NOW + 900


def test_merge_with_redis_that_kept_its_data() -> None:
    store, loc = node("a")
    loc.put(mk("kept", "sip:kept@h", at=NOW - 100))  # Redis has an older copy: ours is pushed
    loc.put(mk("gone", "sip:gone@h", at=NOW - 100))  # Redis lacks it: deleted through another node meanwhile
    loc.put(mk("fresh", "sip:fresh@h", at=NOW))  # registered while the sync ran: kept
    loc.put(mk("stale", "sip:stale@h", at=NOW - 100))  # Redis has a newer copy: taken
    store.take_changes()
    loc.put(mk("queued", "sip:queued@h", at=NOW - 100))  # still in our queue: kept, written by the next batch
    loc.put(mk("changed", "sip:changed@h", at=NOW - 100))  # Redis has a newer copy, but ours changes meanwhile
    snapshot = [("sip:kept@h", mk("kept", "sip:kept@h", at=NOW - 200)),
                ("sip:stale@h", mk("stale", "sip:stale@h", at=NOW - 50, exp=NOW + 999)),
                ("sip:other@h", mk("other", "sip:other@h", at=NOW - 10)),
                ("sip:changed@h", mk("changed", "sip:changed@h", at=NOW - 50)),
                ("sip:lapsed@h", mk("lapsed", "sip:lapsed@h", exp=NOW - 1))]
    local, overflowed = store.begin_sync()  # the link copies the replica, plans in its thread...
    take, stale, push = plan_merge(snapshot, local, refill=overflowed, since=NOW, now=NOW)
    assert [w[0] for w in push] == ["kept\nsip:kept@h"]
    loc.put(mk("changed", "sip:changed@h", at=NOW + 1))  # ...while the loop goes on
    store.apply_merge(take, stale)  # ...and applies it in chunks: what changed since the copy is left alone
    assert sorted(loc.aors()) == ["changed", "fresh", "kept", "other", "queued", "stale"]
    [stale_b] = loc.lookup("stale", NOW)
    assert stale_b.expires_at == NOW + 999
    [changed] = loc.lookup("changed", NOW)
    assert changed.registered_at == NOW + 1


def test_merge_refills_a_redis_that_came_back_empty() -> None:
    store, loc = node("a")
    for i in range(3):
        loc.put(mk(f"u{i}", f"sip:u{i}@h", at=NOW - 100))
    loc.put(mk("lapsed", "sip:lapsed@h", exp=NOW - 1))
    store.take_changes()
    push = store.merge_snapshot([], refill=True, since=NOW, now=NOW)
    assert sorted(w[0] for w in push) == ["u0\nsip:u0@h", "u1\nsip:u1@h", "u2\nsip:u2@h"]
    assert loc.count() == 4  # nothing is dropped locally (the lapsed one goes at the next expire)
