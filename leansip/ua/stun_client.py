"""Learn the phone's public RTP address with STUN (RFC 5389 Binding), sans-I/O and fake-clock testable.

Theory of operation. A phone behind a NAT must put the address its RTP socket is seen from on the Internet into
its SDP ``c=``/``m=`` lines, or the peer sends audio to a private address. :class:`StunClient` runs Binding
transactions (:class:`~leansip.media.stun.StunTransaction`: RTO 500 ms doubling, 7 sends, 39.5 s to give up)
from the RTP socket itself, so the mapping learned is the one RTP packets get, and repeats the query every
``refresh`` seconds (30 by default: shorter than the UDP binding lifetime of common NATs, which also makes the
query a keep-alive for the mapping).

While a call runs the RTP port carries media, which keeps the NAT binding open and must not change under the
session's feet: :meth:`StunClient.pause` stops the refreshes, :meth:`StunClient.resume` restarts them after the
call.

Calling convention (one timer in the shell, like the SIP core): :meth:`start` and :meth:`handle_timer` return
datagrams for :attr:`server`; re-arm at :meth:`next_deadline`; give every STUN-looking datagram the RTP socket
receives to :meth:`receive`, which says whether it was ours. :attr:`mapped` is the current public address or
None (no answer yet, or the last query failed: then the local address is the honest choice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from leansip.media.stun import (
    StunMessage,
    StunParseError,
    StunTransaction,
    TransactionState,
    binding_request,
    is_stun,
    parse_message,
)

__all__ = ["StunClient", "REFRESH_INTERVAL"]

log = logging.getLogger("leansip.ua.stun")

REFRESH_INTERVAL = 30.0
Address = tuple[str, int]


class StunClient:
    """Binding queries to one STUN server, repeated every ``refresh`` seconds unless paused."""

    def __init__(self, server: Address, *, refresh: float = REFRESH_INTERVAL,
                 make_transaction: Callable[[StunMessage], StunTransaction] = StunTransaction) -> None:
        if refresh <= 0:
            raise ValueError("refresh interval must be positive")
        self.server = server
        self.refresh = refresh
        self.mapped: Address | None = None
        self.paused = False
        self.queries = 0
        self.failures = 0
        self._make = make_transaction
        self._txn: StunTransaction | None = None
        self._next_query: float | None = None
        #: called with the new mapping (or None) whenever it changes
        self.on_change: Callable[[Address | None], None] | None = None

    @property
    def state(self) -> str:
        """For display: querying, mapped, failed, paused or idle."""
        if self._txn is not None:
            return "querying"
        if self.paused:
            return "paused"
        if self.mapped is not None:
            return "mapped"
        return "failed" if self.failures else "idle"

    def start(self, now: float) -> list[bytes]:
        """Send the first Binding request now."""
        return self._query(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has work: a retransmission, a timeout or the next refresh."""
        if self._txn is not None:
            return self._txn.get_timer()
        return None if self.paused else self._next_query

    def handle_timer(self, now: float) -> list[bytes]:
        """Retransmit, time out, or start the next refresh query; returns datagrams for :attr:`server`."""
        txn = self._txn
        if txn is not None:
            out = txn.handle_timer(now)
            if txn.state is TransactionState.TIMED_OUT:
                self._txn = None
                self.failures += 1
                log.info("event=stun_timeout server=%s:%s", *self.server)
                self._set_mapped(None)
                self._schedule(now)
            return out
        if not self.paused and self._next_query is not None and now >= self._next_query:
            return self._query(now)
        return []

    def receive(self, data: bytes, source: Address, now: float) -> bool:
        """A datagram from the RTP socket: True when it was a STUN answer for us (do not treat it as RTP).

        Only answers from the server we asked, matching our transaction id, count (anyone can send us
        datagrams; a spoofed mapping would steer the peer's audio)."""
        if not is_stun(data):
            return False
        if source != self.server:
            return True  # STUN, but not from our server: not media either; drop
        try:
            message = parse_message(data)
        except StunParseError as exc:
            log.info("event=stun_dropped reason=%r", exc.reason)
            return True
        txn = self._txn
        if txn is None or not txn.receive(message):
            return True
        self._txn = None
        if txn.state is TransactionState.SUCCEEDED and txn.mapped_address is not None:
            self._set_mapped(txn.mapped_address)
        else:
            self.failures += 1
            log.info("event=stun_error server=%s:%s error=%r", *self.server, txn.error)
            self._set_mapped(None)
        self._schedule(now)
        return True

    def pause(self) -> None:
        """Stop refreshing (a call started); a query in flight still completes."""
        self.paused = True

    def resume(self, now: float) -> list[bytes]:
        """Refresh again (the call ended): query at once, the mapping may have changed meanwhile."""
        if not self.paused:
            return []
        self.paused = False
        if self._txn is not None:
            return []
        return self._query(now)

    # ------------------------------------------------------------------ internals
    def _query(self, now: float) -> list[bytes]:
        if self._txn is not None:
            return []
        self._txn = self._make(binding_request())
        self._next_query = None
        self.queries += 1
        return [self._txn.start(now)]

    def _schedule(self, now: float) -> None:
        self._next_query = now + self.refresh

    def _set_mapped(self, mapped: Address | None) -> None:
        if mapped == self.mapped:
            return
        log.info("event=stun_mapped server=%s:%s mapped=%s", *self.server,
                 f"{mapped[0]}:{mapped[1]}" if mapped else None)
        self.mapped = mapped
        if self.on_change is not None:
            self.on_change(mapped)
