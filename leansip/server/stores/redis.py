"""Redis binding store: every node keeps a replica of the cluster's bindings; Redis carries the changes.

Theory of operation
-------------------
A :class:`~leansip.server.stores.replica.ReplicaStore`: reads never leave the process (a lookup costs what it
costs with ``--location memory``) and a REGISTER changes the local replica at once and queues the change.  The
shell (:mod:`leansip.io.redislink`) does everything that talks to Redis, off the event loop:

* the queued changes go to Redis in batches, one Lua call per batch (:func:`write_changes`), which writes them
  and publishes the batch to every other node of the cluster, on each node's own channel (a node never gets its
  own batches back: on one node alone nothing is published at all);
* the other nodes apply the batch to their replicas (:meth:`RedisStore.apply_remote`);
* on every (re)connection a node subscribes first, writes what it queued, then reads the whole table
  (:func:`read_all`) and merges it with its replica (:meth:`RedisStore.merge_snapshot`), pushing back what
  Redis lacks: a Redis restarted empty is refilled from the nodes' replicas.

While Redis is unreachable the node keeps serving from its replica and keeps queueing.  The queue holds one
entry per changed binding (a refreshed binding is queued once), bounded by ``max_queue``: past it the queue is
dropped (counted in ``dropped``) and the next sync pushes the node's whole replica instead.

Data model (``prefix`` defaults to ``leansip:``)
-----------------------------------------------
* ``<prefix>b`` -- one hash for the location table: field = ``aor + "\\n" + contact_key`` (neither may contain
  a newline: they come from SIP URIs), value = the binding as JSON (:func:`~leansip.server.location.binding_to_dict`).
  One hash, so a full resync is a few ``HSCAN`` calls.
* ``<prefix>exp`` -- a sorted set of the same fields scored by ``expires_at``: :func:`reap` deletes the lapsed
  entries from Redis (each node expires its own replica by itself; nothing is published for expiry).
* ``<prefix>epoch`` -- an id set by the first node that finds Redis empty.  A node that finds another epoch
  than the one it last synced with knows Redis lost its data (restarted empty, flushed) and pushes its replica.
* ``<prefix>nodes`` -- a set of the node ids that listen; a node adds itself when it (re)connects, the write
  script removes a node whose channel has no subscriber (gone, or reconnecting: it resyncs when it is back).
* ``<prefix>to:<node id>`` -- a node's pub/sub channel: ``sender id + "\\n" + JSON`` of a batch.

Conflicts: two nodes may change the same binding (a UA re-registering through another node).  Every binding
carries ``registered_at`` (the REGISTER's time on its node); a change is applied only over an older or equal
version, and a delete carries the version it deletes, so replicas converge on the newest registration whatever
order the changes arrive in.  A binding deleted through one node while Redis was down and restarted empty can
come back from another node's replica at the refill (there are no tombstones); it lapses at its expiry.

Scripts touch keys they compute from arguments, so this targets a standalone Redis (or a primary with replicas
/ Sentinel), not Redis Cluster sharding.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any, Final

from redis.exceptions import NoScriptError

from leansip.server.location import Binding, binding_from_dict, binding_to_dict
from leansip.server.stores.replica import Batch, ReplicaStore

__all__ = ["RedisKeys", "RedisStore", "parse_message", "plan_merge", "read_all", "reap", "wire", "write_changes"]

#: Bindings reaped per script call, so one reap never blocks Redis for long.
EXPIRE_BATCH = 1000
#: Fields read per HSCAN call of a full resync.
SCAN_COUNT = 1000
#: Changes per Lua call when a resync pushes a whole replica.
PUSH_CHUNK = 2000
#: Seconds of clock difference between nodes tolerated when a resync decides that a binding Redis lacks was
#: deleted elsewhere (older than the sync by more than this) rather than registered while the sync ran.
CLOCK_SLACK = 2.0

# KEYS[1] = bindings hash, KEYS[2] = expiry zset, KEYS[3] = nodes set; ARGV[1] = the batch as JSON:
# [[field, json|false, score], ...], ARGV[2] = node id, ARGV[3] = channel prefix.  Applies the batch and publishes
# it to every other node, forgetting a node nobody listens for.  A delete removes only the version it names or an
# older one: a newer registration through another node that reached Redis first stays (writes are not checked:
# an older version that arrives last is replaced by the newer one at the next resync, which pushes it).
_WRITE_LUA = """
local changes = cjson.decode(ARGV[1])
for _, c in ipairs(changes) do
  if c[2] then
    redis.call('HSET', KEYS[1], c[1], c[2])
    redis.call('ZADD', KEYS[2], c[3], c[1])
  else
    local current = redis.call('HGET', KEYS[1], c[1])
    if current and cjson.decode(current)['registered_at'] <= c[3] then
      redis.call('HDEL', KEYS[1], c[1])
      redis.call('ZREM', KEYS[2], c[1])
    end
  end
