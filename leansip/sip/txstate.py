"""The RFC 3261 section 17 transaction state table (with RFC 6026 "Accepted"): timers, states, events, moves.

Theory of operation
-------------------
The legal moves of the four machines (INVITE/non-INVITE, client/server) are one table, :data:`TRANSITIONS`,
keyed by ``(kind, state, event)``; its value is the next state and what to do (:class:`Do`). Anything not in the
table raises :class:`IllegalTransition` -- a bug in the TU (a provisional after a final, a second ``start()``)
or a call on a terminated transaction. Events that come from the peer (responses, retransmitted requests, ACKs)
are legal in every live state: the network may send anything, and what the RFC does not assign is absorbed.

:class:`Timers` holds T1, T2, T4 and the timers derived from them (RFC 3261 table 4). The machines that walk
the table are in :mod:`leansip.sip.transaction`; the table of live transactions in :mod:`leansip.sip.txtable`.
This module imports neither: it is the table alone, as h11's ``_state.py`` is.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_TIMERS",
    "TRANSITIONS",
    "Do",
    "Event",
    "IllegalTransition",
    "Kind",
    "State",
    "TransactionError",
    "Timers",
    "on_grid",
]


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
