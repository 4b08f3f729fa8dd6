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

from leansip.io.affinity import helper_thread, pinned_cpu
from leansip.io.diskflush import DiskFlush, current_cpu
from leansip.server.stores.replica import Batch, ReplicaStore
from leansip.server.stores.sqlite import SqliteStore
from leansip.sip.send import Send

log = logging.getLogger("leansip.io.commit")

__all__ = ["BatchPump", "GroupCommitter", "PolledCommitter"]

#: what the writer thread runs for one batch
Job = Callable[[], object]
#: seconds a durable batch gathers before its commit starts.  A commit's fsync costs the process ~300 us of CPU
#: on the development VM (kernel time, whatever the batch holds): at 1,000 REGISTER/s with no wait, most batches
#: held one or two REGISTERs and a REGISTER cost 216 us of CPU (memory: 60); waiting 2 ms first made it 155 us,
#: for 2 ms more on each REGISTER's answer (p50 0.8 -> 2.9 ms at 500/s). Under heavier load the batches grow
#: on their own, while the previous one commits.
COMMIT_GATHER = 0.002
#: changes committed by the polled committer after which it has the WAL checkpointed (SQLite's own automatic
#: checkpoint comes every 1,000 pages; a change writes about one)
CHECKPOINT_CHANGES = 1000


class BatchPump:
    """Writes ``store``'s batches one at a time in a writer thread named ``name`` (loop thread API).

    ``gather`` > 0 waits that many seconds after the first change before taking the batch: every write costs
    a fixed price (a network round trip, the thread hand-offs) that a batch of one pays per change, so a store
    whose writes nobody waits for (Redis) trades a few milliseconds of propagation for batches that grow with
    the load. 0 takes the batch on the loop's next turn (a durable store, whose replies wait for it)."""

    def __init__(self, store: ReplicaStore, name: str, gather: float = 0.0) -> None:
        self.store = store
        self.gather = gather
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=helper_thread)
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
        if self._finish(batch, future.exception()) and self.store.pending:
            self.kick()

    def _finish(self, batch: Batch, exc: BaseException | None) -> bool:
        """Record how ``batch``'s write ended (None: written); True when it was."""
        if exc is not None:
            self.store.batch_failed(batch)
            self.failures += 1
            self._failed(batch, exc)
            return False
        self.store.batch_done(batch)
        self.batches += 1
        self.changes += len(batch)
        if len(batch) > self.largest_batch:
            self.largest_batch = len(batch)
        self._written(batch)
        return True

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
        return {"durability": "durable", "writer": "thread", **self.counters(), "held": len(self._held),
                "held_total": self.held_total, "absorbed": self.absorbed, "dropped": self.dropped,
                "failing": self._failing}

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


