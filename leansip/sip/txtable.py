"""The live transactions of one SIP element: matching, one deadline queue, bounds in count and in bytes.

:class:`TransactionTable` matches requests and responses to their transactions (RFC 3261 17.1.3, 17.2.3, with
the RFC 2543 fallback), keeps ONE queue of deadlines for all of them (:class:`DeadlineQueue`; stale entries are
skipped when they surface) and drops transactions when they terminate. The I/O shell arms a single timer at
:meth:`TransactionTable.next_deadline` and calls :meth:`TransactionTable.handle_timers` when it expires. The
transactions themselves are :mod:`leansip.sip.transaction`'s, their state table :mod:`leansip.sip.txstate`'s.
"""

from __future__ import annotations

import heapq
import math
from typing import Final, Generic, TypeVar

from leansip.sip.message import Request, Response, footprint
from leansip.sip.transaction import (
    _ANSWERED_OVERHEAD,
    Action,
    ClientTransaction,
    Deliver,
    InviteServerTransaction,
    ServerTransaction,
    Transaction,
    client_transaction,
    server_key,
    server_transaction,
)
from leansip.sip.txstate import (
    _S_IDLE,
    _S_TERMINATED,
    DEFAULT_TIMERS,
    Timers,
    TransactionError,
)

__all__ = [
    "DEFAULT_MAX_ANSWERED_BYTES",
    "DEFAULT_MAX_BYTES",
    "DeadlineQueue",
    "TooManyTransactions",
    "TransactionTable",
]

#: what live transactions may keep, estimated (:func:`leansip.sip.message.footprint` of each request, the bytes
#: of each response and request sent): past it, new transactions are refused (TooManyTransactions: a 503)
DEFAULT_MAX_BYTES: Final = 256 << 20
#: what answered server transactions (which only absorb retransmissions) may keep: past it the oldest end early
DEFAULT_MAX_ANSWERED_BYTES: Final = 8 << 20


