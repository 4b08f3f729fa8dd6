"""RFC 3261 section 17 transactions (with RFC 6026 "Accepted"), sans-I/O: messages and ``now`` in, actions out.

Theory of operation
-------------------
A transaction is a small state machine owned by the transaction user (TU: proxy core, registrar, UA). It never
touches a socket or a clock: every entry point takes ``now`` (seconds, any epoch, as a float) and returns a list
of *actions* for the caller to carry out:

* :class:`Send` -- pass these bytes to the transport for ``dest``;
* :class:`Deliver` -- hand this message to the TU (a response for a client transaction, a new request or a late
  ACK for a server transaction);
* :class:`Timeout` -- Timer B, F or H fired; a client TU turns it into a 408 (RFC 3261 8.1.3.1, 16.7);
* :class:`TransportError` -- the transport could not send (RFC 3261 17.1.4, 17.2.4);
* :class:`Terminated` -- the transaction is over and must be forgotten.

Each step looks its move up in the state table, :data:`~leansip.sip.txstate.TRANSITIONS` (in
:mod:`leansip.sip.txstate`, with the states, events and :class:`~leansip.sip.txstate.Timers`); a move the table
does not have raises :class:`~leansip.sip.txstate.IllegalTransition`.

Timers: each transaction has at most two running at once, a retransmission timer (A, E or G) and an ending timer
(B, D, F, H, I, J, K, L or M), kept as plain deadlines. :meth:`Transaction.get_timer` gives the earliest one and
:meth:`Transaction.handle_timer` fires whatever is due. A zero-length ending timer (D, I, J, K over reliable
transports) fires at once, so those transactions end inside the call that completed them.

:class:`~leansip.sip.txtable.TransactionTable` (in :mod:`leansip.sip.txtable`) owns the live transactions of one
SIP element: it matches requests and responses to them, keeps one deadline queue for all of them and drops
them when they terminate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from leansip.sip.message import Header, Request, Response, make_response
from leansip.sip.send import Send
from leansip.sip.txstate import (
    _D_DELIVER,
    _D_DELIVER_AND_ACK,
    _D_NOTHING,
    _D_REPORT_TRANSPORT_ERROR,
    _D_RESEND_RESPONSE,
    _D_RETRANSMIT_REQUEST,
    _D_SEND_ACK,
    _D_SEND_REQUEST,
    _D_SEND_RESPONSE,
    _D_TIMEOUT,
    _E_RECV_1XX,
    _E_RECV_2XX,
    _E_RECV_ACK,
    _E_RECV_FINAL,
    _E_RECV_REQUEST,
    _E_SEND_1XX,
    _E_SEND_2XX,
    _E_SEND_FINAL,
    _E_START,
    _E_TIMER_A,
    _E_TIMER_B,
    _E_TIMER_D,
    _E_TIMER_E,
    _E_TIMER_F,
    _E_TIMER_G,
    _E_TIMER_H,
    _E_TIMER_I,
    _E_TIMER_J,
    _E_TIMER_K,
    _E_TIMER_L,
    _E_TIMER_M,
    _E_TRANSPORT_ERROR,
    _S_ACCEPTED,
    _S_CALLING,
    _S_COMPLETED,
    _S_CONFIRMED,
    _S_IDLE,
    _S_PROCEEDING,
    _S_TERMINATED,
    _S_TRYING,
    DEFAULT_TIMERS,
    TRANSITIONS,
    Do,
    Event,
    IllegalTransition,
    Kind,
    State,
    Timers,
    TransactionError,
    on_grid,
)
from leansip.sip.uri import Via

if TYPE_CHECKING:
    from leansip.sip.txtable import TransactionTable

__all__ = [
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
    "Send",
    "Deliver",
    "Timeout",
    "TransportError",
    "Terminated",
    "Action",
    "Transaction",
    "ClientTransaction",
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "ServerTransaction",
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "build_ack",
    "client_transaction",
    "server_transaction",
    "response_destination",
    "server_key",
]

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 8.1.1.7: branches of RFC 3261 elements start with it
#: an answered transaction's object, key tuple, timers and heap entry, besides the strings it keeps
_ANSWERED_OVERHEAD: Final = 600
RELIABLE_TRANSPORTS: Final = frozenset({"tcp", "tls", "ws", "wss", "sctp", "tls-sctp"})


# --------------------------------------------------------------------------- actions


# The actions below are made for every message, so each has an explicit __init__ that mypyc compiles (the
# one @dataclass would generate stays interpreted); they are immutable by convention and hashable by value.

@dataclass(slots=True, unsafe_hash=True)
class Deliver:
    """Give ``message`` to the TU. ``transaction`` is None for a message no transaction matched (a stray
    response, an ACK for a 2xx): a proxy forwards those statelessly (RFC 3261 16.7 step 3, 16.10)."""

    message: Request | Response
    transaction: Transaction | None

    def __init__(self, *, message: Request | Response, transaction: Transaction | None) -> None:
        self.message = message
        self.transaction = transaction


@dataclass(slots=True, unsafe_hash=True)
class Timeout:
    """Timer ``timer`` (B, F or H) fired: no final response (client; the TU acts as if a 408 arrived) or no
    ACK (server, RFC 3261 17.2.1)."""

    transaction: Transaction
    timer: str

    def __init__(self, *, transaction: Transaction, timer: str) -> None:
        self.transaction = transaction
        self.timer = timer


@dataclass(slots=True, unsafe_hash=True)
class TransportError:
    """The transport could not send for ``transaction``; it is terminated (RFC 3261 17.1.4, 17.2.4)."""

    transaction: Transaction
    reason: str

    def __init__(self, *, transaction: Transaction, reason: str = "") -> None:
        self.transaction = transaction
        self.reason = reason


@dataclass(slots=True, unsafe_hash=True)
class Terminated:
    """The transaction reached Terminated and must be forgotten (the table drops it itself)."""

    transaction: Transaction

    def __init__(self, *, transaction: Transaction) -> None:
        self.transaction = transaction


Action = Send | Deliver | Timeout | TransportError | Terminated


# --------------------------------------------------------------------------- transactions


def _is_reliable(transport: str) -> bool:
    return transport.lower() in RELIABLE_TRANSPORTS


def _response_event(status: int, send: bool) -> Event:
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    if status < 200:
        return _E_SEND_1XX if send else _E_RECV_1XX
    if status < 300:
        return _E_SEND_2XX if send else _E_RECV_2XX
    return _E_SEND_FINAL if send else _E_RECV_FINAL


class Transaction:
    """State, timers and the table-driven step common to the four machines. Use a subclass.

    Call next: the subclass entry points; :meth:`get_timer` after each of them, and :meth:`handle_timer` when
    that deadline passes (or let a :class:`TransactionTable` do both). :meth:`transport_error` when the I/O
    layer fails to send one of this transaction's :class:`Send` actions.
    """

    KIND: Kind
    __slots__ = (
        "request",
        "transport",
        "reliable",
        "dest",
        "timers",
        "state",
        "key",
        "_table",
        "_retx_at",
        "_retx_interval",
        "_retx_event",
        "_end_at",
        "_end_event",
        "_owner",
        "_heap_at",
        "_heap_seq",
        "held",
        "answered",
    )

    def __init__(self, request: Request, dest: tuple[str, int], transport: str, timers: Timers) -> None:
        self.request = request
        self.transport = transport
        self.reliable = _is_reliable(transport)
        self.dest = dest
        self.timers = timers
        self.state = _S_IDLE
        self.key: tuple[str, ...] = ()
        self._table = TRANSITIONS[self.KIND]
        self._retx_at: float | None = None
        self._retx_interval = 0.0
        self._retx_event = _E_TIMER_A
        self._end_at: float | None = None
        self._end_event = _E_TIMER_B
        self._owner: TransactionTable | None = None
        self._heap_at: float | None = None
        self._heap_seq = -1
        #: estimated bytes this transaction keeps (set by its table, which sums them: see TransactionTable)
        self.held = 0
        #: a server transaction whose TU is done with it (:meth:`ServerTransaction.keep_response_only`)
        self.answered = False

    # ------------------------------------------------------------------ public
    @property
    def branch(self) -> str | None:
        return self.request.branch

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is _S_TERMINATED

    def get_timer(self) -> float | None:
        """The earliest deadline at which :meth:`handle_timer` has work, or None."""
        retx = self._retx_at
        end = self._end_at
        if retx is None:
            return end
        if end is None or retx < end:
            return retx
        return end

    def handle_timer(self, now: float) -> list[Action]:
        """Fire every timer due at ``now``, earliest first (an ending timer wins a tie). Never raises."""
        out: list[Action] = []
        while True:
            retx = self._retx_at
            end = self._end_at
            if end is not None and end <= now and (retx is None or end <= retx):
                self._end_at = None
                self._step(self._end_event, now, None, out)
            elif retx is not None and retx <= now:
                self._retx_at = None
                self._step(self._retx_event, now, None, out)
            else:
                break
        self._changed()
        return out

    def transport_error(self, now: float, reason: str = "") -> list[Action]:
        """The transport failed to send for this transaction: report it to the TU and terminate.

        Raises :class:`IllegalTransition` if the transaction was already terminated."""
        out: list[Action] = []
        self._step(_E_TRANSPORT_ERROR, now, reason, out)
        self._changed()
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.branch} {self.state.value}>"

    # ------------------------------------------------------------------ machinery
    def _step(self, event: Event, now: float, arg: object, out: list[Action]) -> None:
        old = self.state
        try:
            new, do = self._table[(old, event)]
        except KeyError:
            raise IllegalTransition(self.KIND, old, event) from None
        self._do(do, event, arg, now, out)
        if new is not old:
            self.state = new
            self._enter(new, now, out)

    def _do(self, do: Do, event: Event, arg: object, now: float, out: list[Action]) -> None:
        if do is _D_TIMEOUT:
            out.append(Timeout(transaction=self, timer=event.value[-1]))
        elif do is _D_REPORT_TRANSPORT_ERROR:
            out.append(TransportError(transaction=self, reason=str(arg or "")))
        elif do is not _D_NOTHING:  # pragma: no cover - every subclass handles its own
            raise AssertionError(f"{type(self).__name__} cannot {do.value}")

    def _enter(self, state: State, now: float, out: list[Action]) -> None:
        """Arm the timers of ``state`` (RFC 3261 17.x); entering Terminated stops all and reports it."""
        if state is _S_TERMINATED:
            self._retx_at = None
            self._end_at = None
            out.append(Terminated(transaction=self))

    def _arm_retransmit(self, event: Event, interval: float, now: float) -> None:
        self._retx_event = event
        self._retx_interval = interval
        self._retx_at = now + interval

    def _arm_end(self, event: Event, delay: float, now: float, out: list[Action]) -> None:
        if delay <= 0:
            # "0 s for reliable transports": the timer fires at once, within this call.
            self._end_at = None
            self._step(event, now, None, out)
        else:
            self._end_event = event
            grid = self.timers.end_grid
            self._end_at = on_grid(now + delay, grid) if grid > 0.0 else now + delay

    def _changed(self) -> None:
        if self._owner is not None:
            self._owner._changed(self)

    def _hold(self, delta: int) -> None:
        """What this transaction keeps grew (or shrank) by ``delta`` bytes: tell the table's sums."""
        self.held += delta
        owner = self._owner
        if owner is not None:
            owner.held_bytes += delta
            if self.answered:
                owner.answered_bytes += delta


