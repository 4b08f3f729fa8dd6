"""``serve --bare``: the UDP listeners served by a loop that polls instead of sleeping.

The research leansip follows ran on a bare PC: one loop polled the network card and ran each request to
completion, with no operating system between them. On Linux the nearest thing is a thread that never waits
in the kernel: every datagram the ordinary shell serves costs an epoll wake-up of the event loop and a
scheduler wake-up of the process (on this project's machine a blocking echo answered at p50 154 us, a
spinning one at 68 us; issue 25). :class:`BareLoop` is that thread's loop:

* one pass: ask a private epoll set holding only the UDP sockets whether anything waits (``poll(0)``, never
  sleeping: about a quarter of the cost of a failing ``recvfrom``, and it covers every listener at once);
  serve what waits through :meth:`UdpServerSocket.serve` (each datagram handled to its written replies
  before the next is read; one at a time while datagrams come alone, so the read that would fail with
  EAGAIN is never made, up to :data:`BATCH` per pass while they keep coming); then run the transaction
  timers if the grid's deadline (:attr:`TimerGrid.at`) is due;
* after :data:`SLICE` seconds of passes the event loop gets one turn (``call_soon`` of the next run): TCP,
  TLS and WebSocket connections, the admin endpoint, housekeeping, store flushers, name lookups, signals
  all run there, on the same thread, exactly as without ``--bare``;
* after ``spin`` seconds without a datagram or a timer the loop stops polling: the sockets are handed back
  to the event loop's poll (level-triggered, so a datagram that came meanwhile wakes it at once) and the
  grid to its timer; the next datagram starts the polling again. ``spin = inf`` never stops: a core at
  100 %, by design;
* with a durable SQLite store, its committer (``commit``, a :class:`Poller`:
  :class:`leansip.io.commit.PolledCommitter`) is a third source of work: each pass commits what the
  datagrams changed and sends the replies whose commit is on disk, and an idle pass while a disk sync
  runs yields the core (``sched_yield``) to the thread doing it, which then runs at once.

There is one thread. Everything that touches the core (datagrams, timers, stream messages, admin reads and
user edits, flushes) runs on it, one thing at a time, so nothing needs a lock and no request can be lost
between two parts of the server: a datagram is either read by a pass or, while the loop sleeps, wakes it.
Compiled with the core (``leansip._build.COMPILED``): a pass is a few calls, and the time one takes is the
time a datagram may wait before it is seen.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import select
import time
from collections.abc import Callable
from typing import Final, Protocol

from leansip.io.udpserver import TimerGrid, UdpServerSocket

log: Final = logging.getLogger("leansip.io.bare")

#: seconds of polling between two turns of the event loop (its streams, admin, housekeeping, signals wait at
#: most this long; a turn costs a few microseconds, under 2 % of a slice when idle)
SLICE: Final = 0.0005
#: datagrams read from one socket in a pass while they keep coming (one failing read ends a batch)
BATCH: Final = 64
#: the default spin: never stop polling
FOREVER: Final = math.inf


class Poller(Protocol):
    """Work the polling loop does in every pass besides datagrams and timers (a durable store's commits)."""

    #: something to do or under way: :meth:`poll` it, and do not sleep
    active: bool
    #: waiting for a thread of its own (a disk sync) that needs the CPU for a moment: idle passes yield it
    flushing: bool

    def poll(self) -> bool:
        """One step; True when it did work (counted as busy)."""
        ...


class BareLoop:
    """The polling loop of ``serve --bare`` over the server's UDP sockets (see the module docstring).

    ``spin``: seconds without work before the loop sleeps in the kernel until the next datagram (``inf``:
    never). ``commit``: polled in each pass while :attr:`Poller.active`. The counters (:meth:`snapshot`) say
    how much of the wall time went into request work."""

    def __init__(self, sockets: list[UdpServerSocket], timers: TimerGrid, spin: float = FOREVER,
                 clock: Callable[[], float] = time.time, commit: Poller | None = None) -> None:
        self.sockets = sockets
        self.timers = timers
        self.spin = spin
        self.clock = clock
        self.commit = commit
        self._epoll = select.epoll()
        self._by_fd: dict[int, UdpServerSocket] = {}
        for sock in sockets:
            fd = sock.sock.fileno()
            self._epoll.register(fd, select.EPOLLIN)
            self._by_fd[fd] = sock
        self._loop = asyncio.get_running_loop()
        self._streak = False  # the last pass found datagrams: read a batch, not one
        self.running = False
        self.asleep = False
        self.closed = False
        self.idle_since = 0.0
        # counters (read by the admin endpoint and the benchmark)
        self.started = 0.0
        self.busy = 0.0  # seconds spent serving datagrams and timers
        self.datagrams = 0
        self.passes = 0
        self.turns = 0  # turns given to the event loop
        self.sleeps = 0  # times the spin limit put the loop to sleep
        self.yields = 0  # idle passes that yielded the core to a disk sync

    def start(self) -> None:
        """Take the sockets and the timer grid over from the event loop and start polling."""
        for sock in self.sockets:
            sock.unwatch()
        self.timers.set_polled(True)
        self.started = self.idle_since = self.clock()
        self.running = True
        self._loop.call_soon(self._run)

    def _run(self) -> None:
        """Passes until the slice is over (then the event loop's turn) or the spin limit (then sleep)."""
        if self.closed:
            return
        try:
            self._passes()
        except Exception:  # noqa: BLE001 - a bug must not stop the UDP service; logged with its traceback
            log.exception("event=bare_loop_error")
            self._loop.call_soon(self._run)

    def _passes(self) -> None:
        poll = self._epoll.poll
        clock = self.clock
        timers = self.timers
        by_fd = self._by_fd
        spin = self.spin
        commit = self.commit
        now = clock()
        turn_at = now + SLICE
        passes = 0
        while True:
            passes += 1
            ready = poll(0)
            if ready:
                now = clock()  # the arrival time, and the start of the work (not the last pass's time: the
                # process may have lost the CPU since, and that wait is neither the datagram's nor work)
                limit = BATCH if self._streak else 1
                self._streak = True
                read = 0
                for fd, _events in ready:
                    sock = by_fd.get(fd)
                    if sock is not None:
                        read += sock.serve(limit, now)
                done = clock()
                self.busy += done - now
                self.datagrams += read
                now = self.idle_since = done
            else:
                self._streak = False
                now = clock()
            at = timers.at
            if at >= 0.0 and now >= at:
                timers.fire()  # the Runtime's: fired(), the core's timers, their output written, re-armed
                done = clock()
                self.busy += done - now
                now = self.idle_since = done
            if commit is not None and commit.active:
                if commit.poll():  # committed a batch, or sent the replies of one now on disk
                    done = clock()
                    self.busy += done - now
                    now = self.idle_since = done
                elif not ready and commit.flushing:
                    os.sched_yield()  # the sync thread shares this core: let it run now, not after our slice
                    self.yields += 1
                    now = clock()
            if now >= turn_at:
                self.passes += passes
                self.turns += 1
                self._loop.call_soon(self._run)
                return
            if now - self.idle_since > spin and (commit is None or not commit.active):
                # with spin 0: once a pass found nothing (a commit under way keeps it polling)
                self.passes += passes
                self._sleep()
                return

    def _sleep(self) -> None:
        """No work for ``spin`` seconds: the event loop watches the sockets and keeps the timer until a datagram
        comes (the watch is level-triggered: one that came since the last pass wakes it at once)."""
        self.asleep = True
        self.sleeps += 1
        self.timers.set_polled(False)
        for sock in self.sockets:
            sock.watch(self._wake)

    def wake_soon(self) -> None:
        """Start polling again at the event loop's next turn if the spin limit put the loop to sleep (work
        came from the event loop's side: a commit due after a REGISTER over TCP)."""
        if self.asleep and not self.closed:
            self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        if not self.asleep or self.closed:
            return
        self.asleep = False
        for sock in self.sockets:
            sock.unwatch()
        self.timers.set_polled(True)
        self.idle_since = self.clock()
        self._run()

    def close(self) -> None:
        """Stop polling (the sockets are closed by their owner)."""
        if self.closed:
            return
        self.closed = True
        self.running = False
        if self.asleep:
            for sock in self.sockets:
                sock.unwatch()
        self._epoll.close()

    def snapshot(self) -> dict[str, float | int | str]:
        """The loop's counters: busy seconds against wall seconds (the share of a polling core that went into
        request work: datagrams and timers, not the spin), datagrams, passes, event-loop turns, sleeps."""
        wall = self.clock() - self.started if self.started else 0.0
        return {
            "mode": "bare",
            "spin": "inf" if math.isinf(self.spin) else self.spin,
            "wall_seconds": round(wall, 6),
            "busy_seconds": round(self.busy, 6),
            "busy_fraction": round(self.busy / wall, 6) if wall > 0 else 0.0,
            "datagrams": self.datagrams,
            "passes": self.passes,
            "turns": self.turns,
            "sleeps": self.sleeps,
            "yields": self.yields,
            "asleep": self.asleep,
        }
