"""Authentication failure limiter per source address, pure (time is the ``now`` argument).

Why: digest authentication lets anyone try passwords as fast as they can send REGISTERs. After
``threshold_slow`` failures from one source inside ``window`` seconds we slow that source down
(the shell delays its 401s; the transaction layer absorbs retransmissions meanwhile), and after
``threshold_block`` failures we refuse it for ``block_for`` seconds. Other sources are not
affected. Memory is bounded: only sources with recent failures are kept, at most
``max_sources`` of them and at most ``max_stamps`` failure times in all (8 bytes each, in an
array per source), least recently failing first out. A source keeps at most ``threshold_block``
failure times (the newest: its count in the window is then exact up to the threshold); a
threshold past :data:`MAX_STAMPS_PER_SOURCE` is never reached ("never" in the config).

Use::

    decision = limiter.check(src_ip, now)        # before doing the (costly) digest check
    if decision.kind is DecisionKind.BLOCK: ...  # drop, or answer 403/503 without hashing
    elif decision.kind is DecisionKind.DELAY: ... # answer after decision.delay seconds
    result = authenticator.verify(...)
    limiter.record_failure(src_ip, now) if result is FAIL else limiter.record_success(src_ip, now)

Known limit: an attacker controlling more than ``max_sources`` addresses can push a blocked
source out of the table; the table size is the trade-off between that and memory.
"""

from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["Decision", "DecisionKind", "FailureLimiter"]