class TooManyTransactions(TransactionError):
    """The table is full; the server should answer 503 with a Retry-After (RFC 3261 21.5.4) statelessly."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"transaction table full ({limit} live transactions)")
        self.limit = limit


# --------------------------------------------------------------------------- the table


_Entry = TypeVar("_Entry")


class DeadlineQueue(Generic[_Entry]):
    """Entries by deadline: a heap of the distinct deadlines and, per deadline, its entries in the order added.

    What a heap of ``(deadline, seq, entry)`` tuples gave, for less: every comparison in that heap was a tuple
    comparison (a float compare for equality, then another, then the seq), ~4,500 instructions a pop at a few
    thousand live entries; here the heap holds floats, and the timers that end transactions share a deadline
    (``Timers.end_grid``), so a second's worth of them is one heap entry and a list. Entries of one deadline
    come out in the order they were added (which is seq order). Stale entries are the owner's to recognise.
    """

    __slots__ = ("_times", "_lists", "_count", "earliest", "front", "front_start")

    def __init__(self) -> None:
        #: the deadlines after the earliest (a heap) and their entries; the earliest is kept apart, below, since
        #: the I/O shell asks for it after every datagram (a float attribute: no dict lookup, no tuple, no box)
        self._times: list[float] = []
        self._lists: dict[float, list[_Entry]] = {}
        self._count = 0  # entries held, stale ones included
        #: the earliest deadline (inf when empty), its entries in the order added, and how many of those at the
        #: start the owner has dropped as stale (:meth:`drop_front`); read them, don't change them
        self.earliest = math.inf
        self.front: list[_Entry] = []
        self.front_start = 0

    def __len__(self) -> int:
        return self._count

    def add(self, at: float, entry: _Entry) -> None:
        """Add ``entry`` at deadline ``at``, a finite time (inf marks the empty queue; NaN compares with nothing)."""
        if not at < math.inf:
            raise ValueError(f"deadline must be finite, got {at!r}")
        self._count += 1
        earliest = self.earliest
        if at == earliest:
            self.front.append(entry)
            return
        if at < earliest:
            if earliest != math.inf:  # the old earliest goes back among the others
                front = self.front
                if self.front_start:
                    del front[:self.front_start]
                self._lists[earliest] = front
                heapq.heappush(self._times, earliest)
            self.earliest = at
            self.front = [entry]
            self.front_start = 0
            return
        entries = self._lists.get(at)
        if entries is None:
            self._lists[at] = [entry]
            heapq.heappush(self._times, at)
        else:
            entries.append(entry)

    def first(self) -> tuple[float, list[_Entry]] | None:
        """The earliest deadline and its entries not dropped yet (a copy), or None when empty: for reading in
        tests; the hot path reads :attr:`earliest`, :attr:`front` and :attr:`front_start`."""
        if self.earliest == math.inf:
            return None
        return self.earliest, self.front[self.front_start:]

    def drop_front(self, n: int) -> None:
        """Forget the next ``n`` entries of the earliest deadline (stale ones)."""
        self._count -= n
        start = self.front_start + n
        if start < len(self.front):
            self.front_start = start
        else:
            self._next_front()

    def _next_front(self) -> None:
        """The earliest deadline is done with: the next one (if any) takes its place."""
        times = self._times
        if times:
            at = heapq.heappop(times)
            self.earliest = at
            self.front = self._lists.pop(at)
        else:
            self.earliest = math.inf
            self.front = []
        self.front_start = 0

    def pop_due(self, now: float) -> list[_Entry] | None:
        """The entries of the earliest deadline if it is at or before ``now`` (removed), else None."""
        if self.earliest > now:
            return None
        entries = self.front
        if self.front_start:
            entries = entries[self.front_start:]
        self._count -= len(entries)
        self._next_front()
        return entries


_HeapEntry = tuple[int, Transaction]


class TransactionTable:
    """All live transactions of one SIP element: matching, one deadline heap, bounds in count and in bytes.

    Feed it every parsed request (:meth:`receive_request`) and response (:meth:`receive_response`); create
    client transactions with :meth:`create_client` and call their ``start(now)``. Calls made directly on a
    transaction it owns (``send_response``, ``start``, ``transport_error``) update the heap and drop the
    transaction once terminated. Re-arm the I/O timer at :meth:`next_deadline` after every call and call
    :meth:`handle_timers` when it expires.

    Bounds (a peer's requests make the server transactions, so each is a bound on what a peer can make us
    hold): at most ``max_transactions`` live, and at most ``max_bytes`` estimated bytes kept by all of them
    (``held_bytes``: each request's :func:`~leansip.sip.message.footprint`, each response and request sent) --
    past either, creating one raises :class:`TooManyTransactions` (the TU answers 503). Answered transactions
    (:meth:`ServerTransaction.keep_response_only`) keep only their response and key, and together at most
    ``max_answered_bytes`` (``answered_bytes``): past it the oldest end early (``ended_early`` counts them).
    """

    def __init__(self, *, timers: Timers = DEFAULT_TIMERS, max_transactions: int = 100_000,
                 max_bytes: int = DEFAULT_MAX_BYTES, max_answered_bytes: int = DEFAULT_MAX_ANSWERED_BYTES) -> None:
        if max_transactions < 1:
            raise ValueError("max_transactions must be positive")
        if max_bytes < 1 or max_answered_bytes < 1:
            raise ValueError("byte bounds must be positive")
        self.timers = timers
        self.max_transactions = max_transactions
        self.max_bytes = max_bytes
        self.max_answered_bytes = max_answered_bytes
        self.held_bytes = 0
        self.answered_bytes = 0
        self.ended_early = 0
        self._clients: dict[tuple[str, ...], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        #: (seq, transaction) by deadline: an entry is live while its seq is the transaction's _heap_seq
        self._heap: DeadlineQueue[_HeapEntry] = DeadlineQueue()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # ------------------------------------------------------------------ creation
    def _check_room(self) -> None:
        if len(self._clients) + len(self._servers) >= self.max_transactions or self.held_bytes >= self.max_bytes:
            raise TooManyTransactions(self.max_transactions)

    def _answered(self, txn: ServerTransaction, held: int) -> None:
        """``txn`` keeps only its response now, ``held`` bytes: move it to the answered sum, and end the oldest
        answered transactions when that sum passes its bound (down to three quarters of it, so this runs once
        per many answers, not for each)."""
        self.held_bytes += held - txn.held
        txn.held = held
        self.answered_bytes += held
        if self.answered_bytes > self.max_answered_bytes:
            self._end_oldest_answered(self.max_answered_bytes * 3 // 4)

    def _end_oldest_answered(self, target: int) -> None:
        # the server dict is in creation order: the oldest answered ones are nearest its start (live ones in
        # between, waiting for their callees, are stepped over)
        victims: list[ServerTransaction] = []
        left = self.answered_bytes
        for txn in self._servers.values():
            if txn.answered:
                victims.append(txn)
                left -= txn.held
                if left <= target:
                    break
        for txn in victims:
            self._end_early(txn)

    def _end_early(self, txn: ServerTransaction) -> None:
        """Forget an answered transaction before its timer ends it (its TU has nothing for it: no event)."""
        txn.state = _S_TERMINATED
        self.discard(txn)  # its heap entry is stale now, skipped when it surfaces
        # its heap entry holds the object until its deadline comes round: not what it kept
        txn.last_response = None
        txn.request = Request(txn.request.method, "")
        self.ended_early += 1

    def create_client(
        self,
        request: Request,
        dest: tuple[str, int],
        transport: str = "udp",
        *,
        data: bytes | None = None,
    ) -> ClientTransaction:
        """A new client transaction owned by this table; call its ``start(now)``. Raises
        :class:`TooManyTransactions` when full and :class:`TransactionError` for an ACK or a branch+method
        already in use (the TU must make branches unique, RFC 3261 8.1.1.7)."""
        self._check_room()
        txn = client_transaction(request, dest, transport, timers=self.timers, data=data)
        if txn.key in self._clients:
            raise TransactionError(f"client transaction {txn.key} exists")
        txn._owner = self
        self._clients[txn.key] = txn
        # the bytes it sends, and its lines (most shared with the request it was copied from, counted there)
        txn.held = len(txn.data) + _ANSWERED_OVERHEAD + 160 * len(request.headers)
        self.held_bytes += txn.held
        return txn

    def create_server(
        self,
        request: Request,
        source: tuple[str, int],
        transport: str = "udp",
        *,
        dest: tuple[str, int] | None = None,
    ) -> ServerTransaction:
        """A new server transaction for ``request`` (normally :meth:`receive_request` does this). Raises
        :class:`TooManyTransactions` when full, :class:`TransactionError` for an ACK or an existing key."""
        self._check_room()
        txn = server_transaction(request, source, transport, dest=dest, timers=self.timers)
        if txn.key in self._servers:
            raise TransactionError("server transaction exists; match the request first")
        txn._owner = self
        self._servers[txn.key] = txn
        txn.held = footprint(request)
        self.held_bytes += txn.held
        return txn

    # ------------------------------------------------------------------ matching
    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction ``request`` belongs to (RFC 3261 17.2.3), or None."""
        key, legacy = server_key(request)
        txn = self._servers.get(key)
        if txn is None or not legacy:
            return txn
        # RFC 2543: the To tag must match the INVITE's, or for an ACK the one of the response sent.
        want = txn.response_to_tag if request.method == "ACK" else txn.request.to_tag
        return txn if request.to_tag == want else None

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction of ``response``: top Via branch and CSeq method (RFC 3261 17.1.3)."""
        branch = response.branch
        if branch is None:
            return None
        return self._clients.get((branch, response.cseq[1]))

    def client(self, branch: str, method: str) -> ClientTransaction | None:
        """The live client transaction with this branch and method (e.g. to report a transport error)."""
        return self._clients.get((branch, method))

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2): the CANCEL's key with method
        INVITE; in the RFC 2543 fallback the To tag is not compared (the CANCEL was built before it existed)."""
        key, _legacy = server_key(cancel)
        txn = self._servers.get(key[:-1] + ("INVITE",))
        if isinstance(txn, InviteServerTransaction):
            return txn
        return None

    # ------------------------------------------------------------------ events
    def receive_request(
        self,
        request: Request,
        source: tuple[str, int],
        transport: str,
        now: float,
        *,
        send_trying: bool = False,
    ) -> list[Action]:
        """Route a parsed, validated request.

        A retransmission (or an ACK for a non-2xx) goes to its transaction. An unmatched ACK is the ACK of a
        2xx, which belongs to the TU: ``Deliver(transaction=None)``. Anything else creates a server
        transaction and is delivered with it; with ``send_trying`` an INVITE is also answered 100 Trying at
        once (what a proxy does, RFC 3261 16.2). Raises :class:`TooManyTransactions` when full -- answer 503
        statelessly."""
        txn = self.match_request(request)
        if txn is not None:
            return txn.receive_request(request, now)
        if request.method == "ACK":
            return [Deliver(message=request, transaction=None)]
        txn = self.create_server(request, source, transport)
        out: list[Action] = [Deliver(message=request, transaction=txn)]
        if send_trying and isinstance(txn, InviteServerTransaction):
            out.extend(txn.send_trying(now))
        return out

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """Route a parsed, validated response to its client transaction; a stray one (no match, e.g. a 2xx
        retransmission after Timer M) is ``Deliver(transaction=None)`` for the core to forward statelessly."""
        txn = self.match_response(response)
        if txn is None or txn.state is _S_IDLE:
            return [Deliver(message=response, transaction=None)]
        return txn.receive_response(response, now)

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` next has work, or None: arm the one I/O timer for it."""
        heap = self._heap
        while True:
            at = heap.earliest
            if at == math.inf:
                return None
            entries = heap.front
            n = len(entries)
            start = heap.front_start
            i = start
            while i < n:
                seq, txn = entries[i]
                if seq == txn._heap_seq:
                    break
                i += 1
            if i > start:
                heap.drop_front(i - start)  # stale: rescheduled or terminated since; not looked at again
            if i < n:
                return at

    def handle_timers(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` in deadline order; returns the actions of all transactions."""
        heap = self._heap
        out: list[Action] = []
        while True:
            entries = heap.pop_due(now)
            if entries is None:
                return out
            for seq, txn in entries:
                if seq != txn._heap_seq:
                    continue
                txn._heap_seq = -1
                txn._heap_at = None
                out.extend(txn.handle_timer(now))  # re-schedules itself through _changed

    def _changed(self, txn: Transaction) -> None:
        """Called by an owned transaction after every entry point: drop it once terminated, else keep exactly
        one valid heap entry at its next deadline.

        Older entries go stale and stay in the heap until their time comes (then :meth:`next_deadline` or
        :meth:`handle_timers` drops them): no deadline is further than 64*T1 away, so that bounds them. The heap
        is never rebuilt: a rebuild is O(n) in one go (17 ms at 60,000 transactions, pure Python), a pause for
        every message behind it."""
        terminated = txn.state is _S_TERMINATED
        at = None if terminated else txn.get_timer()
        if at != txn._heap_at:
            if at is None:
                txn._heap_seq = -1
                txn._heap_at = None
            else:
                self._seq += 1
                txn._heap_seq = self._seq
                txn._heap_at = at
                self._heap.add(at, (self._seq, txn))
        if terminated:
            self._release(txn)

    def _release(self, txn: Transaction) -> None:
        """``txn`` leaves the table: nothing matches it any more, and what it kept leaves the byte sums."""
        table: dict[tuple[str, ...], ClientTransaction] | dict[tuple[str, ...], ServerTransaction]
        table = self._clients if isinstance(txn, ClientTransaction) else self._servers
        if table.get(txn.key) is txn:
            del table[txn.key]
        txn._owner = None
        self.held_bytes -= txn.held
        if txn.answered:
            self.answered_bytes -= txn.held
        txn.held = 0

    def discard(self, txn: Transaction) -> None:
        """Forget a live transaction without ending it on the wire: its TU no longer wants it (a proxy that made
        a server transaction for a request, then relayed that request statelessly or dropped it). Its timers
        stop, nothing matches it any more and what it kept leaves the byte sums."""
        txn._heap_seq = -1
        txn._heap_at = None
        txn._retx_at = None
        txn._end_at = None
        self._release(txn)

    def transactions(self) -> list[Transaction]:
        """A snapshot of the live transactions (for status pages and tests)."""
        return [*self._clients.values(), *self._servers.values()]