end
local message = ARGV[2] .. '\\n' .. ARGV[1]
for _, node in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if node ~= ARGV[2] and redis.call('PUBLISH', ARGV[3] .. node, message) == 0 then
    redis.call('SREM', KEYS[3], node)
  end
end
return #changes
"""

# KEYS[1] = bindings hash, KEYS[2] = expiry zset; ARGV = now, batch limit.  Returns how many were due.
_REAP_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[2], m)
  redis.call('HDEL', KEYS[1], m)
end
return #due
"""


class RedisKeys:
    """The key names of one cluster (``prefix``)."""

    __slots__ = ("bindings", "expiry", "epoch", "nodes", "inboxes")

    def __init__(self, prefix: str = "leansip:") -> None:
        self.bindings = prefix + "b"
        self.expiry = prefix + "exp"
        self.epoch = prefix + "epoch"
        self.nodes = prefix + "nodes"
        self.inboxes = prefix + "to:"

    def inbox(self, node: str) -> str:
        """The channel a node listens on."""
        return self.inboxes + node


class LuaScript:
    """A script run over one dedicated connection (the link's writer thread): EVALSHA, and EVAL (which loads
    it again) after a NOSCRIPT from a restarted Redis.  A plain ``send_command``/``read_response`` pair: redis-py's
    per-command machinery (pool, retries, callbacks) cost ~35 us of CPU a call, three times the call itself."""

    __slots__ = ("source", "sha")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    def __call__(self, conn: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)
            return conn.read_response()
        except NoScriptError:
            conn.send_command("EVAL", self.source, len(keys), *keys, *args)
            return conn.read_response()


def _field(aor: str, key: str) -> str:
    return aor + "\n" + key


_JSON = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options builds one per call


def encode(b: Binding) -> str:
    return _JSON.encode(binding_to_dict(b))


def decode(raw: bytes | str) -> Binding:
    return binding_from_dict(json.loads(raw))


# A change on the wire: [field, binding JSON or false, score]; the score is expires_at for a write (the expiry
# index) and the deleted version (registered_at) for a delete.
Wire = list[Any]


# -- Redis calls (made by the shell's link thread, never on the event loop) ----------------------------
_WRITE: Final = LuaScript(_WRITE_LUA)
_REAP: Final = LuaScript(_REAP_LUA)


def write_changes(conn: Any, keys: RedisKeys, node: str, changes: list[Wire]) -> None:
    """Apply ``changes`` in Redis and publish them to the other nodes, in one script call per :data:`PUSH_CHUNK`
    changes, over the writer's connection ``conn`` (a ``redis.Connection``)."""
    for i in range(0, len(changes), PUSH_CHUNK):
        payload = _JSON.encode(changes[i:i + PUSH_CHUNK])
        _WRITE(conn, [keys.bindings, keys.expiry, keys.nodes], [payload, node, keys.inboxes])


def read_all(client: Any, keys: RedisKeys) -> list[tuple[str, Binding]]:
    """Every binding in Redis with its contact key (HSCAN, :data:`SCAN_COUNT` at a time); corrupt entries are
    skipped."""
    out: list[tuple[str, Binding]] = []
    for field, raw in client.hscan_iter(keys.bindings, count=SCAN_COUNT):
        name = field.decode() if isinstance(field, bytes) else field
        _aor, sep, key = name.partition("\n")
        if not sep:
            continue
        try:
            out.append((key, decode(raw)))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def reap(conn: Any, keys: RedisKeys, now: float) -> int:
    """Delete the lapsed bindings from Redis (every node expires its replica itself); returns how many."""
    total = 0
    while True:
        n = int(_REAP(conn, [keys.bindings, keys.expiry], [repr(float(now)), EXPIRE_BATCH]))
        total += n
        if n < EXPIRE_BATCH:
            return total


#: A change from another node, decoded: (aor, contact key, the binding or None for a delete, the deleted version)
Remote = tuple[str, str, "Binding | None", float]


