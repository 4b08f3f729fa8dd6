"""Keep-alives to the server (RFC 5626 4.4.1): when to ping, and when a missing pong means the flow failed.

Pure: the clock is passed in, nothing is sent here. The phone (:mod:`leansip.ua.phone`) sends what
:meth:`KeepAlive.poll` says (CRLFCRLF, or OPTIONS over UDP) and reconnects when it says ``"failed"``.

Why a module of its own: it is timing logic with no socket and no call in it, tested with a fake clock
(tests/unit/test_ua_keepalive.py), apart from the shell that acts on it.
"""

from __future__ import annotations

import random

__all__ = ["KeepAlive", "DEFAULT_KEEPALIVE", "PONG_TIMEOUT"]


#: Default keep-alive interval per transport: 25 s over UDP (shorter than the ~30 s UDP timeouts of many NATs),
#: RFC 5626 4.4.1's 95-120 s band (upper bound 120) over connections, whose NAT timeouts are much longer.
DEFAULT_KEEPALIVE = {"udp": 25.0, "tcp": 120.0, "tls": 120.0}
#: RFC 5626 4.4.1: no pong within 10 s means the flow has failed.
PONG_TIMEOUT = 10.0


class KeepAlive:
    """When to send keep-alives and when a missing pong means the flow failed. Pure, clock passed in.

    Each interval is drawn between 80% and 100% of ``interval`` (RFC 5626 4.4.1), so phones that started
    together do not ping in lockstep. Call :meth:`poll` at :meth:`next_deadline`; it returns ``"ping"`` (send
    one now) and/or ``"failed"`` (the pong we waited for did not come); call :meth:`pong` when it does, and
    :meth:`restart` after a new flow is up."""

    def __init__(self, interval: float, *, now: float, expect_pong: bool, pong_timeout: float = PONG_TIMEOUT,
                 rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise ValueError("keep-alive interval must be positive")
        self.interval = interval
        self.expect_pong = expect_pong
        self.pong_timeout = pong_timeout
        self.rng = rng or random.Random()
        self.sent = 0
        self.failures = 0
        self.pong_due: float | None = None
        self.next_ping = now + self._draw()

    def _draw(self) -> float:
        return self.interval * self.rng.uniform(0.8, 1.0)

    def next_deadline(self) -> float:
        return self.next_ping if self.pong_due is None else min(self.next_ping, self.pong_due)

    def poll(self, now: float) -> list[str]:
        """What is due at ``now``: ``[]``, ``["ping"]``, ``["failed"]`` or both (failure first)."""
        out: list[str] = []
        if self.pong_due is not None and now >= self.pong_due:
            self.pong_due = None
            self.failures += 1
            out.append("failed")
        if now >= self.next_ping:
            self.next_ping = now + self._draw()
            self.sent += 1
            if self.expect_pong and self.pong_due is None:
                self.pong_due = now + self.pong_timeout
            out.append("ping")
        return out

    def pong(self) -> None:
        """The answer to our ping arrived: the flow is alive."""
        self.pong_due = None

    def restart(self, now: float) -> None:
        """A new flow: forget the pending pong, next ping one interval from now."""
        self.pong_due = None
        self.next_ping = now + self._draw()
