"""``--cpu N``: the serving thread on CPU N, and every other thread of the server off it.

Linux gives a new thread the CPU mask of the thread that creates it, and the serving thread (the event loop's,
which with ``--bare`` runs the polling loop) creates most of them: the group committer's writer, the default
executor's threads, a name lookup's pool. Pinned with it, a helper competes with the loop for its one core: with
``--bare`` that core is never idle, so a helper ran only when the scheduler took the core from the poller (a
durable REGISTER's 200 OK waited 9.4 ms at p50 that way, 3.7-4.1 ms with the writer off the core; bench/analysis.md). So :func:`pin_serving_thread` pins
only the calling thread, every thread the server starts calls :func:`helper_thread` first (its mask becomes the
other CPUs the process may use), and :func:`release_helpers` moves the threads a library started meanwhile
(libuv's lookup pool is made while the listeners open). A durable store's disk flush is the exception, on
purpose: it runs no Python and takes microseconds of CPU, so it is placed on the serving CPU, which the
polling loop yields to it (:mod:`leansip.io.diskflush`).

Process-wide state, as the masks themselves are: set once at start-up, read by the threads.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["helper_cpus", "helper_thread", "pin_serving_thread", "pinned_cpu", "release_helpers"]

_pinned: int | None = None
_helpers: frozenset[int] | None = None
_serving_tid = 0


def pin_serving_thread(cpu: int) -> None:
    """Pin the calling thread to ``cpu``; the threads that exist or start later run on the process's other
    CPUs (all of them when ``cpu`` is the only one). OSError when the process may not use ``cpu``."""
    global _pinned, _helpers, _serving_tid
    allowed = frozenset(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise OSError(f"no such CPU here (this process may use {', '.join(str(c) for c in sorted(allowed))})")
    os.sched_setaffinity(0, {cpu})  # 0: the calling thread, not the whole process
    _pinned = cpu
    _helpers = (allowed - {cpu}) or allowed
    _serving_tid = threading.get_native_id()
    release_helpers()


def pinned_cpu() -> int | None:
    """The serving thread's CPU (None: not pinned)."""
    return _pinned


def helper_cpus() -> frozenset[int] | None:
    """Where helper threads run (None: not pinned, anywhere)."""
    return _helpers


def helper_thread() -> None:
    """Move the calling thread off the serving CPU (first thing in every thread the server starts; a thread
    pool's ``initializer``)."""
    if _helpers is not None:
        os.sched_setaffinity(0, _helpers)


def release_helpers() -> int:
    """Move every thread of the process that is pinned to the serving CPU, except the serving thread, to the
    helper CPUs (threads a library started from the serving thread inherited its mask); returns how many."""
    if _pinned is None or _helpers is None or _helpers == {_pinned}:
        return 0
    moved = 0
    try:
        tids = [int(name) for name in os.listdir(Path("/proc/self/task"))]
    except OSError:
        return 0
    for tid in tids:
        if tid == _serving_tid:
            continue
        try:
            if os.sched_getaffinity(tid) == {_pinned}:
                os.sched_setaffinity(tid, _helpers)
                moved += 1
        except OSError:  # the thread ended meanwhile
            continue
    return moved
