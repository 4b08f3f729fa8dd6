"""The node's link to Redis: everything that talks to Redis, in two threads, never on the event loop.

Theory of operation
-------------------
:class:`RedisLink` serves a :class:`~leansip.server.stores.redis.RedisStore` (the node's replica of the bindings
and its queue of changes; see that module for the data model and the merge rules):

* **writes** -- a :class:`~leansip.io.commit.BatchPump`: :data:`GATHER` seconds after a change is queued, the
  queue is taken as one batch and written by the writer thread in one Lua call (applied and published to the
  other nodes); one batch at a time, the next one gathering what came meanwhile;
* **changes of the other nodes** -- the supervisor thread holds a pub/sub subscription to the node's own
  channel (the other nodes' scripts publish there), decodes each batch and hands it to the loop
  (``call_soon_threadsafe``), which applies it to the replica;
* **(re)connection** -- the supervisor subscribes first, then runs a sync in the writer thread (so it is ordered
  with the batches): write the queue, read the epoch, join the node set (the others publish to us from then
  on), read the whole table, plan the merge in the thread and apply it on the loop in chunks, push back what
  Redis lacks (all of the replica when Redis came back empty);
* **housekeeping** -- every ``reap_every`` seconds the writer thread deletes the lapsed bindings from Redis.

A Redis that is down or stops answering (``socket_timeout``): a batch that fails goes back to the queue, writes
pause, the outage is logged once (``event=redis_unavailable``) and counted; the supervisor reconnects with a
backoff (``backoff`` seconds, doubling up to ``backoff_max``) and its sync ends the outage (one
``event=redis_recovered`` line).  Meanwhile the node answers every request from its replica: nothing on the
straight path or in the loop's housekeeping waits for Redis.  The state (connected, queue, outages, ...) is
:meth:`RedisLink.state`, shown on the admin page and in /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

import redis

from leansip.io.affinity import helper_thread
from leansip.io.commit import BatchPump, Job
from leansip.server.stores.redis import (
    RedisStore,
    Tombs,
    parse_message,
    plan_merge,
    read_all,
    reap,
    wire,
    write_changes,
)
from leansip.server.stores.replica import Batch

log = logging.getLogger("leansip.io.redis")

__all__ = ["RedisLink"]

T = TypeVar("T")

#: errors that mean "Redis is not there" (anything else is a bug and is logged with its traceback)
LINK_ERRORS = (redis.RedisError, OSError)
#: bindings merged per turn of the loop during a resync, so a large table never stalls the straight path
MERGE_CHUNK = 2000
#: seconds a batch gathers changes before it is written (see BatchPump): what another node waits, at most, to
#: see a registration, for one write per batch instead of per REGISTER.  A batch's fixed price (the hand-off to
#: the writer thread and back, the script call and its socket send and reply: 100-250 us of the process's CPU
#: on the development VM) against ~9 us for each change it holds (its JSON): at 1,000 REGISTER/s, 50 batches a
#: second of 20 instead of 1,000 of one
GATHER = 0.02


class RedisLink(BatchPump):
    """Keeps ``store`` in step with the Redis at ``store.url`` (loop thread API: :meth:`start`, :meth:`close`,
    :meth:`state`)."""

    def __init__(self, store: RedisStore, *, gather: float = GATHER, socket_timeout: float = 2.0,
                 backoff: float = 0.05, backoff_max: float = 0.5, reap_every: float = 5.0) -> None:
        super().__init__(store, "leansip-redis", gather)
        self.redis_store = store
        self.backoff = backoff
        self.socket_timeout = socket_timeout
        self.backoff_max = backoff_max
        self.reap_every = reap_every
        self._client: Any = redis.Redis.from_url(store.url, socket_timeout=socket_timeout,
                                                 socket_connect_timeout=socket_timeout)
        # the writer thread's own connection (batches, resync pushes, reaps): scripts over it skip redis-py's
        # per-command machinery (see LuaScript); it reconnects by itself at its next use after an error
        pool = self._client.connection_pool
        self._conn: Any = pool.connection_class(**pool.connection_kwargs)
        self._stop = threading.Event()
        self._resync = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="leansip-redis-sub", daemon=True)
        self._reaper: asyncio.TimerHandle | None = None
        self.paused = True  # nothing is written before the first sync
        # state (loop thread)
        self.connected = False
        self.outages = 0
        self.syncs = 0
        self.pushed = 0
        self.last_error = ""
        self._down_since: float | None = None
        self._was_up = False

    def start(self) -> None:
        """Connect in the background; the node serves from its replica at once."""
        self._supervisor.start()
        self._reaper = self._loop.call_later(self.reap_every, self._reap)

    # -- writes (loop thread) ----------------------------------------------------------
    def _take(self) -> tuple[Batch, Job] | None:
        taken = self.redis_store.take_changes()
        if taken is None:
            return None
        batch, tombs = taken
        return batch, partial(self._write, batch, tombs)

    def _write(self, batch: Batch, tombs: Tombs) -> None:
        """In the writer thread: encode the batch and write it."""
        store = self.redis_store
        write_changes(self._conn, store.keys, store.node, wire(batch, tombs))

    def _failed(self, batch: Batch, exc: BaseException) -> None:
        self._went_down(exc)
        self._resync.set()  # the supervisor syncs again (or reconnects, if Redis is gone)

    def _went_down(self, exc: BaseException) -> None:
        self.paused = True
        self.last_error = repr(exc)
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.connected = False
            self.outages += 1
            log.error("event=redis_unavailable url=%s queued=%d error=%r (serving from the local replica, "
                      "queueing writes)", self.redis_store.url, self.store.pending, exc)

    def _synced(self, epoch: str, pushed: int) -> None:
        store = self.redis_store
        store.epoch = epoch
        self.syncs += 1
        self.pushed += pushed
        self.connected = True
        self.paused = False
        if self._down_since is not None:
            log.warning("event=redis_recovered url=%s down_s=%.1f pushed=%d", store.url,
                        time.monotonic() - self._down_since, pushed)
            self._down_since = None
        elif not self._was_up:
            log.info("event=redis_connected url=%s bindings=%d", store.url, store.count())
        self._was_up = True
        self.kick()

    def _reap(self) -> None:
        if self._closed:
            return
        if self.connected:
            self._pool.submit(reap, self._conn, self.redis_store.keys, time.time())
        self._reaper = self._loop.call_later(self.reap_every, self._reap)

    # -- the supervisor thread -----------------------------------------------------------
    def _on_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the event loop and wait for its result (from a link thread)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def _supervise(self) -> None:
        helper_thread()
        delay = self.backoff
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(self.redis_store.keys.inbox(self.redis_store.node))
                deadline = time.monotonic() + self.socket_timeout
                while True:  # the subscription is confirmed before the sync reads the table
                    msg = pubsub.get_message(timeout=0.1)
                    if msg is not None and msg["type"] == "subscribe":
                        break
                    if self._stop.is_set():
                        return
                    if time.monotonic() > deadline:
                        raise redis.TimeoutError("no answer to SUBSCRIBE")
                self._resync.clear()
                self._pool.submit(self._sync).result()
                delay = self.backoff
                node = self.redis_store.node
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg["type"] == "message":
                        changes = parse_message(msg["data"], node)
                        if changes:
                            self._loop.call_soon_threadsafe(self.redis_store.apply_remote, changes)
                    if self._resync.is_set():
                        self._resync.clear()
                        self._pool.submit(self._sync).result()
            except LINK_ERRORS as exc:
                if self._stop.is_set():
                    return
                self._call_soon(self._went_down, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            except RuntimeError:  # the loop is closed (or the pool shut down): the server is stopping
                return
            except Exception as exc:  # noqa: BLE001 - a bug: say it with its traceback, keep the link alive
                log.exception("event=redis_link_error error=%r", exc)
                self._call_soon(self._went_down, exc)
                self._stop.wait(self.backoff_max)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except LINK_ERRORS:
                        pass

    def _call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            pass

    def _sync(self) -> None:
        """In the writer thread: write the queue, then merge the whole table both ways (see the module doc)."""
        store = self.redis_store
        client = self._client
        keys = store.keys
        client.ping()
        since = time.time()
        taken = self._on_loop(store.take_changes)
        if taken is not None:
            batch, tombs = taken
            try:
                self._write(batch, tombs)
            except BaseException:
                self._on_loop(store.batch_failed, batch)
                raise
            self._on_loop(store.batch_done, batch)
        raw = client.get(keys.epoch)
        refill = raw is None
        if raw is None:
            client.set(keys.epoch, os.urandom(8).hex(), nx=True)
            raw = client.get(keys.epoch)
        epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
        if store.epoch is not None and store.epoch != epoch:
            refill = True  # Redis lost its data since our last sync (another node set the new epoch first)
        client.sadd(keys.nodes, store.node)  # subscribed: the other nodes may publish to us from now on
        snapshot = read_all(client, keys)
        local, overflowed = self._on_loop(store.begin_sync)
        take, stale, push = plan_merge(snapshot, local, refill=refill or overflowed, since=since, now=time.time())
        for i in range(0, max(len(take), len(stale)), MERGE_CHUNK):
            self._on_loop(store.apply_merge, take[i:i + MERGE_CHUNK], stale[i:i + MERGE_CHUNK])
        if push:
            write_changes(self._conn, keys, store.node, push)
        self._on_loop(self._synced, epoch, len(push))

    # -- state and shutdown (loop thread) ------------------------------------------------
    def state(self) -> dict[str, object]:
        """For the admin page and /metrics."""
        store = self.redis_store
        return {"redis": store.url, "connected": self.connected, **self.counters(), "queue_limit": store.max_queue,
                "dropped": store.dropped, "outages": self.outages, "syncs": self.syncs, "pushed": self.pushed,
                "remote_changes": store.remote_changes, "last_error": self.last_error}

    async def close(self, timeout: float = 2.0) -> None:
        """Write what is queued if Redis is there (bounded by ``timeout``), leave the cluster's node set, then
        stop both threads."""
        if self._reaper is not None:
            self._reaper.cancel()
        await self._drain()
        self._stop.set()
        store = self.redis_store
        if self.connected:
            taken = store.take_changes()
            job = self._pool.submit(self._leave, taken)
            try:
                await asyncio.wait_for(asyncio.wrap_future(job), timeout)
            except (TimeoutError, *LINK_ERRORS) as exc:
                lost = len(taken[0]) if taken is not None else 0
                log.error("event=redis_unavailable at=shutdown lost=%d error=%r", lost, exc)
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.get_running_loop().run_in_executor(None, self._supervisor.join, 2.0)
        self._conn.disconnect()
        self._client.close()

    def _leave(self, taken: tuple[Batch, Tombs] | None) -> None:
        """In the writer thread, at shutdown: the last batch, and no more messages for us."""
        if taken is not None:
            self._write(*taken)
        self._client.srem(self.redis_store.keys.nodes, self.redis_store.node)
