"""A small fixed-delay jitter buffer for 20 ms audio frames, keyed by RTP sequence number.

Pure state, no clock: the I/O layer calls :meth:`JitterBuffer.push` for every received
RTP packet and :meth:`JitterBuffer.pop` once per 20 ms playout tick. ``pop`` returns
the payload due now, or the ``silence`` fill (None by default) when that frame is
missing, so the player always gets exactly one frame per tick.

Policy (after aiortc ``jitterbuffer.py``, simplified for constant-rate G.711):

* Playout starts once ``prefetch`` frames are queued, from the oldest one; that is the
  fixed added delay (``prefetch`` x 20 ms).
* A packet older than the frame last played, or already queued, is dropped (late,
  duplicate); it is counted, never played out of order.
* A packet more than ``capacity`` frames ahead pushes the window forward: the oldest
  frames are given up. A jump of more than ``resync`` frames either way means the
  sender restarted its sequence (new SSRC, re-INVITE): the buffer starts over.
* When the queue runs dry the buffer re-buffers (``prefetch`` again) instead of
  advancing over frames that are merely delayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from leansip.media.rtp import uint16_add, uint16_diff

__all__ = ["JitterBuffer", "JitterStats"]


@dataclass(slots=True)
class JitterStats:
    """Counters for logs and the admin page."""

    received: int = 0
    played: int = 0
    missing: int = 0  # ticks where the due frame never arrived (filled)
    late: int = 0
    duplicate: int = 0
    overflow: int = 0  # frames given up because the window moved
    underrun: int = 0  # ticks with nothing queued (re-buffering)
    resync: int = 0


class JitterBuffer:
    """Reorder and pace frames; see the module docstring for the policy.

    ``capacity`` is the largest look-ahead in frames, ``prefetch`` the frames collected
    before playout starts (must be 1..capacity).
    """

    def __init__(self, *, capacity: int = 10, prefetch: int = 3, resync: int = 500,
                 silence: bytes | None = None) -> None:
        if capacity < 1 or not 1 <= prefetch <= capacity:
            raise ValueError("need 1 <= prefetch <= capacity")
        self.capacity = capacity
        self.prefetch = prefetch
        self.resync = max(resync, capacity)
        self.silence = silence
        self.stats = JitterStats()
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None  # sequence number due at the next tick
        self._playing = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def playing(self) -> bool:
        """True while frames are paced out; False while (re)buffering."""
        return self._playing

    def reset(self) -> None:
        """Forget everything (new remote stream); the counters are kept."""
        self._frames.clear()
        self._next = None
        self._playing = False

    def _oldest(self) -> int:
        anchor = next(iter(self._frames))
        return min(self._frames, key=lambda s: uint16_diff(s, anchor))

    def push(self, sequence_number: int, payload: bytes) -> bool:
        """Queue one frame; return False when it was dropped (late, duplicate)."""
        seq = sequence_number & 0xFFFF
        self.stats.received += 1
        if self._next is not None:
            d = uint16_diff(seq, self._next)
            if abs(d) > self.resync:
                self.stats.resync += 1
                self.reset()
            elif d < 0:
                self.stats.late += 1
                return False
            elif d >= self.capacity:
                # Window moves: give up the frames that fall off its start.
                new_next = uint16_add(seq, 1 - self.capacity)
                for s in list(self._frames):
                    if uint16_diff(s, new_next) < 0:
                        del self._frames[s]
                        self.stats.overflow += 1
                self._next = new_next
        if seq in self._frames:
            self.stats.duplicate += 1
            return False
        if self._next is None and len(self._frames) >= self.capacity:
            # Still buffering the first frames and full: keep the newest window.
            oldest = self._oldest()
            if uint16_diff(seq, oldest) < 0:
                self.stats.overflow += 1
                return False
            del self._frames[oldest]
            self.stats.overflow += 1
        self._frames[seq] = payload
        return True

    def pop(self) -> bytes | None:
        """The frame due at this 20 ms tick, or ``silence`` when it is missing or buffering."""
        if not self._playing:
            if len(self._frames) < self.prefetch:
                if self._next is not None:
                    self.stats.underrun += 1
                return self.silence
            if self._next is None:
                self._next = self._oldest()
            else:
                # Re-buffered after a dry spell: skip ahead to what we have.
                oldest = self._oldest()
                if uint16_diff(oldest, self._next) > 0:
                    self._next = oldest
            self._playing = True
        assert self._next is not None
        if not self._frames:
            self._playing = False
            self.stats.underrun += 1
            return self.silence
        seq = self._next
        self._next = uint16_add(seq, 1)
        frame = self._frames.pop(seq, None)
        if frame is None:
            self.stats.missing += 1
            return self.silence
        self.stats.played += 1
        return frame
