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

The legal moves of the four machines (INVITE/non-INVITE, client/server) are one table, :data:`TRANSITIONS`,
keyed by ``(kind, state, event)``; its value is the next state and what to do. Anything not in the table raises
:class:`IllegalTransition` -- a bug in the TU (a provisional after a final, a second ``start()``) or a call on a
terminated transaction. Events that come from the peer (responses, retransmitted requests, ACKs) are legal in
every live state: the network may send anything, and what the RFC does not assign is absorbed.

Timers: each transaction has at most two running at once, a retransmission timer (A, E or G) and an ending timer
(B, D, F, H, I, J, K, L or M), kept as plain deadlines. :meth:`Transaction.get_timer` gives the earliest one and
:meth:`Transaction.handle_timer` fires whatever is due. A zero-length ending timer (D, I, J, K over reliable
transports) fires at once, so those transactions end inside the call that completed them.

:class:`TransactionTable` owns the live transactions of one SIP element: it matches requests and responses to
them (RFC 3261 17.1.3, 17.2.3, with the RFC 2543 fallback), keeps ONE heap of deadlines for all of them (stale
entries are skipped when they surface; the heap is rebuilt when they outnumber the live ones) and drops
transactions when they terminate. The I/O shell arms a single timer at :meth:`TransactionTable.next_deadline`
and calls :meth:`TransactionTable.handle_timers` when it expires.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from leansip.sip.message import Header, Request, Response, footprint, make_response
from leansip.sip.send import Send
from leansip.sip.uri import Via

__all__ = [
    "MAGIC_COOKIE",
    "RELIABLE_TRANSPORTS",
    "Timers",
    "on_grid",
    "Kind",
    "State",
    "Event",
    "Do",
    "TRANSITIONS",
    "Send",
    "Deliver",
    "Timeout",
    "TransportError",
    "Terminated",
    "Action",
    "TransactionError",
    "IllegalTransition",
    "TooManyTransactions",
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
    "TransactionTable",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ANSWERED_BYTES",
]

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 8.1.1.7: branches of RFC 3261 elements start with it
#: what live transactions may keep, estimated (:func:`leansip.sip.message.footprint` of each request, the bytes
#: of each response and request sent): past it, new transactions are refused (TooManyTransactions: a 503)
DEFAULT_MAX_BYTES: Final = 256 << 20
#: what answered server transactions (which only absorb retransmissions) may keep: past it the oldest end early
DEFAULT_MAX_ANSWERED_BYTES: Final = 8 << 20
#: an answered transaction's object, key tuple, timers and heap entry, besides the strings it keeps
_ANSWERED_OVERHEAD: Final = 600
RELIABLE_TRANSPORTS: Final = frozenset({"tcp", "tls", "ws", "wss", "sctp", "tls-sctp"})


# --------------------------------------------------------------------------- timers


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """T1, T2, T4 and every timer derived from them (RFC 3261 table 4, RFC 6026 section 8.11).

    The derived values are properties so a ``Timers(t1=...)`` for a high-latency link stays consistent. The
    timers that are zero over reliable transports (D, I, J, K) are methods taking ``reliable``.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: the timers that end a transaction or time it out (B, D, F, H, I, J, K, L, M) fire on multiples of this
    #: many seconds (0: exactly). They are waits, not deadlines: ending later only absorbs retransmissions a
    #: little longer (or reports a timeout a little later), and a shared deadline lets one wake-up of the
    #: server end every transaction due within it (each wake-up of an idle process costs about what a datagram
    #: does; bench/analysis.md). Retransmission timers (A, E, G) stay exact.
    end_grid: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0:
            raise ValueError(f"need 0 < T1 <= T2 and T4 > 0, got {self.t1}, {self.t2}, {self.t4}")
        if self.end_grid < 0:
            raise ValueError(f"end_grid must not be negative, got {self.end_grid}")

    @property
    def a(self) -> float:
        """INVITE request retransmit interval (unreliable only); doubles each time, uncapped."""
        return self.t1

    @property
    def b(self) -> float:
        """INVITE client transaction timeout in Calling."""
        return 64 * self.t1

    def d(self, reliable: bool) -> float:
        """Wait for response retransmissions in Completed (INVITE client): at least 32 s over UDP.

        Taken as ``max(32, 64*T1)`` so that a raised T1 still covers the server's Timer G/H window."""
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def e(self) -> float:
        """Non-INVITE request retransmit interval (unreliable only); doubles up to T2."""
        return self.t1

    @property
    def f(self) -> float:
        """Non-INVITE client transaction timeout."""
        return 64 * self.t1

    @property
    def g(self) -> float:
        """INVITE final-response retransmit interval (unreliable only); doubles up to T2."""
        return self.t1

    @property
    def h(self) -> float:
        """Wait for the ACK of a non-2xx final response (any transport)."""
        return 64 * self.t1

    def i(self, reliable: bool) -> float:
        """Absorb ACK retransmissions in Confirmed."""
        return 0.0 if reliable else self.t4

    def j(self, reliable: bool) -> float:
        """Absorb non-INVITE request retransmissions in Completed."""
        return 0.0 if reliable else 64 * self.t1

    def k(self, reliable: bool) -> float:
        """Absorb response retransmissions in Completed (non-INVITE client)."""
        return 0.0 if reliable else self.t4

    @property
    def l(self) -> float:  # noqa: E743 - the RFC's name
        """RFC 6026 Timer L: INVITE server stays Accepted to absorb INVITE retransmissions after a 2xx."""
        return 64 * self.t1

    @property
    def m(self) -> float:
        """RFC 6026 Timer M: INVITE client stays Accepted to pass 2xx retransmissions (forks) to the TU."""
        return 64 * self.t1


