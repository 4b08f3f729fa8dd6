"""In-memory binding store: the hot path of every lookup.

Layout: ``{aor: {contact_key: Binding}}`` for O(1) reads, plus a min-heap of
``(expires_at, seq, contact_key, binding)`` entries for expiry.  The heap uses lazy
deletion (as Kamailio's timer lists and asyncio's scheduler do): a refresh or
removal leaves the old entry in the heap, and :meth:`MemoryStore.expire` discards
entries whose binding is no longer the stored one.  So ``put``/``remove`` are
O(log n) and ``expire`` is O(k log n) for k popped entries, never a scan.  Stale
entries are bounded by rebuilding the heap when it grows past twice the live
count (amortized O(1) per put).

Not thread-safe: it belongs to the event loop that runs the registrar.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from leansip.server.location import Binding

__all__ = ["MemoryStore"]

_EMPTY: tuple[Binding, ...] = ()

# Rebuild the heap when stale entries exceed the live ones by this many; the slack
# keeps a small store from rebuilding on every refresh.
_COMPACT_SLACK = 1024


class MemoryStore:
    """Dict-of-dicts bindings with a lazy-deletion expiry heap.

    ``heap_ops`` counts heap pushes and pops; tests use it to check that expiry
    work is proportional to what expires.
    """

    __slots__ = ("_by_aor", "_heap", "_seq", "_count", "heap_ops", "flush_interval")

    def __init__(self) -> None:
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._heap: list[tuple[float, int, str, Binding]] = []
        # Tie-breaker so the heap never compares Binding objects.
        self._seq = itertools.count()
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
        """Insert or replace; O(log n).  The replaced binding's heap entry goes stale."""
        d = self._by_aor.get(binding.aor)
        if d is None:
            d = self._by_aor[binding.aor] = {}
        if key not in d:
            self._count += 1
        d[key] = binding
        heapq.heappush(self._heap, (binding.expires_at, next(self._seq), key, binding))
        self.heap_ops += 1
        if len(self._heap) > 2 * self._count + _COMPACT_SLACK:
            self._compact()

    def remove(self, aor: str, key: str) -> Binding | None:
        """Delete one binding, O(1); its heap entry goes stale."""
        d = self._by_aor.get(aor)
        if d is None:
            return None
        b = d.pop(key, None)
        if b is not None:
            self._count -= 1
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
        return d

    def expire(self, now: float) -> list[Binding]:
        """Pop heap entries due at ``now``; return the bindings that were still current."""
        return [b for _, b in self.expire_with_keys(now)]

    def expire_with_keys(self, now: float) -> list[tuple[str, Binding]]:
        """Like :meth:`expire` but also returns each binding's contact key
        (persistent stores need it to delete the row)."""
        heap = self._heap
        out: list[tuple[str, Binding]] = []
        while heap and heap[0][0] <= now:
            exp, _, key, b = heapq.heappop(heap)
            self.heap_ops += 1
            d = self._by_aor.get(b.aor)
            if d is None or d.get(key) is not b:
                continue  # stale: refreshed or removed since this entry was pushed
            if b.expires_at > now:
                # Mutated in place after put (documented as unsupported, but never lose
                # a binding over it): re-index at its real expiry.
                heapq.heappush(heap, (b.expires_at, next(self._seq), key, b))
                self.heap_ops += 1
                continue
            del d[key]
            self._count -= 1
            if not d:
                del self._by_aor[b.aor]
            out.append((key, b))
        return out

    def _compact(self) -> None:
        """Rebuild the heap from live bindings, dropping stale entries (O(n))."""
        self._heap = [
            (b.expires_at, next(self._seq), key, b) for d in self._by_aor.values() for key, b in d.items()
        ]
        heapq.heapify(self._heap)

    def next_expiry(self) -> float | None:
        """Earliest indexed expiry (possibly stale, so possibly early), for a timer."""
        return self._heap[0][0] if self._heap else None

    def flush(self) -> None:
        """Nothing to persist."""

    def close(self) -> None:
        """Drop everything."""
        self._by_aor.clear()
        self._heap.clear()
        self._count = 0