class PolledCommitter(GroupCommitter):
    """``serve --bare``'s group committer: the polling loop does the work, no writer thread on the way.

    The polling thread never sleeps, so a writer thread pays for every hand-off: it waits for the CPU (the
    poller holds its core for whole scheduler slices) and for the GIL (dropped in every ``poll(0)``, taken
    back before a waiting thread wakes), and its result waits for the event loop's next turn. Measured at 200
    REGISTER/s, a held 200 OK waited 9.4 ms at p50 in bare mode pinned to a core (2.7 ms beside the event
    loop); polled as below, 0.7 ms (bench/analysis.md). Here the :class:`~leansip.io.bareloop.BareLoop` calls :meth:`poll` in each
    pass: it commits the pending changes at once on the polling thread (``synchronous=NORMAL``: the WAL is
    written, not synced; tens of microseconds), starts the WAL's sync on a thread that runs no Python
    (:class:`~leansip.io.diskflush.DiskFlush`, placed on the poller's CPU, which idle passes yield to it),
    and in a later pass, when the sync has returned, counts the batch as committed and sends its held replies
    from the polling thread. The changes that arrive while a sync runs make the next batch (group commit,
    with no gather wait). Checkpoints, which SQLite would run inside a commit, run every
    :data:`CHECKPOINT_CHANGES` changes in the pump's helper thread; nobody waits for them.

    ``wake`` is set by the polling loop: called when a change is queued, so a loop asleep after its spin
    limit starts polling again (a REGISTER over TCP, an expiry from housekeeping)."""

    def __init__(self, store: SqliteStore, send: Callable[[list[Send]], None], *, max_held: int = 65536,
                 retry: float = 1.0, checkpoint_every: int = CHECKPOINT_CHANGES,
                 flush: DiskFlush | None = None) -> None:
        if not store.sync_by_caller():
            raise ValueError("the polled committer needs a SQLite database file in WAL mode")
        super().__init__(store, send, max_held=max_held, retry=retry)
        self.sqlite = store
        self.checkpoint_every = checkpoint_every
        #: syncs the WAL after each commit (made here; a test may give its own)
        self._flush = flush if flush is not None else DiskFlush(store.wal_fd())
        self._due = False
        self._checkpointing = False
        self._since_checkpoint = 0
        #: something to do (a batch due, a sync running): the polling loop calls :meth:`poll` and stays awake
        self.active = False
        #: a sync is running: an idle pass yields the CPU to it
        self.flushing = False
        self.wake: Callable[[], None] | None = None
        self.checkpoints = 0
        self.sync_failures = 0

    def kick(self) -> None:
        """A change was queued: commit it in the polling loop's next pass (after the running sync, if one)."""
        if not self._closed and not self.paused:
            self._due = True
            self.active = True
            if self.wake is not None:
                self.wake()

    def poll(self) -> bool:
        """One step, from the polling loop's pass: finish the running sync if it has returned (its replies go
        out), then commit what is pending and start its sync. True when it did either."""
        worked = False
        if self._writing is not None:
            if not self._flush.poll():
                return False
            self._synced()
            worked = True
        if self._due and not self.paused and not self._closed:
            self._due = False
            self._commit()
            worked = True
        self.active = (self._due and not self._closed) or self._writing is not None
        return worked

    def _commit(self) -> None:
        batch = self.store.take_batch()
        if batch is None:
            self._idle()
            return
        try:
            self.sqlite.commit_batch(batch)
            self._flush.start(self._flush_cpus())
        except Exception as exc:  # noqa: BLE001 - a disk or database error: the batch is retried (logged once)
            self._finish(batch, exc)
            return
        self._writing = batch
        self.flushing = True

    def _synced(self) -> None:
        """The running sync has returned: its batch is committed (or, if the sync failed, pending again)."""
        batch = self._writing
        self._writing = None
        self.flushing = False
        if batch is None:
            return
        if self._flush.ok:
            self._finish(batch, None)
        else:
            self.sync_failures += 1
            self._due = False  # what came meanwhile waits with the failed batch for the retry (_failed)
            self._finish(batch, OSError("fdatasync of the SQLite WAL failed"))

    @staticmethod
    def _flush_cpus() -> frozenset[int] | None:
        """The poller's CPU (pinned, or where it runs now): the sync thread runs there, in the poller's yields."""
        cpu = pinned_cpu()
        if cpu is None:
            cpu = current_cpu()
        return None if cpu is None else frozenset((cpu,))

    def _written(self, batch: Batch) -> None:
        super()._written(batch)
        self._since_checkpoint += len(batch)
        if self._since_checkpoint >= self.checkpoint_every and not self._checkpointing and not self._closed:
            self._since_checkpoint = 0
            self._checkpointing = True
            self._pool.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        """In the helper thread: copy the WAL into the database (SQLite syncs both); nobody waits for it."""
        try:
            self.sqlite.checkpoint()
            self.checkpoints += 1
        except Exception as exc:  # noqa: BLE001 - the next one retries; the WAL only grows meanwhile
            log.warning("event=checkpoint_failed error=%r", exc)
        finally:
            self._checkpointing = False

    def state(self) -> dict[str, object]:
        return {**super().state(), "writer": "polling loop", "checkpoints": self.checkpoints,
                "sync_failures": self.sync_failures}

    async def _drain(self) -> None:
        """Stop starting batches; wait for the running sync and count its batch."""
        self._closed = True
        if self._writing is not None:
            self._flush.wait()
            self._synced()
        self.active = False

    async def close(self) -> None:
        await super().close()  # the rest written here (SqliteStore.write_batch syncs the WAL itself)
        self._flush.close()
