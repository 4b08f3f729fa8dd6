"""Give memory freed after a flood back to the system: ``malloc_trim`` when the core's held bytes fell a lot.

Why: what a flood makes the server hold (replies, answered transactions: bounded in bytes by the core) is freed
when their 32 s run out, but glibc keeps freed heap memory for the process: a 64 kB datagram and the strings
parsed from it are allocated by ``malloc`` (pymalloc serves only objects up to 512 bytes), between the small
objects that stay, so the heap cannot shrink from its top and the RSS stays at the flood's peak (issue 23 saw
700 MB after the flood ended). ``malloc_trim(0)`` releases every free page inside the heap too
(``MADV_DONTNEED``), at a cost proportional to the heap (a few milliseconds at a few hundred MB): called from
the once-a-second housekeeping only when the held bytes fell by :data:`TRIM_AFTER_FREED` since their peak.
Elsewhere than glibc (musl, macOS) it does nothing.

And during a flood too: the held bytes stay at their bounds while a flood goes on, but what each datagram
allocates and frees in between leaves free chunks all over the heap whose pages stay resident. Issue 23's soak
(2,000 hostile datagrams/s of up to 64 kB) grew the RSS by 4-5 MiB every 30 s for as long as it lasted, and one
``malloc_trim`` in the middle of it took 232 MB back to 200. So the housekeeping also trims when the RSS, or the
heap's free bytes (glibc's ``mallinfo2``: they grow without the RSS growing when live data is freed while the
flood goes on, e.g. nonces expiring), grew :data:`TRIM_AFTER_GROWTH` since the last trim, at most every
:data:`TRIM_INTERVAL` seconds for that reason (a trim costs about 10 ms with 60 MB of free heap). Growth that is
live data survives the trim; the next one is measured from there, so a server that only grows
(registrations) trims once per 4 MiB of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import time
from collections.abc import Callable

log = logging.getLogger("leansip.memory")

#: trim when the held bytes fell this much from their peak since the last trim
TRIM_AFTER_FREED = 8 << 20
#: trim when the RSS grew this much since the last trim (or since its lowest after it)... (small: a steady flood
#: adds free pages at 0.1-0.2 MiB/s, and what is above the RSS after the last trim is what the RSS overshoots)
TRIM_AFTER_GROWTH = 4 << 20
#: ...but not again within this many seconds for that reason
TRIM_INTERVAL = 10.0


def rss_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``), 0 where there is none (not Linux)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc_free_bytes() -> Callable[[], int]:
    """glibc's count of the free bytes inside its heaps (``mallinfo2().fordblks``, glibc 2.33+), or a function
    that answers 0 (no such count: only the RSS is watched)."""
    name = ctypes.util.find_library("c")
    try:
        info = ctypes.CDLL(name).mallinfo2 if name is not None else None
    except (OSError, AttributeError):
        info = None
    if info is None:
        return lambda: 0
    info.argtypes = []
    info.restype = _MallInfo2
    return lambda: int(info().fordblks)


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryTrimmer:
    """Feed :meth:`tick` the core's held bytes once a second; it trims after a large drop of them, or after the
    RSS or the heap's free bytes grew a lot (``rss``, ``free`` and ``clock`` are there for tests)."""

    def __init__(self, trim: Callable[[int], int] | None = None, *, after_freed: int = TRIM_AFTER_FREED,
                 after_growth: int = TRIM_AFTER_GROWTH, interval: float = TRIM_INTERVAL,
                 rss: Callable[[], int] = rss_bytes, free: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = trim if trim is not None else _libc_trim()
        self.after_freed = after_freed
        self.after_growth = after_growth
        self.interval = interval
        self._rss = rss
        self._free = free if free is not None else _libc_free_bytes()
        self._clock = clock
        self.peak = 0
        self.trims = 0
        #: the lowest RSS and heap free bytes seen since the last trim (0: not known yet), and when that trim was
        self.rss_low = 0
        self.free_low = 0
        self.trimmed_at = -math.inf

    def trim(self) -> None:
        """Trim now (after start-up: reading the users file and the stored bindings leaves freed heap)."""
        if self._trim is not None:
            self._trim(0)
            self.trims += 1
            self.rss_low = self._rss()
            self.free_low = self._free()
            self.trimmed_at = self._clock()

    def _grown(self) -> int:
        """How much the RSS or the free bytes grew since the last trim (their lowest since), once either grew
        :attr:`after_growth` and :attr:`interval` passed; else 0."""
        rss, free = self._rss(), self._free()
        if not self.rss_low or rss < self.rss_low:
            self.rss_low = rss
        if not self.free_low or free < self.free_low:
            self.free_low = free
        grown = max(rss - self.rss_low, free - self.free_low)
        if grown < self.after_growth or self._clock() - self.trimmed_at < self.interval:
            return 0
        return grown

    def tick(self, held: int) -> bool:
        """Trim if ``held`` is :attr:`after_freed` or more below its peak since the last trim, or the RSS grew
        :attr:`after_growth` since the last trim (and :attr:`interval` passed); True if it did."""
        if held > self.peak:
            self.peak = held
        if self._trim is None:
            return False
        if self.peak - held >= self.after_freed:
            self.trim()
            log.debug("event=malloc_trim freed=%d held=%d", self.peak - held, held)
            self.peak = held
            return True
        grown = self._grown()
        if grown:
            self.trim()
            log.debug("event=malloc_trim grown=%d rss=%d", grown, self.rss_low)
            return True
        return False
