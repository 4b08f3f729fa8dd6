"""Writing the location store's batches behind the straight path, and group commit.

:class:`BatchPump` moves a :class:`~leansip.server.stores.replica.ReplicaStore`'s pending changes to its backend,
one batch at a time, in one writer thread: the store calls :meth:`BatchPump.kick` (its ``on_pending`` hook) when
a change is queued and none was, the batch is taken on the loop's next turn (``call_soon``, so every datagram of
the same read burst joins it), written in the thread, and its outcome handed back to the loop.  The changes
that arrive while a batch is written wait for the next one, which starts as soon as this one is done: at low
load each change is written alone (after ``gather`` seconds, when the pump has one), under load the batches grow
and the writes per second stay about one per write time.  Nothing on the event loop ever waits for the backend.

:class:`GroupCommitter` is the pump of a durable SQLite store, plus the replies that wait for it.  Under
``--durability durable`` the core marks a REGISTER's 200 OK with the number of the latest change of the store
(:attr:`leansip.sip.send.Send.after_commit`); the Runtime's dispatch hands it to :meth:`GroupCommitter.hold`,
which sends it at once when that change is already committed and otherwise keeps it until a batch that covers
it is committed, then sends the replies in arrival order.

A retransmission of a held REGISTER is answered by the core from its reply cache with the same :class:`Send`
object; while that object is held the copy is absorbed (counted, not held twice), so the client gets one 200 OK
when the commit is done, and the REGISTER is never processed again.

A batch that fails (disk full, I/O error) goes back into the store's pending changes (newer changes win) and is
retried every ``retry`` seconds; its replies stay held (the clients' retransmissions are absorbed), the failure
is logged once and its recovery once.  The held replies are bounded (``max_held``): past it the oldest is dropped
and counted; its client's retransmission gets it from the reply cache once committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

from leansip.server.stores.replica import Batch, ReplicaStore
from leansip.sip.send import Send

log = logging.getLogger("leansip.io.commit")

__all__ = ["BatchPump", "GroupCommitter"]

#: what the writer thread runs for one batch
Job = Callable[[], object]
#: seconds a durable batch gathers before its commit starts.  A commit's fsync costs the process ~300 us of CPU
#: on the development VM (kernel time, whatever the batch holds): at 1,000 REGISTER/s with no wait, most batches
#: held one or two REGISTERs and a REGISTER cost 216 us of CPU (memory: 60); waiting 2 ms first made it 155 us,
#: for 2 ms more on each REGISTER's answer (p50 0.8 -> 2.9 ms at 500/s). Under heavier load the batches grow
#: on their own, while the previous one commits.
COMMIT_GATHER = 0.002


class BatchPump:
    """Writes ``store``'s batches one at a time in a writer thread named ``name`` (loop thread API).

    ``gather`` > 0 waits that many seconds after the first change before taking the batch: every write costs
    a fixed price (a network round trip, the thread hand-offs) that a batch of one pays per change, so a store
    whose writes nobody waits for (Redis) trades a few milliseconds of propagation for batches that grow with
    the load. 0 takes the batch on the loop's next turn (a durable store, whose replies wait for it)."""

    def __init__(self, store: ReplicaStore, name: str, gather: float = 0.0) -> None:
        self.store = store
        self.gather = gather
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._loop = asyncio.get_running_loop()
        self._writing: Batch | None = None
        self._scheduled = False
        self._closed = False
        #: no batch starts while paused (a link that is down)
        self.paused = False
        # counters (admin page, /metrics)
        self.batches = 0
        self.changes = 0
        self.largest_batch = 0
        self.failures = 0
        store.on_pending = self.kick

    def kick(self) -> None:
        """Start a batch on the loop's next turn, unless one is being written, scheduled, or the pump paused."""
        if self._writing is None and not self._scheduled and not self.paused and not self._closed:
            self._scheduled = True
            if self.gather > 0:
                self._loop.call_later(self.gather, self._start)
            else:
                self._loop.call_soon(self._start)

    def _take(self) -> tuple[Batch, Job] | None:
        """The next batch and the job that writes it (a subclass may write it another way)."""
        batch = self.store.take_batch()
        return None if batch is None else (batch, partial(self.store.write_batch, batch))

    def _start(self) -> None:
        self._scheduled = False
        if self._writing is not None or self.paused or self._closed:
            return
        taken = self._take()
        if taken is None:
            self._idle()
            return
        self._writing, job = taken
        self._pool.submit(job).add_done_callback(self._from_writer)

    def _from_writer(self, future: Future[object]) -> None:
        """In the writer thread: hand the outcome to the loop."""
        try:
            self._loop.call_soon_threadsafe(self._done, future)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    def _done(self, future: Future[object]) -> None:
        batch = self._writing
        self._writing = None
        if batch is None:
            return
        exc = future.exception()
        if exc is not None:
            self.store.batch_failed(batch)
            self.failures += 1
            self._failed(batch, exc)
            return
        self.store.batch_done(batch)
        self.batches += 1
        self.changes += len(batch)
        if len(batch) > self.largest_batch:
            self.largest_batch = len(batch)
        self._written(batch)
        if self.store.pending:
            self.kick()

    # hooks ------------------------------------------------------------------------------
    def _idle(self) -> None:
        """Nothing was pending when a batch was due."""

    def _written(self, batch: Batch) -> None:
        """A batch reached the backend."""

    def _failed(self, batch: Batch, exc: BaseException) -> None:
        """A batch failed; its changes are pending again."""

    # --------------------------------------------------------------------------------------
    def counters(self) -> dict[str, object]:
        return {"pending": self.store.pending, "batches": self.batches, "changes": self.changes,
                "largest_batch": self.largest_batch, "failures": self.failures}

    async def _drain(self) -> None:
        """Stop starting batches and wait for the one being written."""
        self._closed = True
        while self._writing is not None:
            await asyncio.sleep(0.005)


