"""A call's life in the user agent: the state table :data:`CALL_TRANSITIONS` and the :class:`Call` record.

Theory of operation
-------------------
A call moves only by :meth:`Call.move` ``(trigger)``, looked up in :data:`CALL_TRANSITIONS` keyed by
``(state, trigger)``; a trigger is what the UA core observed (``"1xx"``, ``"2xx"``, ``"ack"``,
``"remote_bye"`` ...) or was told (``"invite"``, ``"answer"``, ``"cancel"``, ``"bye"``). A move not in the table
raises :class:`UaError`: a command that is illegal now (``answer`` with no incoming call) changes nothing.
:class:`Call` also holds everything the UA remembers about the call (its dialog, the 2xx it re-sends until the
ACK, re-INVITE and transfer bookkeeping); applications read it, only the UA writes it.

Why a module of its own: the table is the call's rules, read apart from the machinery that applies them
(:mod:`leansip.ua.useragent`), as the transaction state table is apart from the transactions
(:mod:`leansip.sip.txstate`). Users import these names from :mod:`leansip.ua.useragent` as before.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from leansip.sip.message import Request
from leansip.sip.transaction import ClientTransaction, ServerTransaction
from leansip.ua.dialog import Dialog
from leansip.ua.refer import ReferTarget

__all__ = ["UaError", "CallState", "CALL_TRANSITIONS", "Call"]


class UaError(Exception):
    """A command that is illegal now (our caller's mistake, never the peer's)."""



class CallState(enum.Enum):
    IDLE = "idle"
    CALLING = "calling"  # INVITE sent, nothing above 100 yet
    EARLY = "early"  # a 1xx came back
    CANCELLING = "cancelling"  # cancel() was called; CANCEL sent once a provisional arrived (9.1)
    INCOMING = "incoming"  # INVITE received, 180 sent, waiting for answer()/reject()
    ANSWERED = "answered"  # our 2xx sent, waiting for the ACK (13.3.1.4)
    CONFIRMED = "confirmed"  # the call is up
    TERMINATING = "terminating"  # BYE sent
    ENDED = "ended"


_C = CallState

#: (state, trigger) -> next state. Triggers are what the UA core observed or was told.
CALL_TRANSITIONS: dict[tuple[CallState, str], CallState] = {
    (_C.IDLE, "invite"): _C.CALLING,
    (_C.IDLE, "incoming"): _C.INCOMING,
    (_C.CALLING, "1xx"): _C.EARLY,
    (_C.EARLY, "1xx"): _C.EARLY,
    (_C.CANCELLING, "1xx"): _C.CANCELLING,
    (_C.CALLING, "2xx"): _C.CONFIRMED,
    (_C.EARLY, "2xx"): _C.CONFIRMED,
    (_C.CANCELLING, "2xx"): _C.TERMINATING,  # CANCEL lost the race: ACK, then BYE (15)
    (_C.CALLING, "final"): _C.ENDED,
    (_C.EARLY, "final"): _C.ENDED,
    (_C.CANCELLING, "final"): _C.ENDED,
    (_C.CALLING, "cancel"): _C.CANCELLING,
    (_C.EARLY, "cancel"): _C.CANCELLING,
    (_C.INCOMING, "answer"): _C.ANSWERED,
    (_C.INCOMING, "reject"): _C.ENDED,
    (_C.INCOMING, "cancelled"): _C.ENDED,
    (_C.INCOMING, "remote_bye"): _C.ENDED,
    (_C.ANSWERED, "ack"): _C.CONFIRMED,
    (_C.ANSWERED, "no_ack"): _C.TERMINATING,
    (_C.ANSWERED, "remote_bye"): _C.ENDED,
    (_C.CONFIRMED, "bye"): _C.TERMINATING,
    (_C.CONFIRMED, "remote_bye"): _C.ENDED,
    (_C.TERMINATING, "remote_bye"): _C.ENDED,
    (_C.TERMINATING, "bye_done"): _C.ENDED,
}


@dataclass(slots=True)
class Call:
    """One call and everything the UA remembers about it. Read-only for applications."""

    role: str  # "uac" or "uas"
    call_id: str
    local_tag: str
    state: CallState = CallState.IDLE
    invite: Request | None = None
    invite_txn: ClientTransaction | ServerTransaction | None = None
    target: str = ""
    dialog: Dialog | None = None
    local_sdp: bytes = b""
    remote_sdp: bytes = b""
    got_provisional: bool = False
    cancel_sent: bool = False
    bye_pending: bool = False  # bye() while waiting for the ACK of our 2xx (15: wait for it)
    auth_tries: dict[tuple[str, str], int] = field(default_factory=dict)
    # end-to-end ACK of the last 2xx we received (re-sent when the 2xx is retransmitted)
    ack: bytes | None = None
    ack_cseq: int = 0
    # our last 2xx to an INVITE (initial or re-INVITE) until its ACK arrives
    ok: bytes | None = None
    ok_dest: tuple[str, int] = ("", 0)
    ok_cseq: int = 0
    ok_retx_at: float | None = None
    ok_interval: float = 0.0
    ok_give_up: float = 0.0
    give_up_at: float | None = None  # CANCEL sent and no final response yet
    # re-INVITE in progress: ("in", server txn) waiting for answer(), or ("out", client txn)
    reinvite_in: ServerTransaction | None = None
    reinvite_out: ClientTransaction | None = None
    reinvite_sdp: bytes = b""
    # 14.1: our re-INVITE got 491 (glare): sent again at this time
    reinvite_retry_at: float | None = None
    glare_retries: int = 0
    glare_sdp: bytes = b""  # the offer to send again (reinvite_sdp is reused by the peer's re-INVITE meanwhile)
    # 13.2.2.4: remote tag -> ACK (and where it goes) of another 2xx to our INVITE: a fork we hung up at once
    forks: dict[str, tuple[bytes, tuple[str, int]]] = field(default_factory=dict)
    # the call that replaced this one (RFC 3891); its end was reported then
    replaced_by: str | None = None
    # headers our INVITE carries besides the usual ones (Referred-By, Replaces for a transfer)
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    # RFC 3891: the call this one replaces (UAS: BYE it once we are confirmed; UAC: our INVITE carried Replaces)
    replaces: str | None = None
    # RFC 3515 transferee: this call was made for the REFER received in call ``refer_of``
    refer_of: str | None = None
    # RFC 3515 notifier side: the REFER we accepted in this call, while its subscription lasts
    refer_in: _ReferIn | None = None
    # RFC 3515 transferor side: our REFER in this call is pending or its subscription is active
    refer_out: bool = False
    # INFO requests wait for the previous one's answer (RFC 6086 4.2.1): (body, content type) still to send
    info_queue: deque[tuple[bytes, str]] = field(default_factory=deque)
    info_pending: bool = False

    @property
    def active(self) -> bool:
        return self.state not in (CallState.IDLE, CallState.ENDED)

    def move(self, trigger: str) -> CallState:
        """Apply ``trigger`` after :data:`CALL_TRANSITIONS`; raises :class:`UaError` if it is illegal now."""
        try:
            new = CALL_TRANSITIONS[(self.state, trigger)]
        except KeyError:
            raise UaError(f"{trigger!r} is illegal in call state {self.state.value}") from None
        self.state = new
        return new


@dataclass(slots=True)
class _ReferIn:
    """A REFER we accepted: what to call, and whether its implicit subscription still runs (RFC 3515 2.4.4)."""

    target: ReferTarget
    referred_by: str | None
    event: str  # the Event header of our NOTIFYs: "refer", or "refer;id=N" after the dialog's first REFER
    active: bool = True