DEFAULT_TIMERS: Final = Timers()


def on_grid(at: float, step: float) -> float:
    """The first multiple of ``step`` at or after ``at``: timers rounded up to a grid share a wake-up, and none
    fires early (a float rounding that lands just below ``at`` moves to the next multiple)."""
    rounded = math.ceil(at / step) * step
    return rounded if rounded >= at else rounded + step


# --------------------------------------------------------------------------- the table


class Kind(enum.Enum):
    INVITE_CLIENT = "INVITE client"
    NON_INVITE_CLIENT = "non-INVITE client"
    INVITE_SERVER = "INVITE server"
    NON_INVITE_SERVER = "non-INVITE server"


class State(enum.Enum):
    # identity hash in C: members are looked up in TRANSITIONS on every step (Enum's own is Python code)
    __hash__ = object.__hash__

    IDLE = "Idle"  # a client transaction created but not yet started
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Event(enum.Enum):
    # identity hash in C: members are looked up in TRANSITIONS on every step (Enum's own is Python code)
    __hash__ = object.__hash__

    START = "start"
    RECV_1XX = "1xx received"
    RECV_2XX = "2xx received"
    RECV_FINAL = "300-699 received"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_FINAL = "300-699 from TU"
    RECV_REQUEST = "request retransmission"
    RECV_ACK = "ACK received"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


class Do(enum.Enum):
    """What a transition does besides changing state (entering a state arms its timers separately)."""

    NOTHING = "nothing"
    SEND_REQUEST = "send the request"
    RETRANSMIT_REQUEST = "retransmit the request"
    DELIVER = "pass the message to the TU"
    DELIVER_AND_ACK = "pass the response to the TU and send the ACK"
    SEND_ACK = "re-send the ACK"
    SEND_RESPONSE = "send the TU's response"
    RESEND_RESPONSE = "re-send the last response (if any)"
    TIMEOUT = "report a timeout to the TU"
    REPORT_TRANSPORT_ERROR = "report a transport error to the TU"


# The members as module constants: compiled (mypyc) code loads these directly, where `State.X` is an attribute
# lookup on the Enum class (through EnumType's Python-level hook) at every step of every transaction.
_D_DELIVER: Final = Do.DELIVER
_D_DELIVER_AND_ACK: Final = Do.DELIVER_AND_ACK
_D_NOTHING: Final = Do.NOTHING
_D_REPORT_TRANSPORT_ERROR: Final = Do.REPORT_TRANSPORT_ERROR
_D_RESEND_RESPONSE: Final = Do.RESEND_RESPONSE
_D_RETRANSMIT_REQUEST: Final = Do.RETRANSMIT_REQUEST
_D_SEND_ACK: Final = Do.SEND_ACK
_D_SEND_REQUEST: Final = Do.SEND_REQUEST
_D_SEND_RESPONSE: Final = Do.SEND_RESPONSE
_D_TIMEOUT: Final = Do.TIMEOUT
_E_RECV_1XX: Final = Event.RECV_1XX
_E_RECV_2XX: Final = Event.RECV_2XX
_E_RECV_ACK: Final = Event.RECV_ACK
_E_RECV_FINAL: Final = Event.RECV_FINAL
_E_RECV_REQUEST: Final = Event.RECV_REQUEST
_E_SEND_1XX: Final = Event.SEND_1XX
_E_SEND_2XX: Final = Event.SEND_2XX
_E_SEND_FINAL: Final = Event.SEND_FINAL
_E_START: Final = Event.START
_E_TIMER_A: Final = Event.TIMER_A
_E_TIMER_B: Final = Event.TIMER_B
_E_TIMER_D: Final = Event.TIMER_D
_E_TIMER_E: Final = Event.TIMER_E
_E_TIMER_F: Final = Event.TIMER_F
_E_TIMER_G: Final = Event.TIMER_G
_E_TIMER_H: Final = Event.TIMER_H
_E_TIMER_I: Final = Event.TIMER_I
_E_TIMER_J: Final = Event.TIMER_J
_E_TIMER_K: Final = Event.TIMER_K
_E_TIMER_L: Final = Event.TIMER_L
_E_TIMER_M: Final = Event.TIMER_M
_E_TRANSPORT_ERROR: Final = Event.TRANSPORT_ERROR
_S_ACCEPTED: Final = State.ACCEPTED
_S_CALLING: Final = State.CALLING
_S_COMPLETED: Final = State.COMPLETED
_S_CONFIRMED: Final = State.CONFIRMED
_S_IDLE: Final = State.IDLE
_S_PROCEEDING: Final = State.PROCEEDING
_S_TERMINATED: Final = State.TERMINATED
_S_TRYING: Final = State.TRYING
_ALIVE: Final = (_S_IDLE, _S_CALLING, _S_TRYING, _S_PROCEEDING, _S_COMPLETED, _S_CONFIRMED, _S_ACCEPTED)

