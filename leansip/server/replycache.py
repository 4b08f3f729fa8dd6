"""The reply cache: a retransmitted request is answered with the bytes sent for its first copy, before parsing.

Keyed by the request's datagram (the bytes alone: a hit checks the source, so no key tuple is built and hashed),
it holds what the core sent in answer and until when. A peer chooses both the keys and, through them, the
replies (a 400 copies every Via of the request), so the cache is bounded three ways: entries (``max_entries``),
bytes of keys plus replies together (``max_bytes``: past it the oldest go), and bytes of one entry
(``max_entry_bytes``: a larger request and its answer are not kept at all; a retransmission of it is handled
again, as if it were new). Every entry lives ``ttl`` seconds, so insertion order is expiry order: the oldest
entry is the first to expire and the first to go when a bound is reached.

Sans-I/O: ``now`` is passed in. :meth:`expire` runs from the core's housekeeping.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from leansip.sip.send import Send

#: the bounds' defaults: 20,000 entries, 8 MiB of keys and replies, 16 KiB for one (a REGISTER and its 200 OK
#: are about 1 KiB: 8 MiB holds 32 s of 250 registrations a second; a request of 16 KiB is no retransmission
#: worth a fast path)
DEFAULT_MAX_ENTRIES: Final = 20_000
DEFAULT_MAX_BYTES: Final = 8 << 20
DEFAULT_MAX_ENTRY_BYTES: Final = 16 << 10


class ReplyCache:
    """Datagram -> (expiry, source, what was sent, its size), in insertion (= expiry) order."""

    __slots__ = ("_entries", "nbytes", "max_entries", "max_bytes", "max_entry_bytes", "ttl")

    def __init__(self, ttl: float, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES) -> None:
        self._entries: OrderedDict[bytes, tuple[float, tuple[str, int], list[Send], int]] = OrderedDict()
        #: bytes of the keys and replies held (the sum the ``max_bytes`` bound is on)
        self.nbytes = 0
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.ttl = ttl

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, data: bytes, source: tuple[str, int], now: float) -> list[Send] | None:
        """What was sent for this datagram from this source, if it is still fresh."""
        cached = self._entries.get(data)
        if cached is not None and cached[0] > now and cached[1] == source:
            return cached[2]
        return None

    def put(self, data: bytes, source: tuple[str, int], out: list[Send], now: float) -> None:
        """Remember ``out`` as the answer to ``data`` from ``source`` (unless the pair is over the entry
        bound), then drop the oldest entries while a bound is exceeded."""
        size = len(data)
        for s in out:
            size += len(s.data)
        if size > self.max_entry_bytes:
            return
        entries = self._entries
        if data in entries:  # put again (a new answer): it goes to the end, keeping insertion = expiry order
            self.nbytes -= entries.pop(data)[3]  # (`in` is a direct call compiled; `pop` a method by name)
        entries[data] = (now + self.ttl, source, out, size)
        self.nbytes += size
        while len(entries) > self.max_entries or self.nbytes > self.max_bytes:
            _key, dropped = entries.popitem(last=False)
            self.nbytes -= dropped[3]

    def expire(self, now: float) -> None:
        """Drop the entries whose time is up (the oldest first; stops at the first fresh one)."""
        entries = self._entries
        while entries:
            _key, entry = next(iter(entries.items()))
            if entry[0] > now:
                break
            entries.popitem(last=False)
            self.nbytes -= entry[3]
