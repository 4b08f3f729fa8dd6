"""Give memory freed after a flood back to the system: ``malloc_trim`` when the core's held bytes fell a lot.

Why: what a flood makes the server hold (replies, answered transactions: bounded in bytes by the core) is freed
when their 32 s run out, but glibc keeps freed heap memory for the process: a 64 kB datagram and the strings
parsed from it are allocated by ``malloc`` (pymalloc serves only objects up to 512 bytes), between the small
objects that stay, so the heap cannot shrink from its top and the RSS stays at the flood's peak (issue 23 saw
700 MB after the flood ended). ``malloc_trim(0)`` releases every free page inside the heap too
(``MADV_DONTNEED``), at a cost proportional to the heap (a few milliseconds at a few hundred MB): called from
the once-a-second housekeeping only when the held bytes fell by :data:`TRIM_AFTER_FREED` since their peak.
Elsewhere than glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("leansip.memory")

#: trim when the held bytes fell this much from their peak since the last trim
TRIM_AFTER_FREED = 8 << 20


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
    """Feed :meth:`tick` the core's held bytes once a second; it trims after a large drop."""

    def __init__(self, trim: Callable[[int], int] | None = None, *, after_freed: int = TRIM_AFTER_FREED) -> None:
        self._trim = trim if trim is not None else _libc_trim()
        self.after_freed = after_freed
        self.peak = 0
        self.trims = 0

    def trim(self) -> None:
        """Trim now (after start-up: reading the users file and the stored bindings leaves freed heap)."""
        if self._trim is not None:
            self._trim(0)
            self.trims += 1

    def tick(self, held: int) -> bool:
        """Trim if ``held`` is :attr:`after_freed` or more below its peak since the last trim; True if it did."""
        if held > self.peak:
            self.peak = held
            return False
        if self.peak - held < self.after_freed or self._trim is None:
            return False
        self.trim()
        log.debug("event=malloc_trim freed=%d held=%d", self.peak - held, held)
        self.peak = held
        return True
