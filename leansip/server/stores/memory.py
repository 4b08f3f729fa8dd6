"""In-memory binding store: the hot path of every lookup.

Layout: ``{aor: entry}`` for O(1) reads, where the entry of an AOR with one binding (nearly every AOR: a phone
registers one contact) is that binding (its contact key in ``binding.key``) and that of an AOR with several is
a dict ``{contact_key: binding}``; plus expiry buckets, one per second: the bucket ``ceil(expires_at)`` maps each
binding that expires within that second to its contact key, and a min-heap holds the seconds that have a
bucket. A refresh moves the binding from its old bucket to its new one, O(1); :meth:`MemoryStore.expire` pops
the buckets that are due (and looks into the current second's bucket for what is due within it), so its work is
proportional to what expires, never a scan of the store, and no operation ever rebuilds an index.

Why: the store's own structures were most of a registered user's memory (issue 23's soak holds 100,000): a
dict per AOR is 184 bytes, and a bucket keyed by the binding itself (bindings compare by identity) needs no
``(aor, key)`` tuple, another 72. A contact key equal to the contact (the common case) is kept as the
contact's own string, not a second copy.

(The store used to keep one heap entry per put and rebuild the heap when stale entries outnumbered live
ones: amortized O(1), but the rebuild stalled the server 23 ms at 10,000 bindings and 158 ms at 100,000,
every time as many refreshes had come in.)

Not thread-safe: it belongs to the event loop that runs the registrar.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from leansip.server.location import Binding

__all__ = ["MemoryStore"]

_EMPTY: Final[tuple[Binding, ...]] = ()
_LAST_SECOND: Final = 10**15  # expiries past this (or infinite) share one bucket: math.ceil(inf) raises

#: an AOR's entry: its binding when it has one, {contact key: binding} when it has several
_Entry: TypeAlias = "Binding | dict[str, Binding]"


def _second(expires_at: float) -> int:
    """The expiry bucket of a binding: the first whole second at or after it expires."""
    return math.ceil(expires_at) if expires_at < _LAST_SECOND else _LAST_SECOND


class MemoryStore:
    """Bindings by AOR with per-second expiry buckets.

    ``heap_ops`` counts pushes and pops of bucket seconds; tests use it to check that expiry work is
    proportional to what expires.
    """

    __slots__ = ("_by_aor", "_buckets", "_seconds", "_count", "heap_ops", "flush_interval")

    def __init__(self) -> None:
        self._by_aor: dict[str, _Entry] = {}
        #: second -> {binding: contact key} of the bindings that expire within it; an emptied bucket stays until
        #: its second is popped, so each second enters ``_seconds`` once
        self._buckets: dict[int, dict[Binding, str]] = {}
        self._seconds: list[int] = []
        self._count = 0
        self.heap_ops = 0
        self.flush_interval = 0.0

    # -- reads ---------------------------------------------------------------
    def get(self, aor: str, key: str) -> Binding | None:
        """O(1); the stored binding or ``None``."""
        entry = self._by_aor.get(aor)
        if entry is None:
            return None
        if isinstance(entry, dict):
            return entry.get(key)
        return entry if entry.key == key else None

    def lookup(self, aor: str) -> Iterable[Binding]:
        """The AOR's bindings: a live view when it has several (no copy); do not hold it across writes."""
        entry = self._by_aor.get(aor)
        if entry is None:
            return _EMPTY
        if isinstance(entry, dict):
            return entry.values()
        return (entry,)

    def count(self) -> int:
        """Number of stored bindings, O(1)."""
        return self._count

    def aors(self) -> Iterable[str]:
        """A snapshot of the AORs with bindings."""
        return list(self._by_aor)

    def bindings(self) -> Iterable[tuple[str, Binding]]:
        """Every ``(contact_key, binding)``, for stores that persist a snapshot."""
        for entry in self._by_aor.values():
            if isinstance(entry, dict):
                yield from entry.items()
            else:
                yield entry.key, entry

    # -- writes --------------------------------------------------------------
    def put(self, binding: Binding, key: str) -> None:
        """Insert or replace; O(1) (O(log n) in the number of distinct expiry seconds for a new second)."""
        aor = binding.aor
        if key == binding.contact:
            key = binding.contact  # one string for both (a contact is usually its own key)
        binding.key = key
        by_aor = self._by_aor
        entry = by_aor.get(aor)
        old: Binding | None = None
        if entry is None:
            by_aor[aor] = binding
        elif isinstance(entry, dict):
            old = entry.get(key)
            entry[key] = binding
        elif entry.key == key:
            old = entry
            by_aor[aor] = binding
        else:
            by_aor[aor] = {entry.key: entry, key: binding}
        if old is None:
            self._count += 1
        else:
            self._unindex(old)
        self._index(binding, key)

    def _index(self, binding: Binding, key: str) -> None:
        second = _second(binding.expires_at)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = {}
            heapq.heappush(self._seconds, second)
            self.heap_ops += 1
        bucket[binding] = key

    def _unindex(self, binding: Binding) -> None:
        bucket = self._buckets.get(_second(binding.expires_at))
        if bucket is not None and binding in bucket:
            del bucket[binding]
        # else: mutated in place since it was indexed; expire() finds it stale in its old bucket

    def _drop(self, aor: str, key: str) -> Binding | None:
        """Take the binding of ``(aor, key)`` out of the AOR table (not out of its bucket)."""
        by_aor = self._by_aor
        entry = by_aor.get(aor)
        if entry is None:
            return None
        if isinstance(entry, dict):
            b = entry.pop(key, None)
            if b is not None and len(entry) == 1:
                by_aor[aor] = next(iter(entry.values()))  # back to the binding alone
        else:
            if entry.key != key:
                return None
            del by_aor[aor]
            b = entry
        if b is not None:
            self._count -= 1
        return b

    def remove(self, aor: str, key: str) -> Binding | None:
        """Delete one binding, O(1)."""
        b = self._drop(aor, key)
        if b is not None:
            self._unindex(b)
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Delete every binding of ``aor``."""
        return list(self.pop_aor(aor).values())

    def pop_aor(self, aor: str) -> dict[str, Binding]:
        """Delete every binding of ``aor`` and return them by contact key."""
        entry = self._by_aor.pop(aor, None)
        if entry is None:
            return {}
        d = entry if isinstance(entry, dict) else {entry.key: entry}
        self._count -= len(d)
        for b in d.values():
            self._unindex(b)
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
                for b, key in bucket.items():
                    self._reap(key, b, now, out)
        # the second now is in: what expired within it so far (its bucket is popped once the second is over)
        current = self._buckets.get(_second(now))
        if current:
            due = [(b, key) for b, key in current.items() if b.expires_at <= now]
            for b, key in due:
                del current[b]
                self._reap(key, b, now, out)
        return out

    def _reap(self, key: str, b: Binding, now: float, out: list[tuple[str, Binding]]) -> None:
        if self.get(b.aor, key) is not b:
            return  # stale: refreshed or removed after it was indexed here
        if b.expires_at > now:
            # mutated in place after put (documented as unsupported, but never lose a binding over it):
            # index it again at its real expiry
            self._index(b, key)
            return
        self._drop(b.aor, key)
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
