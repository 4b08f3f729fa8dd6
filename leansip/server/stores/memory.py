"""In-memory binding store: the hot path of every lookup.

Layout: ``{aor: {contact_key: Binding}}`` for O(1) reads, plus expiry buckets, one per second: the bucket
``ceil(expires_at)`` maps ``(aor, contact_key)`` to the binding, and a min-heap holds the seconds that have a
bucket. A refresh moves the binding from its old bucket to its new one, O(1); :meth:`MemoryStore.expire` pops
the buckets that are due (and looks into the current second's bucket for what is due within it), so its work is
proportional to what expires, never a scan of the store, and no operation ever rebuilds an index.

(The store used to keep one heap entry per put and rebuild the heap when stale entries outnumbered live
ones: amortized O(1), but the rebuild stalled the server 23 ms at 10,000 bindings and 158 ms at 100,000,
every time as many refreshes had come in.)

Not thread-safe: it belongs to the event loop that runs the registrar.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from leansip.server.location import Binding

__all__ = ["MemoryStore"]

_EMPTY: Final[tuple[Binding, ...]] = ()
_LAST_SECOND: Final = 10**15  # expiries past this (or infinite) share one bucket: math.ceil(inf) raises


def _second(expires_at: float) -> int:
    """The expiry bucket of a binding: the first whole second at or after it expires."""
    return math.ceil(expires_at) if expires_at < _LAST_SECOND else _LAST_SECOND


class MemoryStore:
    """Dict-of-dicts bindings with per-second expiry buckets.

    ``heap_ops`` counts pushes and pops of bucket seconds; tests use it to check that expiry work is
    proportional to what expires.
    """

    __slots__ = ("_by_aor", "_buckets", "_seconds", "_count", "heap_ops", "flush_interval")

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        #: second -> {(aor, contact_key): binding} of the bindings that expire within it; an emptied bucket
        #: stays until its second is popped, so each second enters ``_seconds`` once
        self._buckets: dict[int, dict[tuple[str, ...], Binding]] = {}
        self._seconds: list[int] = []
        self._count = 0
        self.heap_ops = 0
        self.flush_interval = 0.0

    # -- reads ---------------------------------------------------------------
    def get(self, aor: str, key: str) -> Binding | None:
        """O(1); the stored binding or ``None``."""
        d = self._by_aor.get(aor)
        return None if d is None else d.get(key)

    def lookup(self, aor: str) -> Iterable[Binding]:
        """A live view of the AOR's bindings (no copy); do not hold it across writes."""
        d = self._by_aor.get(aor)
        return _EMPTY if d is None else d.values()

    def count(self) -> int:
        """Number of stored bindings, O(1)."""
        return self._count

    def aors(self) -> Iterable[str]:
        """A snapshot of the AORs with bindings."""
        return list(self._by_aor)

    def bindings(self) -> Iterable[tuple[str, Binding]]:
        """Every ``(contact_key, binding)``, for stores that persist a snapshot."""
        for d in self._by_aor.values():
            yield from d.items()

    # -- writes --------------------------------------------------------------
    def put(self, binding: Binding, key: str) -> None:
        """Insert or replace; O(1) (O(log n) in the number of distinct expiry seconds for a new second)."""
        aor = binding.aor
        d = self._by_aor.get(aor)
        if d is None:
            d = self._by_aor[aor] = {}
        old = d.get(key)
        # one bucket key for the old bucket and the new one; typed as a tuple of any length, mypyc keeps it one
        # boxed tuple (a tuple[str, str] is a C struct, boxed into a new tuple at every dict operation)
        pair: tuple[str, ...] = (aor, key)
        if old is None:
            self._count += 1
        else:
            self._unindex(pair, old)
        d[key] = binding
        self._index(pair, binding)

    def _index(self, pair: tuple[str, ...], binding: Binding) -> None:
        second = _second(binding.expires_at)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = {}
            heapq.heappush(self._seconds, second)
            self.heap_ops += 1
        bucket[pair] = binding

    def _unindex(self, pair: tuple[str, ...], binding: Binding) -> None:
        bucket = self._buckets.get(_second(binding.expires_at))
        if bucket is not None and bucket.get(pair) is binding:
            del bucket[pair]
        # else: mutated in place since it was indexed; expire() finds it stale in its old bucket

    def remove(self, aor: str, key: str) -> Binding | None:
        """Delete one binding, O(1); its heap entry goes stale."""
        d = self._by_aor.get(aor)
        if d is None:
            return None
        b = d.pop(key, None)
        if b is not None:
            self._count -= 1
            self._unindex((aor, key), b)
            if not d:
                del self._by_aor[aor]
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Delete every binding of ``aor``."""
        return list(self.pop_aor(aor).values())

    def pop_aor(self, aor: str) -> dict[str, Binding]:
        """Delete every binding of ``aor`` and return them by contact key."""
        d = self._by_aor.pop(aor, None)
        if d is None:
            return {}
        self._count -= len(d)
        for key, b in d.items():
            self._unindex((aor, key), b)
        return d

    def expire(self, now: float) -> list[Binding]:
        """Pop heap entries due at ``now``; return the bindings that were still current."""
        return [b for _, b in self.expire_with_keys(now)]

    def expire_with_keys(self, now: float) -> list[tuple[str, Binding]]:
        """Like :meth:`expire` but also returns each binding's contact key
        (persistent stores need it to delete the row)."""
        out: list[tuple[str, Binding]] = []
        seconds = self._seconds
        while seconds and seconds[0] <= now:
            bucket = self._buckets.pop(heapq.heappop(seconds), None)
            self.heap_ops += 1
            if bucket:
                for (aor, key), b in bucket.items():
                    self._reap(aor, key, b, now, out)
        # the second now is in: what expired within it so far (its bucket is popped once the second is over)
        current = self._buckets.get(_second(now))
        if current:
            due = [(k, b) for k, b in current.items() if b.expires_at <= now]
            for (aor, key), b in due:
                del current[(aor, key)]
                self._reap(aor, key, b, now, out)
        return out

    def _reap(self, aor: str, key: str, b: Binding, now: float, out: list[tuple[str, Binding]]) -> None:
        d = self._by_aor.get(aor)
        if d is None or d.get(key) is not b:
            return  # stale: refreshed or removed after it was indexed here
        if b.expires_at > now:
            # mutated in place after put (documented as unsupported, but never lose a binding over it):
            # index it again at its real expiry
            self._index((aor, key), b)
            return
        del d[key]
        self._count -= 1
        if not d:
            del self._by_aor[aor]
        out.append((key, b))

    def next_expiry(self) -> float | None:
        """The end of the earliest second with an expiry bucket (possibly emptied, so possibly early), for a
        timer: bindings in it expire at most a second before it, and lookups hide them until then."""
        return float(self._seconds[0]) if self._seconds else None

    def write_ticket(self) -> int:
        """Nothing is persisted, so no reply waits."""
        return 0

    def flush(self) -> None:
        """Nothing to persist."""

    def close(self) -> None:
        """Drop everything."""
        self._by_aor.clear()
        self._buckets.clear()
        self._seconds.clear()
        self._count = 0