class DecisionKind(Enum):
    ALLOW = "allow"
    DELAY = "delay"
    BLOCK = "block"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What to do with the next request from a source.

    DELAY carries ``delay`` (seconds, > 0); BLOCK carries ``until`` (the ``now`` at which the
    source is allowed again). ALLOW carries neither.
    """

    kind: DecisionKind
    delay: float = 0.0
    until: float | None = None

    def __post_init__(self) -> None:
        if self.kind is DecisionKind.DELAY and not self.delay > 0:
            raise ValueError("DELAY needs a positive delay")
        if self.kind is not DecisionKind.DELAY and self.delay != 0.0:
            raise ValueError("only DELAY carries a delay")
        if (self.kind is DecisionKind.BLOCK) != (self.until is not None):
            raise ValueError("BLOCK, and only BLOCK, carries until")


ALLOW: Final = Decision(kind=DecisionKind.ALLOW)


#: the most failure times kept per source (a larger threshold is never reached)
MAX_STAMPS_PER_SOURCE: Final = 1024
#: the defaults of the bounds: about 100 bytes a source besides its times (key, entry, array header), so
#: 20,000 sources and 400,000 times are at most about 5 MB
DEFAULT_MAX_SOURCES: Final = 20_000
DEFAULT_MAX_STAMPS: Final = 400_000


class _Source:
    __slots__ = ("blocked_until", "failures")

    def __init__(self) -> None:
        #: failure times in the window, oldest first (an array of doubles: 8 bytes each, not a float object)
        self.failures: array[float] = array("d")
        self.blocked_until: float | None = None


class FailureLimiter:
    """Counts authentication failures per source in a sliding window.

    ``check`` gives ALLOW, DELAY(delay_base * 2**(n - threshold_slow), capped at delay_max)
    when n >= threshold_slow failures are in the window, or BLOCK(until). ``record_failure``
    returns the decision for the source after counting; ``purge`` drops idle sources and can be
    called from the shell's housekeeping timer (not required for correctness).
    """

    def __init__(
        self,
        threshold_slow: int = 5,
        threshold_block: int = 20,
        window: float = 60,
        block_for: float = 300,
        max_sources: int = DEFAULT_MAX_SOURCES,
        *,
        max_stamps: int = DEFAULT_MAX_STAMPS,
        delay_base: float = 0.5,
        delay_max: float = 8.0,
    ) -> None:
        if threshold_slow < 1 or threshold_block < 1:
            raise ValueError("thresholds must be at least 1")
        if not (window > 0 and block_for > 0 and delay_base > 0 and delay_max >= delay_base):
            raise ValueError("window, block_for and delays must be positive (delay_max >= delay_base)")
        if max_sources < 1 or max_stamps < 1:
            raise ValueError("max_sources and max_stamps must be at least 1")
        self.threshold_slow = threshold_slow
        self.threshold_block = threshold_block
        self.window = float(window)
        self.block_for = float(block_for)
        self.max_sources = max_sources
        self.max_stamps = max_stamps
        self._keep = min(threshold_block, MAX_STAMPS_PER_SOURCE)
        #: failure times held by all sources together (the ``max_stamps`` bound)
        self.stamps = 0
        self.delay_base = float(delay_base)
        self.delay_max = float(delay_max)
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def _prune(self, entry: _Source, now: float) -> None:
        cutoff = now - self.window
        failures = entry.failures
        old = 0
        while old < len(failures) and failures[old] <= cutoff:
            old += 1
        if old:
            del failures[:old]
            self.stamps -= old
        if entry.blocked_until is not None and now >= entry.blocked_until:
            entry.blocked_until = None

    def _drop(self, src: str) -> None:
        entry = self._sources.pop(src)
        self.stamps -= len(entry.failures)

    def _idle(self, entry: _Source) -> bool:
        return entry.blocked_until is None and not entry.failures

    def _decide(self, entry: _Source) -> Decision:
        if entry.blocked_until is not None:
            return Decision(kind=DecisionKind.BLOCK, until=entry.blocked_until)
        n = len(entry.failures)
        if n >= self.threshold_slow:
            # Exponent capped so a huge threshold_block cannot overflow the float.
            exponent = min(n - self.threshold_slow, 64)
            return Decision(
                kind=DecisionKind.DELAY, delay=min(self.delay_base * 2.0**exponent, self.delay_max)
            )
        return ALLOW

    def check(self, src: str, now: float) -> Decision:
        """Decision for a request from ``src`` at ``now``; unknown sources cost no memory."""
        entry = self._sources.get(src)
        if entry is None:
            return ALLOW
        self._prune(entry, now)
        if self._idle(entry):
            self._drop(src)
            return ALLOW
        return self._decide(entry)

    def record_failure(self, src: str, now: float) -> Decision:
        """Count one failed authentication from ``src``; returns the source's new decision.

        Failures while blocked do not extend the block: a block ends ``block_for`` after it
        started, so a client with a stuck wrong password gets out eventually.
        """
        entry = self._sources.get(src)
        if entry is None:
            entry = _Source()
            self._sources[src] = entry
        else:
            self._sources.move_to_end(src)
        self._prune(entry, now)
        if entry.blocked_until is None:
            failures = entry.failures
            if len(failures) >= self._keep:  # the oldest goes: only the count up to the threshold matters
                del failures[0]
                self.stamps -= 1
            failures.append(now)
            self.stamps += 1
            if len(failures) >= self.threshold_block:
                entry.blocked_until = now + self.block_for
                self.stamps -= len(failures)
                del failures[:]
        sources = self._sources
        while len(sources) > self.max_sources or self.stamps > self.max_stamps:
            _old, dropped = sources.popitem(last=False)
            self.stamps -= len(dropped.failures)
        return self._decide(entry)

    def record_success(self, src: str, now: float) -> None:
        """A successful authentication forgets the source's failures, but not an active block."""
        entry = self._sources.get(src)
        if entry is None:
            return
        self._prune(entry, now)
        self.stamps -= len(entry.failures)
        del entry.failures[:]
        if self._idle(entry):
            del self._sources[src]

    def purge(self, now: float) -> None:
        """Drop idle sources from the least recently failing end, stopping at the first live one."""
        while self._sources:
            src, entry = next(iter(self._sources.items()))
            self._prune(entry, now)
            if not self._idle(entry):
                break
            self._drop(src)

    def next_deadline(self) -> float:
        """When :meth:`purge` can next drop something (the front entry turns idle); inf if empty.

        Entries are in last-failure order, so this is the front entry's deadline; a long block at
        the front delays purging the entries behind it, which only costs memory within the bound.
        """
        if not self._sources:
            return math.inf
        entry = next(iter(self._sources.values()))
        if entry.blocked_until is not None:
            return entry.blocked_until
        return entry.failures[-1] + self.window if entry.failures else math.inf
