"""An ``fdatasync`` that runs beside the polling loop without ever needing the interpreter, polled for its end.

Why: ``serve --bare``'s polling thread never waits, and a durable REGISTER's 200 OK must wait for a disk flush
(0.2-20 ms on the development VM). Done on the polling thread, the flush would stop every other request for
that long; done by a Python thread, it costs that thread the GIL, which a thread that never sleeps gives up
only by chance (every ``poll(0)`` drops it, a waiting thread rarely wins the race) and the CPU, which a
spinning thread holds for whole scheduler slices: measured at 200 REGISTER/s, ``--bare --cpu 1``, a held 200 OK
waited 9.4 ms at p50 with the Python writer thread, 0.7 ms with this (bench/analysis.md).

So the flush is handed off the way a bare PC hands a write to its disk controller and polls a status register:
:meth:`DiskFlush.start` creates a POSIX thread whose start routine *is* libc's ``fdatasync`` (no Python in
it, so it never takes the GIL), and :meth:`DiskFlush.poll` asks ``pthread_tryjoin_np`` whether it has
returned (no system call, no wake-up). The thread is placed on ``cpus`` (the polling thread's core): there it
needs that core only for the microseconds of CPU a flush takes, and the polling loop yields the core
(``sched_yield``) on idle passes while a flush is in flight, so it gets them at once instead of at the end of
the poller's scheduler slice, and a thread on another, busy core would wait for that core instead (measured,
the 200 OK's p50 on the shared host: 0.5-0.8 ms on the poller's core with the yield, 1.8-3.0 ms without it,
4.5-4.7 ms with the thread on any CPU; bench/analysis.md).

The start routine's type is ``void *(*)(void *)`` and ``fdatasync``'s is ``int (int)``: on the Linux ABIs
(x86-64, AArch64, and the others that pass the first integer argument and return an integer in the same
register for both) the descriptor arrives as the pointer argument and the ``int`` result comes back in the low
32 bits of the thread's exit value, which is all :meth:`poll` reads. :func:`available` says whether this
libc has what it takes (glibc, musl); without it the server keeps its writer thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any, Final

__all__ = ["DiskFlush", "available"]

#: bytes of a ``cpu_set_t`` (1,024 CPUs) and room for a ``pthread_attr_t`` (56 bytes on x86-64, 64 on AArch64)
_CPUSET_BYTES: Final = 128
_ATTR_BYTES: Final = 128
_EBUSY: Final = 16  # pthread_tryjoin_np: the thread is still running


class _Libc:
    """The few libc functions a flush needs, bound once."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        self.fdatasync: int = ctypes.cast(libc.fdatasync, ctypes.c_void_p).value or 0
        self.create = libc.pthread_create
        self.create.argtypes = [ctypes.POINTER(ctypes.c_ulong), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.tryjoin = libc.pthread_tryjoin_np
        self.tryjoin.argtypes = [ctypes.c_ulong, ctypes.POINTER(ctypes.c_void_p)]
        self.join = libc.pthread_join
        self.join.argtypes = [ctypes.c_ulong, ctypes.POINTER(ctypes.c_void_p)]
        self.attr_init = libc.pthread_attr_init
        self.attr_destroy = libc.pthread_attr_destroy
        self.set_affinity = libc.pthread_attr_setaffinity_np
        self.set_affinity.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        self.sched_getcpu = libc.sched_getcpu


_LIBC: _Libc | None = None
_UNAVAILABLE = False


def _libc() -> _Libc | None:
    global _LIBC, _UNAVAILABLE
    if _LIBC is None and not _UNAVAILABLE:
        try:
            _LIBC = _Libc() if sys.platform.startswith("linux") else None
        except (OSError, AttributeError):  # no such library or symbol (not glibc/musl)
            _LIBC = None
        _UNAVAILABLE = _LIBC is None
    return _LIBC


def available() -> bool:
    """Can this process flush on a thread without Python (Linux, a libc with ``pthread_tryjoin_np``)?"""
    return _libc() is not None


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (None if unknown)."""
    libc = _libc()
    cpu = libc.sched_getcpu() if libc is not None else -1
    return cpu if cpu >= 0 else None


class DiskFlush:
    """``fdatasync(fd)`` on a thread of its own, one at a time: :meth:`start`, then :meth:`poll` until True.

    ``ok`` tells how the last one ended (``fdatasync`` returned 0). ``cpus``: where the thread may run (None:
    anywhere the process may). Not thread-safe: one thread (the polling loop's) calls every method."""

    def __init__(self, fd: int) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("a flush thread needs Linux and pthread_tryjoin_np (glibc or musl)")
        self._libc = libc
        self.fd = fd
        self._thread = ctypes.c_ulong(0)
        self._result = ctypes.c_void_p(0)
        self._attr = ctypes.create_string_buffer(_ATTR_BYTES)
        self._attr_cpus: frozenset[int] | None = None
        #: a flush is running (started and not yet seen to end)
        self.running = False
        #: how the last flush ended
        self.ok = True
        #: flushes started
        self.started = 0

    def start(self, cpus: frozenset[int] | None = None) -> None:
        """Start flushing ``fd``; raises OSError if no thread can be made (the caller retries later)."""
        if self.running:
            raise RuntimeError("a flush is already running")
        attr: Any = None
        if cpus:
            attr = self._attr_for(cpus)
        err = self._libc.create(ctypes.byref(self._thread), attr, self._libc.fdatasync, self.fd)
        if err:
            raise OSError(err, f"pthread_create: {os.strerror(err)}")
        self.running = True
        self.started += 1

    def _attr_for(self, cpus: frozenset[int]) -> Any:
        if cpus != self._attr_cpus:
            libc = self._libc
            if self._attr_cpus is not None:
                libc.attr_destroy(self._attr)
            mask = bytearray(_CPUSET_BYTES)
            for cpu in cpus:
                if 0 <= cpu < _CPUSET_BYTES * 8:
                    mask[cpu // 8] |= 1 << (cpu % 8)
            libc.attr_init(self._attr)
            err = libc.set_affinity(self._attr, _CPUSET_BYTES, ctypes.c_char_p(bytes(mask)))
            if err:
                libc.attr_destroy(self._attr)
                self._attr_cpus = None
                raise OSError(err, f"pthread_attr_setaffinity_np: {os.strerror(err)}")
            self._attr_cpus = cpus
        return self._attr

    def poll(self) -> bool:
        """Has the running flush ended (then ``ok`` says how)? True when none runs."""
        if not self.running:
            return True
        err = self._libc.tryjoin(self._thread, ctypes.byref(self._result))
        if err == _EBUSY:
            return False
        self._ended(err == 0)
        return True

    def wait(self) -> bool:
        """Block until the running flush ends (shutdown, tests); returns ``ok``."""
        if self.running:
            err = self._libc.join(self._thread, ctypes.byref(self._result))
            self._ended(err == 0)
        return self.ok

    def _ended(self, joined: bool) -> None:
        self.running = False
        # the int fdatasync returned (0: flushed); a join that failed tells nothing, so it counts as a failure
        self.ok = joined and ((self._result.value or 0) & 0xFFFFFFFF) == 0

    def close(self) -> None:
        """Wait for a running flush and free the thread attributes (the descriptor is the caller's)."""
        self.wait()
        if self._attr_cpus is not None:
            self._libc.attr_destroy(self._attr)
            self._attr_cpus = None