class ClientTransaction(Transaction):
    """A client transaction: sends ``request`` to ``dest`` over ``transport`` and matches its responses.

    Create with :func:`client_transaction` (or :meth:`TransactionTable.create_client`), then call
    :meth:`start` for the first :class:`Send`, :meth:`receive_response` for every response the table routes
    here and :meth:`handle_timer` at :meth:`get_timer`.
    """

    __slots__ = ("data",)

    def __init__(
        self,
        request: Request,
        dest: tuple[str, int],
        transport: str = "udp",
        *,
        timers: Timers = DEFAULT_TIMERS,
        data: bytes | None = None,
    ) -> None:
        super().__init__(request, dest, transport, timers)
        branch = request.branch
        if not branch:
            raise TransactionError("a client transaction needs a branch in its top Via")
        # RFC 3261 17.1.3: a response matches by the top Via branch and the CSeq method.
        self.key = (branch, request.cseq[1])
        self.data = request.to_bytes() if data is None else data

    def start(self, now: float) -> list[Action]:
        """Send the request and start the timers. Raises :class:`IllegalTransition` if called twice."""
        out: list[Action] = []
        self._step(_E_START, now, None, out)
        self._changed()
        return out

    def receive_response(self, response: Response, now: float) -> list[Action]:
        """Process a response matched to this transaction: :class:`Deliver` it, absorb it as a
        retransmission, or (INVITE, 300-699) also send the ACK. Raises :class:`IllegalTransition` if the
        transaction is not started or already terminated; :class:`ValueError` for a status outside 100-699."""
        out: list[Action] = []
        self._step(_response_event(response.status, False), now, response, out)
        self._changed()
        return out

    def _do(self, do: Do, event: Event, arg: object, now: float, out: list[Action]) -> None:
        if do is _D_DELIVER:
            out.append(Deliver(message=arg, transaction=self))  # type: ignore[arg-type]
        elif do is _D_SEND_REQUEST or do is _D_RETRANSMIT_REQUEST:
            out.append(Send(data=self.data, dest=self.dest, transport=self.transport, transaction=self))
            if do is _D_RETRANSMIT_REQUEST:
                self._arm_retransmit(event, self._next_interval(), now)
        else:
            super()._do(do, event, arg, now, out)

    def _next_interval(self) -> float:
        raise NotImplementedError  # pragma: no cover


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.1 with RFC 6026: Calling -> Proceeding -> Completed (ACK sent here) or Accepted."""

    KIND = Kind.INVITE_CLIENT
    __slots__ = ("ack",)

    def __init__(
        self,
        request: Request,
        dest: tuple[str, int],
        transport: str = "udp",
        *,
        timers: Timers = DEFAULT_TIMERS,
        data: bytes | None = None,
    ) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"an INVITE client transaction cannot send {request.method}")
        super().__init__(request, dest, transport, timers=timers, data=data)
        self.ack: bytes | None = None

    def _next_interval(self) -> float:
        return self._retx_interval * 2  # Timer A doubles without a cap (17.1.1.2)

    def _enter(self, state: State, now: float, out: list[Action]) -> None:
        t = self.timers
        if state is _S_CALLING:
            if not self.reliable:
                self._arm_retransmit(_E_TIMER_A, t.a, now)
            self._arm_end(_E_TIMER_B, t.b, now, out)
        elif state is _S_PROCEEDING:
            # 17.1.1.2: no more retransmissions, and Timer B only guards the Calling state.
            self._retx_at = None
            self._end_at = None
        elif state is _S_COMPLETED:
            self._retx_at = None
            self._arm_end(_E_TIMER_D, t.d(self.reliable), now, out)
        elif state is _S_ACCEPTED:
            self._retx_at = None
            self._arm_end(_E_TIMER_M, t.m, now, out)
        else:
            super()._enter(state, now, out)

    def _do(self, do: Do, event: Event, arg: object, now: float, out: list[Action]) -> None:
        if do is _D_DELIVER_AND_ACK:
            out.append(Deliver(message=arg, transaction=self))  # type: ignore[arg-type]
            self.ack = build_ack(self.request, arg).to_bytes()  # type: ignore[arg-type]
            out.append(Send(data=self.ack, dest=self.dest, transport=self.transport, transaction=self))
        elif do is _D_SEND_ACK:
            assert self.ack is not None
            out.append(Send(data=self.ack, dest=self.dest, transport=self.transport, transaction=self))
        else:
            super()._do(do, event, arg, now, out)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 17.1.2: Trying -> Proceeding -> Completed; Timer E backs off to T2."""

    KIND = Kind.NON_INVITE_CLIENT
    __slots__ = ()

    def __init__(
        self,
        request: Request,
        dest: tuple[str, int],
        transport: str = "udp",
        *,
        timers: Timers = DEFAULT_TIMERS,
        data: bytes | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise TransactionError(f"a non-INVITE client transaction cannot send {request.method}")
        super().__init__(request, dest, transport, timers=timers, data=data)

    def _next_interval(self) -> float:
        # 17.1.2.2: MIN(2*E, T2) in Trying; T2 once a provisional response arrived.
        if self.state is _S_PROCEEDING:
            return self.timers.t2
        return min(self._retx_interval * 2, self.timers.t2)

    def _enter(self, state: State, now: float, out: list[Action]) -> None:
        t = self.timers
        if state is _S_TRYING:
            if not self.reliable:
                self._arm_retransmit(_E_TIMER_E, t.e, now)
            self._arm_end(_E_TIMER_F, t.f, now, out)
        elif state is _S_PROCEEDING:
            pass  # Timers E and F keep running (17.1.2.2)
        elif state is _S_COMPLETED:
            self._retx_at = None  # 17.1.2.2: Completed stops Timers E and F
            self._arm_end(_E_TIMER_K, t.k(self.reliable), now, out)
        else:
            super()._enter(state, now, out)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, built by the INVITE client transaction (RFC 3261 17.1.1.3).

    Request-URI, Call-ID, From and the CSeq number come from the INVITE, To from the response (it carries the
    UAS's tag), the single Via is the INVITE's top Via (same branch, so the server transaction matches it) and
    the Route headers are the INVITE's. Untouched header lines are reused byte for byte."""
    headers: list[Header] = []
    via_done = False
    max_forwards: Header | None = None
    for h in invite.headers:
        name = h.name
        if name == "via":
            if not via_done:
                via_done = True
                headers.append(h if "," not in h.value else Header("via", str(invite.top_via)))
        elif name == "from" or name == "call-id" or name == "route":
            headers.append(h)
        elif name == "max-forwards" and max_forwards is None:
            max_forwards = h
    to_header = next((h for h in response.headers if h.name == "to"), None)
    if to_header is None:
        to_header = next(h for h in invite.headers if h.name == "to")
    headers.append(to_header)
    headers.append(Header("cseq", f"{invite.cseq[0]} ACK"))
    headers.append(max_forwards if max_forwards is not None else Header("max-forwards", "70"))
    headers.append(Header("content-length", "0"))
    return Request("ACK", invite.uri, headers)


class ServerTransaction(Transaction):
    """A server transaction for ``request``; responses go to ``dest`` over ``transport``.

    Create with :func:`server_transaction` (or let :meth:`TransactionTable.receive_request` do it), hand the
    request to the TU, then call :meth:`send_response` for each response of the TU and
    :meth:`receive_request` for every retransmission (or ACK) the table matches here.
    """

    __slots__ = ("last_response", "source", "legacy", "response_to_tag")

    def __init__(
        self,
        request: Request,
        source: tuple[str, int],
        transport: str = "udp",
        *,
        dest: tuple[str, int] | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if request.method == "ACK":
            raise TransactionError("an ACK does not create a server transaction")
        via = request.top_via
        super().__init__(request, dest or response_destination(via, source, transport), transport, timers)
        self.source = source
        self.key, self.legacy = server_key(request)
        self.last_response: bytes | None = None
        self.response_to_tag: str | None = None

    def keep_response_only(self) -> None:
        """The TU answered the request itself and has nothing more to do with this transaction (a challenge,
        a 404, a 503...): keep only what absorbing retransmissions needs -- the final response to send again,
        the matching key, the Via and To lines (branch, and the To tag of an RFC 2543 request) -- and let the
        table end it early when answered transactions pass their byte bound
        (:attr:`TransactionTable.max_answered_bytes`). Ended early, a retransmission finds no transaction and
        is handled as a new request: answered again (RFC 3261 17.2.3 leaves nothing else to do with it).

        A no-op before the final response (the transaction must still deliver it) and once ended."""
        state = self.state
        if self.answered or state is _S_TRYING or state is _S_PROCEEDING or state is _S_TERMINATED:
            return
        self.answered = True
        skeleton = self.request.skeleton()
        self.request = skeleton
        held = _ANSWERED_OVERHEAD + len(self.last_response or b"")
        for part in self.key:
            held += len(part)
        for h in skeleton.headers:
            held += len(h.value) + len(h.raw or "")
        owner = self._owner
        if owner is not None:
            owner._answered(self, held)
        else:
            self.held = held

    def send_response(self, response: Response, now: float) -> list[Action]:
        """Send the TU's response; it drives the state. Raises :class:`IllegalTransition` when the state
        forbids it (e.g. any response after a non-2xx final, a 1xx after a final) and :class:`ValueError` for a
        status outside 100-699."""
        out: list[Action] = []
        self._step(_response_event(response.status, True), now, response, out)
        self._changed()
        return out

    def receive_request(self, request: Request, now: float) -> list[Action]:
        """A retransmission of the request (or, INVITE, an ACK) matched to this transaction: re-send the last
        response, absorb it, or (ACK in Accepted, RFC 6026 7.1) pass it to the TU."""
        out: list[Action] = []
        self._step(_E_RECV_ACK if request.method == "ACK" else _E_RECV_REQUEST, now, request, out)
        self._changed()
        return out

    def _do(self, do: Do, event: Event, arg: object, now: float, out: list[Action]) -> None:
        if do is _D_SEND_RESPONSE:
            response: Response = arg  # type: ignore[assignment]
            data = response.to_bytes()
            old = self.last_response
            self._hold(len(data) - (len(old) if old is not None else 0))
            self.last_response = data
            if self.legacy and response.status >= 200:
                self.response_to_tag = response.to_tag
            out.append(Send(data=data, dest=self.dest, transport=self.transport, transaction=self))
        elif do is _D_RESEND_RESPONSE:
            if self.last_response is not None:
                out.append(
                    Send(data=self.last_response, dest=self.dest, transport=self.transport, transaction=self)
                )
            if event is _E_TIMER_G:
                self._arm_retransmit(_E_TIMER_G, min(self._retx_interval * 2, self.timers.t2), now)
        elif do is _D_DELIVER:
            out.append(Deliver(message=arg, transaction=self))  # type: ignore[arg-type]
        else:
            super()._do(do, event, arg, now, out)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.1 with RFC 6026: Proceeding -> Completed -> Confirmed, or Proceeding -> Accepted."""

    KIND = Kind.INVITE_SERVER
    __slots__ = ()

    def __init__(
        self,
        request: Request,
        source: tuple[str, int],
        transport: str = "udp",
        *,
        dest: tuple[str, int] | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if request.method != "INVITE":
            raise TransactionError(f"an INVITE server transaction cannot serve {request.method}")
        super().__init__(request, source, transport, dest=dest, timers=timers)
        self.state = _S_PROCEEDING

    def send_trying(self, now: float) -> list[Action]:
        """Send 100 Trying at once (17.2.1: quench INVITE retransmissions; without a To tag, 8.2.6.1)."""
        return self.send_response(make_response(self.request, 100), now)

    def _enter(self, state: State, now: float, out: list[Action]) -> None:
        t = self.timers
        if state is _S_COMPLETED:
            if not self.reliable:
                self._arm_retransmit(_E_TIMER_G, t.g, now)
            self._arm_end(_E_TIMER_H, t.h, now, out)
        elif state is _S_CONFIRMED:
            self._retx_at = None  # 17.2.1: the ACK stops Timer G (and Timer H)
            self._arm_end(_E_TIMER_I, t.i(self.reliable), now, out)
        elif state is _S_ACCEPTED:
            self._arm_end(_E_TIMER_L, t.l, now, out)
        else:
            super()._enter(state, now, out)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 17.2.2: Trying -> Proceeding -> Completed (Timer J) -> Terminated."""

    KIND = Kind.NON_INVITE_SERVER
    __slots__ = ()

    def __init__(
        self,
        request: Request,
        source: tuple[str, int],
        transport: str = "udp",
        *,
        dest: tuple[str, int] | None = None,
        timers: Timers = DEFAULT_TIMERS,
    ) -> None:
        if request.method == "INVITE":
            raise TransactionError("an INVITE needs an INVITE server transaction")
        super().__init__(request, source, transport, dest=dest, timers=timers)
        self.state = _S_TRYING

    def _enter(self, state: State, now: float, out: list[Action]) -> None:
        if state is _S_COMPLETED:
            self._arm_end(_E_TIMER_J, self.timers.j(self.reliable), now, out)
        elif state is not _S_PROCEEDING:
            super()._enter(state, now, out)


def client_transaction(
    request: Request,
    dest: tuple[str, int],
    transport: str = "udp",
    *,
    timers: Timers = DEFAULT_TIMERS,
    data: bytes | None = None,
) -> InviteClientTransaction | NonInviteClientTransaction:
    """The right client transaction for ``request`` (not started). ACK is never sent in a transaction
    (RFC 3261 17.1.1.3 for non-2xx, 13.2.2.4 for 2xx): raises :class:`TransactionError`."""
    if request.method == "INVITE":
        return InviteClientTransaction(request, dest, transport, timers=timers, data=data)
    return NonInviteClientTransaction(request, dest, transport, timers=timers, data=data)


def server_transaction(
    request: Request,
    source: tuple[str, int],
    transport: str = "udp",
    *,
    dest: tuple[str, int] | None = None,
    timers: Timers = DEFAULT_TIMERS,
) -> InviteServerTransaction | NonInviteServerTransaction:
    """The right server transaction for a new ``request`` received from ``source``."""
    if request.method == "INVITE":
        return InviteServerTransaction(request, source, transport, dest=dest, timers=timers)
    return NonInviteServerTransaction(request, source, transport, dest=dest, timers=timers)


def response_destination(via: Via, source: tuple[str, int], transport: str) -> tuple[str, int]:
    """Where responses to a request with top Via ``via`` received from ``source`` go (RFC 3261 18.2.2,
    RFC 3581): back over the connection for reliable transports; the source address and port when the client
    asked for ``rport``; else the source address (what ``received`` records) and the sent-by port."""
    if _is_reliable(transport):
        return source
    params = via.params
    maddr = params.get("maddr")
    if maddr:
        return (maddr, via.port or 5060)
    if "rport" in params:
        return source
    return (source[0], via.port or 5060)


def server_key(request: Request) -> tuple[tuple[str, ...], bool]:
    """The matching key of a request (RFC 3261 17.2.3) and whether it is the RFC 2543 fallback.

    RFC 3261 branch: ``(branch, sent-by host, sent-by port, method)`` with ACK counted as INVITE, so an ACK for a
    non-2xx finds its INVITE transaction while a CANCEL (same branch) gets its own. Without the magic cookie:
    ``(Request-URI, From tag, Call-ID, CSeq number, top Via, method)``; the To tag is checked apart because an
    ACK carries the tag of the response, not of the INVITE."""
    via = request.top_via
    method = request.method
    if method == "ACK":
        method = "INVITE"
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), str(via.port or ""), method), False
    return (
        "",
        request.uri,
        request.from_tag or "",
        request.call_id,
        str(request.cseq[0]),
        str(via),
        method,
    ), True