class GroupCommitter(BatchPump):
    """The pump of a durable store: holds replies until their batch is committed and then passes them to
    ``send`` (the Runtime's dispatch)."""

    def __init__(self, store: ReplicaStore, send: Callable[[list[Send]], None], *, max_held: int = 65536,
                 retry: float = 1.0) -> None:
        super().__init__(store, "leansip-commit", COMMIT_GATHER)
        self.send = send
        self.max_held = max_held
        self.retry = retry
        self._held: deque[Send] = deque()  # in the order of their changes, so releasing pops from the left
        self._held_ids: set[int] = set()
        self._failing = False
        self.held_total = 0
        self.absorbed = 0
        self.dropped = 0

    def hold(self, item: Send) -> bool:
        """Keep ``item`` until its change is committed (True), or False when it already is: send it now."""
        if item.after_commit <= self.store.committed:
            return False
        if id(item) in self._held_ids:
            self.absorbed += 1  # the reply cache's answer to a retransmission: the reply is on its way
            return True
        if len(self._held) >= self.max_held:
            self._held_ids.discard(id(self._held.popleft()))
            self.dropped += 1
        self._held.append(item)
        self._held_ids.add(id(item))
        self.held_total += 1
        return True

    @property
    def held(self) -> int:
        """Replies waiting for their commit."""
        return len(self._held)

    def _idle(self) -> None:
        self._release()

    def _written(self, batch: Batch) -> None:
        if self._failing:
            self._failing = False
            log.warning("event=commit_recovered changes=%d held=%d", len(batch), len(self._held))
        self._release()

    def _failed(self, batch: Batch, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.error("event=commit_failed changes=%d held=%d error=%r (retrying every %.1f s)",
                      len(batch), len(self._held), exc, self.retry)
        self._loop.call_later(self.retry, self.kick)

    def _release(self) -> None:
        committed = self.store.committed
        held = self._held
        out: list[Send] = []
        while held and held[0].after_commit <= committed:
            item = held.popleft()
            self._held_ids.discard(id(item))
            out.append(item)
        if out:
            self.send(out)

    def state(self) -> dict[str, object]:
        """Counters for the admin page and /metrics."""
        return {"durability": "durable", **self.counters(), "held": len(self._held), "held_total": self.held_total,
                "absorbed": self.absorbed, "dropped": self.dropped, "failing": self._failing}

    async def close(self) -> None:
        """Finish: wait for the batch being written, commit the rest here, send every held reply that is now
        committed, and stop the writer thread."""
        await self._drain()
        try:
            self.store.flush()
        except Exception as exc:  # noqa: BLE001 - shutting down: say it, the held replies stay unsent
            log.error("event=commit_failed at=shutdown error=%r", exc)
        self._release()
        self._pool.shutdown(wait=True)