def parse_message(data: bytes | str, node: str) -> list[Remote]:
    """The changes of a channel message, decoded (in the link's thread, not on the loop); [] for our own
    messages (already in our replica) and for anything that does not parse (corrupt changes are skipped)."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    sender, sep, payload = text.partition("\n")
    if not sep or sender == node:
        return []
    try:
        changes = json.loads(payload)
    except ValueError:
        return []
    out: list[Remote] = []
    for change in changes if isinstance(changes, list) else ():
        try:
            name, raw, score = change
            aor, sep, key = str(name).partition("\n")
            if sep:
                out.append((aor, key, decode(raw) if raw else None, float(score)))
        except (ValueError, KeyError, TypeError):
            continue
    return out


#: (aor, key) -> the version (registered_at) a queued delete removes
Tombs = dict[tuple[str, str], float]
#: a step of a merge plan: (contact key, binding, the replica's binding the plan saw, or None)
Planned = tuple[str, Binding, "Binding | None"]


def wire(batch: Batch, tombs: Tombs) -> list[Wire]:
    """A batch in wire form, for :func:`write_changes` (the writer thread: bindings are immutable once stored)."""
    out: list[Wire] = []
    for (aor, key), b in batch.changes.items():
        if b is not None:
            out.append([_field(aor, key), encode(b), b.expires_at])
        else:
            out.append([_field(aor, key), False, tombs.get((aor, key), 0.0)])
    return out


def plan_merge(snapshot: list[tuple[str, Binding]], local: list[tuple[str, Binding]], *, refill: bool, since: float,
               now: float) -> tuple[list[Planned], list[Planned], list[Wire]]:
    """What a resync changes (pure; the link's thread): ``snapshot`` is Redis's table, ``local`` the replica's
    copy from :meth:`RedisStore.begin_sync`.  Returns (take, stale, push).

    Per binding the newest version (``registered_at``) wins, in both directions: Redis's is taken, ours is
    pushed.  A binding only Redis has is taken.  A binding only the replica has is pushed when ``refill`` (Redis
    lost its data, or our queue overflowed); otherwise Redis is right that it is gone (deleted through another
    node while we were away: stale) unless it is newer than the sync (``since``, less :data:`CLOCK_SLACK`): then
    it came in while the sync ran.  Lapsed bindings are left to expiry on both sides.
    """
    mine = {(b.aor, key): b for key, b in local}
    take: list[Planned] = []
    push: list[Wire] = []
    seen: set[tuple[str, str]] = set()
    for key, rb in snapshot:
        ak = (rb.aor, key)
        seen.add(ak)
        if rb.expires_at <= now:
            continue
        lb = mine.get(ak)
        if lb is None or lb.registered_at < rb.registered_at:
            take.append((key, rb, lb))
        elif lb.registered_at > rb.registered_at:
            push.append([_field(rb.aor, key), encode(lb), lb.expires_at])
    stale: list[Planned] = []
    for key, b in local:
        if (b.aor, key) in seen or b.expires_at <= now:
            continue
        if refill:
            push.append([_field(b.aor, key), encode(b), b.expires_at])
        elif b.registered_at < since - CLOCK_SLACK:
            stale.append((key, b, b))
    return take, stale, push


class RedisStore(ReplicaStore):
    """The node's replica of a Redis-shared location table, and its queue of changes for Redis.

    ``url`` and ``prefix`` name the cluster (the shell's link connects); ``node`` is this process's id in the
    channel (random by default); ``max_queue`` bounds the changes queued while Redis is unreachable.
    """

    __slots__ = ("url", "keys", "node", "max_queue", "dropped", "overflowed", "epoch", "remote_changes",
                 "_tombs", "_inflight_tombs")

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "leansip:", node: str | None = None,
                 max_queue: int = 200_000) -> None:
        super().__init__(durable=False)
        self.url = url
        self.keys = RedisKeys(prefix)
        self.node = node or os.urandom(8).hex()
        self.max_queue = max_queue
        #: changes dropped because the queue was full (the next sync pushes the whole replica instead)
        self.dropped = 0
        #: the queue overflowed since the last sync: push everything
        self.overflowed = False
        #: the Redis epoch this replica last synced with (None: never)
        self.epoch: str | None = None
        #: changes applied from other nodes
        self.remote_changes = 0
        # (aor, key) -> the version (registered_at) a queued delete removes; those of the batch being written
        self._tombs: Tombs = {}
        self._inflight_tombs: Tombs = {}

    # -- local writes --------------------------------------------------------------
    def _changed(self, aor: str, key: str, binding: Binding | None) -> None:
        super()._changed(aor, key, binding)
        if len(self._pending) > self.max_queue:
            self._overflow()

    def remove(self, aor: str, key: str) -> Binding | None:
        """Remove from the replica; the delete of that version is queued for Redis."""
        b = self._mem.remove(aor, key)
        if b is not None:
            self._tombs[(aor, key)] = b.registered_at
            self._changed(aor, key, None)
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor``; the deletes are queued."""
        removed = self._mem.pop_aor(aor)
        for key, b in removed.items():
            self._tombs[(aor, key)] = b.registered_at
            self._changed(aor, key, None)
        return list(removed.values())

    def expire(self, now: float) -> list[Binding]:
        """Reap the replica; nothing is queued (every node expires its own replica; :func:`reap` cleans Redis)."""
        return [b for _, b in self._mem.expire_with_keys(now)]

    # -- batches for the link ------------------------------------------------------
    def take_changes(self) -> tuple[Batch, Tombs] | None:
        """The queued changes as a batch, with the versions its deletes remove (loop thread, O(1): the wire
        form, :func:`wire`, is made by the writer thread), or None."""
        batch = self.take_batch()
        if batch is None:
            return None
        tombs, self._tombs = self._tombs, {}
        self._inflight_tombs = tombs
        return batch, tombs

    def batch_done(self, batch: Batch) -> None:
        """Redis has the batch."""
        super().batch_done(batch)
        self._inflight_tombs = {}

    def batch_failed(self, batch: Batch) -> None:
        """Back in the queue (bounded), newer changes winning, with the versions its deletes remove."""
        super().batch_failed(batch)
        tombs = self._inflight_tombs
        tombs.update(self._tombs)
        self._tombs = tombs
        self._inflight_tombs = {}
        if len(self._pending) > self.max_queue:
            self._overflow()

    def _overflow(self) -> None:
        self.dropped += len(self._pending)
        self._pending.clear()
        self._tombs.clear()
        self.overflowed = True

    def write_batch(self, batch: Batch) -> None:
        """Not used: the link writes :meth:`take_changes`' wire form with its own client."""
        raise NotImplementedError("RedisStore batches are written by leansip.io.redislink")

    def flush(self) -> None:
        """Nothing to do here: the link (:mod:`leansip.io.redislink`) writes the queue, and before it closes."""

    # -- changes from Redis (loop thread) ------------------------------------------
    def apply_remote(self, changes: Iterable[Remote]) -> int:
        """Apply another node's changes (:func:`parse_message`) to the replica, each only over an older or equal
        version; a queued change of ours that one supersedes is dropped.  Returns how many changed the replica."""
        mem = self._mem
        applied = 0
        for aor, key, b, version in changes:
            local = mem.get(aor, key)
            if b is not None:
                if local is not None and local.registered_at > b.registered_at:
                    continue
                mem.put(b, key)
            elif local is not None and local.registered_at <= version:
                mem.remove(aor, key)
            else:
                continue
            self._superseded(aor, key)
            applied += 1
        self.remote_changes += applied
        return applied

    def _superseded(self, aor: str, key: str) -> None:
        """Our queued change of this binding is older than what Redis has: it must not overwrite it."""
        self._pending.pop((aor, key), None)
        self._tombs.pop((aor, key), None)

    # -- resync: the plan is made in the link's thread, applied on the loop in chunks ----------------------
    def begin_sync(self) -> tuple[list[tuple[str, Binding]], bool]:
        """A copy of the replica for :func:`plan_merge` (loop thread; a list of references, no encoding), and
        whether the queue overflowed since the last sync (the plan must then push everything)."""
        overflowed, self.overflowed = self.overflowed, False
        return list(self._mem.bindings()), overflowed

    def apply_merge(self, take: list[Planned], stale: list[Planned]) -> None:
        """One chunk of a plan (loop thread): take Redis's version of a binding, or drop a binding Redis no
        longer has, each only if the replica still holds what the plan saw (no change since, none queued)."""
        mem = self._mem
        pending = self._pending
        for key, b, seen in take:
            if mem.get(b.aor, key) is seen and (b.aor, key) not in pending:
                mem.put(b, key)
                self._superseded(b.aor, key)
        for key, b, seen in stale:
            if mem.get(b.aor, key) is seen and (b.aor, key) not in pending:
                mem.remove(b.aor, key)

    def merge_snapshot(self, snapshot: list[tuple[str, Binding]], *, refill: bool, since: float,
                       now: float) -> list[Wire]:
        """:meth:`begin_sync`, :func:`plan_merge` and :meth:`apply_merge` at once (tests; the link runs the
        plan in its thread and applies it in chunks); returns what Redis must be given."""
        local, overflowed = self.begin_sync()
        take, stale, push = plan_merge(snapshot, local, refill=refill or overflowed, since=since, now=now)
        self.apply_merge(take, stale)
        return push

    def close(self) -> None:
        """Drop the replica (what Redis should have is written by the link before it closes)."""
        self._mem.close()