TRANSITIONS: Final[dict[Kind, dict[tuple[State, Event], tuple[State, Do]]]] = {
    # RFC 3261 17.1.1.2 figure 5, with RFC 6026 7.2 (2xx -> Accepted, Timer M) replacing "2xx -> Terminated".
    Kind.INVITE_CLIENT: {
        (_S_IDLE, _E_START): (_S_CALLING, _D_SEND_REQUEST),
        (_S_CALLING, _E_TIMER_A): (_S_CALLING, _D_RETRANSMIT_REQUEST),
        (_S_CALLING, _E_TIMER_B): (_S_TERMINATED, _D_TIMEOUT),
        (_S_CALLING, _E_RECV_1XX): (_S_PROCEEDING, _D_DELIVER),
        (_S_CALLING, _E_RECV_2XX): (_S_ACCEPTED, _D_DELIVER),
        (_S_CALLING, _E_RECV_FINAL): (_S_COMPLETED, _D_DELIVER_AND_ACK),
        (_S_PROCEEDING, _E_RECV_1XX): (_S_PROCEEDING, _D_DELIVER),
        (_S_PROCEEDING, _E_RECV_2XX): (_S_ACCEPTED, _D_DELIVER),
        (_S_PROCEEDING, _E_RECV_FINAL): (_S_COMPLETED, _D_DELIVER_AND_ACK),
        (_S_COMPLETED, _E_RECV_1XX): (_S_COMPLETED, _D_NOTHING),
        (_S_COMPLETED, _E_RECV_2XX): (_S_COMPLETED, _D_NOTHING),
        (_S_COMPLETED, _E_RECV_FINAL): (_S_COMPLETED, _D_SEND_ACK),
        (_S_COMPLETED, _E_TIMER_D): (_S_TERMINATED, _D_NOTHING),
        (_S_ACCEPTED, _E_RECV_1XX): (_S_ACCEPTED, _D_NOTHING),
        (_S_ACCEPTED, _E_RECV_2XX): (_S_ACCEPTED, _D_DELIVER),
        (_S_ACCEPTED, _E_RECV_FINAL): (_S_ACCEPTED, _D_NOTHING),
        (_S_ACCEPTED, _E_TIMER_M): (_S_TERMINATED, _D_NOTHING),
    },
    # RFC 3261 17.1.2.2 figure 6.
    Kind.NON_INVITE_CLIENT: {
        (_S_IDLE, _E_START): (_S_TRYING, _D_SEND_REQUEST),
        (_S_TRYING, _E_TIMER_E): (_S_TRYING, _D_RETRANSMIT_REQUEST),
        (_S_TRYING, _E_TIMER_F): (_S_TERMINATED, _D_TIMEOUT),
        (_S_TRYING, _E_RECV_1XX): (_S_PROCEEDING, _D_DELIVER),
        (_S_TRYING, _E_RECV_2XX): (_S_COMPLETED, _D_DELIVER),
        (_S_TRYING, _E_RECV_FINAL): (_S_COMPLETED, _D_DELIVER),
        (_S_PROCEEDING, _E_TIMER_E): (_S_PROCEEDING, _D_RETRANSMIT_REQUEST),
        (_S_PROCEEDING, _E_TIMER_F): (_S_TERMINATED, _D_TIMEOUT),
        (_S_PROCEEDING, _E_RECV_1XX): (_S_PROCEEDING, _D_DELIVER),
        (_S_PROCEEDING, _E_RECV_2XX): (_S_COMPLETED, _D_DELIVER),
        (_S_PROCEEDING, _E_RECV_FINAL): (_S_COMPLETED, _D_DELIVER),
        (_S_COMPLETED, _E_RECV_1XX): (_S_COMPLETED, _D_NOTHING),
        (_S_COMPLETED, _E_RECV_2XX): (_S_COMPLETED, _D_NOTHING),
        (_S_COMPLETED, _E_RECV_FINAL): (_S_COMPLETED, _D_NOTHING),
        (_S_COMPLETED, _E_TIMER_K): (_S_TERMINATED, _D_NOTHING),
    },
    # RFC 3261 17.2.1 figure 7, with RFC 6026 7.1 (2xx -> Accepted, Timer L).
    Kind.INVITE_SERVER: {
        (_S_PROCEEDING, _E_RECV_REQUEST): (_S_PROCEEDING, _D_RESEND_RESPONSE),
        (_S_PROCEEDING, _E_RECV_ACK): (_S_PROCEEDING, _D_NOTHING),
        (_S_PROCEEDING, _E_SEND_1XX): (_S_PROCEEDING, _D_SEND_RESPONSE),
        (_S_PROCEEDING, _E_SEND_2XX): (_S_ACCEPTED, _D_SEND_RESPONSE),
        (_S_PROCEEDING, _E_SEND_FINAL): (_S_COMPLETED, _D_SEND_RESPONSE),
        (_S_COMPLETED, _E_RECV_REQUEST): (_S_COMPLETED, _D_RESEND_RESPONSE),
        (_S_COMPLETED, _E_TIMER_G): (_S_COMPLETED, _D_RESEND_RESPONSE),
        (_S_COMPLETED, _E_RECV_ACK): (_S_CONFIRMED, _D_NOTHING),
        (_S_COMPLETED, _E_TIMER_H): (_S_TERMINATED, _D_TIMEOUT),
        (_S_CONFIRMED, _E_RECV_REQUEST): (_S_CONFIRMED, _D_NOTHING),
        (_S_CONFIRMED, _E_RECV_ACK): (_S_CONFIRMED, _D_NOTHING),
        (_S_CONFIRMED, _E_TIMER_I): (_S_TERMINATED, _D_NOTHING),
        (_S_ACCEPTED, _E_RECV_REQUEST): (_S_ACCEPTED, _D_NOTHING),
        (_S_ACCEPTED, _E_RECV_ACK): (_S_ACCEPTED, _D_DELIVER),
        (_S_ACCEPTED, _E_SEND_2XX): (_S_ACCEPTED, _D_SEND_RESPONSE),
        (_S_ACCEPTED, _E_TIMER_L): (_S_TERMINATED, _D_NOTHING),
    },
    # RFC 3261 17.2.2 figure 8.
    Kind.NON_INVITE_SERVER: {
        (_S_TRYING, _E_RECV_REQUEST): (_S_TRYING, _D_NOTHING),
        (_S_TRYING, _E_SEND_1XX): (_S_PROCEEDING, _D_SEND_RESPONSE),
        (_S_TRYING, _E_SEND_2XX): (_S_COMPLETED, _D_SEND_RESPONSE),
        (_S_TRYING, _E_SEND_FINAL): (_S_COMPLETED, _D_SEND_RESPONSE),
        (_S_PROCEEDING, _E_RECV_REQUEST): (_S_PROCEEDING, _D_RESEND_RESPONSE),
        (_S_PROCEEDING, _E_SEND_1XX): (_S_PROCEEDING, _D_SEND_RESPONSE),
        (_S_PROCEEDING, _E_SEND_2XX): (_S_COMPLETED, _D_SEND_RESPONSE),
        (_S_PROCEEDING, _E_SEND_FINAL): (_S_COMPLETED, _D_SEND_RESPONSE),
        (_S_COMPLETED, _E_RECV_REQUEST): (_S_COMPLETED, _D_RESEND_RESPONSE),
        (_S_COMPLETED, _E_TIMER_J): (_S_TERMINATED, _D_NOTHING),
    },
}
# RFC 3261 17.1.4 / 17.2.4: a transport failure ends any live transaction.
for _kind, _table in TRANSITIONS.items():
    for _state in _ALIVE:
        if any(state is _state for state, _ in _table):
            _table[(_state, _E_TRANSPORT_ERROR)] = (_S_TERMINATED, _D_REPORT_TRANSPORT_ERROR)
del _kind, _table, _state


# --------------------------------------------------------------------------- errors


class TransactionError(Exception):
    """Misuse of the transaction layer by the TU (never caused by a peer's bytes alone)."""


class IllegalTransition(TransactionError):
    """The event is not allowed in the transaction's current state (see :data:`TRANSITIONS`)."""

    def __init__(self, kind: Kind, state: State, event: Event) -> None:
        super().__init__(f"{kind.value} transaction: {event.value!r} is illegal in state {state.value}")
        self.kind = kind
        self.state = state
        self.event = event


class TooManyTransactions(TransactionError):
    """The table is full; the server should answer 503 with a Retry-After (RFC 3261 21.5.4) statelessly."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"transaction table full ({limit} live transactions)")
        self.limit = limit


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
