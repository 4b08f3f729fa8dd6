"""A memory replica of the bindings whose changes go to a backend behind the straight path.

Theory of operation
-------------------
The SQLite and Redis stores both answer every read from an embedded
:class:`~leansip.server.stores.memory.MemoryStore` and never from their backend, so a lookup costs what it costs
with ``--location memory`` and a slow disk or a slow Redis never stalls a request.  A write changes the replica at
once and records the change in ``_pending``: one entry per ``(aor, contact_key)``, the binding to write or
``None`` to delete it, so a binding refreshed ten times before the backend is written is written once.

The shell (``leansip.io``) moves the changes to the backend in *batches*, off the event loop:

1. :meth:`ReplicaStore.take_batch` (loop thread) takes every pending change as one :class:`Batch`;
2. the backend's ``write_batch`` runs in a writer thread (one SQLite transaction, one Redis pipeline);
3. :meth:`ReplicaStore.batch_done` (loop thread) records the batch as written, or
   :meth:`ReplicaStore.batch_failed` puts its changes back in front of the newer ones for the next try.

Changes are numbered (``seq``); ``committed`` is the number of the last change known to be in the backend.
:meth:`ReplicaStore.write_ticket` is what a reply that reports the current bindings must wait for: a durable
store returns ``seq`` while it is ahead of ``committed`` (the shell holds the reply until then), a store that
promises nothing returns 0.  Only one batch is written at a time (the shell's writer takes the next one when
the last is done), which is what makes ``committed`` exact: a batch holds every change up to its ``seq``.

Not thread-safe: everything but the backend's ``write_batch`` runs on the event loop thread.  A batch handed to
the writer is not touched by the loop again until it comes back, and bindings are immutable once stored
(:mod:`leansip.server.location`), so the writer may read them while the loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from leansip.server.stores.memory import MemoryStore

if TYPE_CHECKING:
    from leansip.server.location import Binding

__all__ = ["Batch", "Changes", "ReplicaStore"]

#: (aor, contact key) -> the binding to write, or None to delete it
Changes = dict[tuple[str, str], "Binding | None"]


class Batch:
    """Changes taken together for one backend write; ``seq`` is the number of the last change they hold."""

    __slots__ = ("changes", "seq")

    def __init__(self, changes: Changes, seq: int) -> None:
        self.changes = changes
        self.seq = seq

    def __len__(self) -> int:
        return len(self.changes)


class ReplicaStore:
    """Reads from memory, writes recorded for a backend; subclasses write the batches (``write_batch``)."""

    __slots__ = ("_mem", "_pending", "seq", "committed", "durable", "flush_interval", "on_pending")

    def __init__(self, *, durable: bool = False, flush_interval: float = 0.0) -> None:
        self._mem = MemoryStore()
        self._pending: Changes = {}
        #: number of the last change made to the replica
        self.seq = 0
        #: number of the last change known to be written to the backend
        self.committed = 0
        #: True: replies wait for their changes to be written (see :meth:`write_ticket`)
        self.durable = durable
        #: seconds between the flushes a write-behind store wants from the server's timer; 0: none
        self.flush_interval = flush_interval
        #: called (on the loop thread) when a change is queued and none was: the shell's writer starts a batch
        self.on_pending: Callable[[], None] | None = None

    # -- reads: memory only ------------------------------------------------------
    def get(self, aor: str, key: str) -> Binding | None:
        """From the replica, O(1)."""
        return self._mem.get(aor, key)

    def lookup(self, aor: str) -> Iterable[Binding]:
        """From the replica, no backend round trip."""
        return self._mem.lookup(aor)

    def count(self) -> int:
        """Bindings in the replica (written to the backend or not)."""
        return self._mem.count()

    def aors(self) -> Iterable[str]:
        """AORs in the replica."""
        return self._mem.aors()

    @property
    def memory(self) -> MemoryStore:
        """The replica that answers every read (the location service reads it directly)."""
        return self._mem

    @property
    def pending(self) -> int:
        """Changes not yet handed to the backend (what a SIGKILL now would lose)."""
        return len(self._pending)

    @property
    def heap_ops(self) -> int:
        """Heap operations of the replica's expiry index."""
        return self._mem.heap_ops

    def write_ticket(self) -> int:
        """The change number a reply showing the current bindings must wait for; 0: send it now."""
        seq = self.seq
        return seq if self.durable and seq > self.committed else 0

    # -- writes ------------------------------------------------------------------
    def _changed(self, aor: str, key: str, binding: Binding | None) -> None:
        pending = self._pending
        wake = None if pending else self.on_pending
        pending[(aor, key)] = binding
        self.seq += 1
        if wake is not None:
            wake()

    def put(self, binding: Binding, key: str) -> None:
        """Store in the replica now; the backend gets it with the next batch."""
        self._mem.put(binding, key)
        self._changed(binding.aor, key, binding)

    def remove(self, aor: str, key: str) -> Binding | None:
        """Remove from the replica now; the backend deletes it with the next batch."""
        b = self._mem.remove(aor, key)
        if b is not None:
            self._changed(aor, key, None)
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor``."""
        removed = self._mem.pop_aor(aor)
        for key in removed:
            self._changed(aor, key, None)
        return list(removed.values())

    def expire(self, now: float) -> list[Binding]:
        """Reap from the replica (O(expired)); the backend deletes them with the next batch."""
        reaped = self._mem.expire_with_keys(now)
        for key, b in reaped:
            self._changed(b.aor, key, None)
        return [b for _, b in reaped]

    # -- batches -------------------------------------------------------------------
    def take_batch(self) -> Batch | None:
        """Every pending change, for one backend write; None when there is nothing to write."""
        if not self._pending:
            return None
        batch = Batch(self._pending, self.seq)
        self._pending = {}
        return batch

    def batch_done(self, batch: Batch) -> None:
        """The backend has the batch: its changes (and every earlier one) are written."""
        if batch.seq > self.committed:
            self.committed = batch.seq

    def batch_failed(self, batch: Batch) -> None:
        """The backend refused the batch: its changes go back under the newer ones, for the next batch."""
        batch.changes.update(self._pending)
        self._pending = batch.changes


    def write_batch(self, batch: Batch) -> None:
        """Write one batch to the backend (in the writer thread); raise when the backend refuses it."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write all pending changes now, on the calling thread (shutdown, tests, a relaxed store's timer).

        On a backend error the changes are kept (newer ones win) and the error propagates, so the next flush
        retries them.
        """
        batch = self.take_batch()
        if batch is None:
            return
        try:
            self.write_batch(batch)
        except BaseException:
            self.batch_failed(batch)
            raise
        self.batch_done(batch)
