"""Redis binding store, shared by a cluster of leansip nodes.

Data model (``prefix`` defaults to ``leansip:``)
-----------------------------------------------
* ``<prefix>loc:<aor>`` -- a hash per AOR: field = contact key, value = the binding
  as JSON (:func:`~leansip.server.location.binding_to_dict`).
* ``<prefix>exp`` -- one sorted set for the whole location table: member =
  ``aor + "\\n" + contact_key`` (neither may contain a newline: they come from
  SIP URIs), score = ``expires_at``.  It is the expiry index: :meth:`expire` takes
  the members with score <= now, which costs O(log n + expired).

Every write keeps the hash and the sorted set in step inside one MULTI/EXEC
transaction or one Lua script, so any node sees either the old or the new state.
Expiry runs as a Lua script, atomically, so when several nodes call
:meth:`expire` at the same moment each lapsed binding is reaped (and reported)
by exactly one of them.  Redis key TTLs are deliberately not used: ``expires_at``
comes from the SIP server's clock, not Redis's, and the sorted set already drives
expiry; every node runs :meth:`expire` from its timer.

There is no local read cache, on purpose: a node must see registrations made
through the other nodes, so every ``lookup`` is one round trip (``HVALS``).
Scripts touch keys they compute from arguments, so this targets a standalone
Redis (or a primary with replicas / Sentinel), not Redis Cluster sharding.

Errors: ``redis.RedisError`` (connection refused, timeout) propagates to the
caller, which answers 500 / 480 rather than pretending the user is offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from leansip.server.location import Binding, binding_from_dict, binding_to_dict

__all__ = ["RedisStore"]

# KEYS[1] = expiry zset; ARGV = now, batch limit, hash key prefix.
# Returns a flat list: contact_key, json, contact_key, json, ...
_EXPIRE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local p = string.find(m, '\\n', 1, true)
  if p then
    local h = ARGV[3] .. string.sub(m, 1, p - 1)
    local k = string.sub(m, p + 1)
    local v = redis.call('HGET', h, k)
    if v then
      redis.call('HDEL', h, k)
      out[#out + 1] = k
      out[#out + 1] = v
    end
  end
end
out[#out + 1] = #due
return out
"""

# KEYS[1] = the AOR's hash, KEYS[2] = expiry zset; ARGV[1] = aor.
_REMOVE_ALL_LUA = """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
for i = 1, #all, 2 do
  redis.call('ZREM', KEYS[2], ARGV[1] .. '\\n' .. all[i])
end
return all
"""

#: Bindings reaped per script call, so one expire() never blocks Redis for long.
EXPIRE_BATCH = 1000


def _decode(raw: bytes | str) -> Binding:
    return binding_from_dict(json.loads(raw))


def _encode(b: Binding) -> str:
    return json.dumps(binding_to_dict(b), separators=(",", ":"))


class RedisStore:
    """Bindings in Redis; see the module docstring for the data model.

    Pass ``url`` (``redis://host:port/db``) or a ready ``client``.  Writes are
    synchronous (``flush_interval`` is 0), so ``flush`` has nothing to do.
    """

    __slots__ = ("_r", "_prefix", "_loc", "_exp", "_expire_script", "_remove_all_script", "flush_interval")

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "leansip:",
        client: redis.Redis | None = None,
        socket_timeout: float = 2.0,
    ) -> None:
        self._r: redis.Redis = (
            client
            if client is not None
            else redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        )
        self._prefix = prefix
        self._loc = prefix + "loc:"
        self._exp = prefix + "exp"
        self._expire_script: Any = self._r.register_script(_EXPIRE_LUA)
        self._remove_all_script: Any = self._r.register_script(_REMOVE_ALL_LUA)
        self.flush_interval = 0.0

    def _member(self, aor: str, key: str) -> str:
        return aor + "\n" + key

    # -- reads ---------------------------------------------------------------
    def get(self, aor: str, key: str) -> Binding | None:
        """One ``HGET``."""
        raw = self._r.hget(self._loc + aor, key)
        return None if raw is None else _decode(raw)

    def lookup(self, aor: str) -> Iterable[Binding]:
        """One ``HVALS``: every node's bindings of ``aor``, expired ones included."""
        return [_decode(v) for v in self._r.hvals(self._loc + aor)]

    def count(self) -> int:
        """``ZCARD`` of the expiry index (one member per binding)."""
        return int(self._r.zcard(self._exp))

    def aors(self) -> Iterable[str]:
        """AORs found by ``SCAN`` (admin view; O(keys), not for the hot path)."""
        n = len(self._loc)
        out = []
        for k in self._r.scan_iter(match=self._loc + "*", count=1000):
            name = k.decode() if isinstance(k, bytes) else k
            out.append(name[n:])
        return out

    # -- writes --------------------------------------------------------------
    def put(self, binding: Binding, key: str) -> None:
        """``HSET`` + ``ZADD`` in one transaction; last writer wins across nodes."""
        if "\n" in binding.aor or "\n" in key:
            raise ValueError("AOR and contact key must not contain a newline")
        p = self._r.pipeline(transaction=True)
        p.hset(self._loc + binding.aor, key, _encode(binding))
        p.zadd(self._exp, {self._member(binding.aor, key): binding.expires_at})
        p.execute()

    def remove(self, aor: str, key: str) -> Binding | None:
        """``HGET`` + ``HDEL`` + ``ZREM`` in one transaction; the removed binding."""
        p = self._r.pipeline(transaction=True)
        p.hget(self._loc + aor, key)
        p.hdel(self._loc + aor, key)
        p.zrem(self._exp, self._member(aor, key))
        raw, _, _ = p.execute()
        return None if raw is None else _decode(raw)

    def remove_all(self, aor: str) -> list[Binding]:
        """Atomically delete the AOR's hash and its expiry members."""
        flat = self._remove_all_script(keys=[self._loc + aor, self._exp], args=[aor])
        return [_decode(flat[i + 1]) for i in range(0, len(flat), 2)]

    def expire(self, now: float) -> list[Binding]:
        """Reap bindings due at ``now`` in batches of :data:`EXPIRE_BATCH`."""
        out: list[Binding] = []
        while True:
            flat = self._expire_script(keys=[self._exp], args=[repr(float(now)), EXPIRE_BATCH, self._loc])
            popped = int(flat[-1])
            out.extend(_decode(flat[i + 1]) for i in range(0, len(flat) - 1, 2))
            if popped < EXPIRE_BATCH:
                return out

    def flush(self) -> None:
        """Writes are already in Redis."""

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()
