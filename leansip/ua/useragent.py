"""The leansip user agent core (UAC and UAS, RFC 3261 sections 8, 10, 12-15, 22), sans-I/O.

Theory of operation
-------------------
:class:`UserAgent` is driven like the server core: bytes in, bytes out, time passed in.

* :meth:`UserAgent.receive` takes one datagram, its source and ``now``;
* :meth:`UserAgent.handle_timers` runs whatever is due at ``now``; :meth:`UserAgent.next_deadline` tells the
  shell when to call it next (ONE timer for the transactions, the registration refresh and our own 2xx
  retransmissions);
* commands: :meth:`register`, :meth:`unregister`, :meth:`invite`, :meth:`cancel`, :meth:`answer`,
  :meth:`reject`, :meth:`bye`, :meth:`hangup`, :meth:`reinvite`, :meth:`info`, :meth:`refer`,
  :meth:`decline_transfer`, :meth:`options`. Call commands act on the call named by ``call_id``, or on
  :attr:`UserAgent.call` (the last one made or received) without it.

Every entry point returns a list of *outputs*: :class:`~leansip.sip.send.Send` items for the transport and
events (:class:`Registered`, :class:`IncomingCall`, :class:`CallEstablished`, :class:`CallEnded` ...) for the
application, in the order they happened; every call event carries its call's Call-ID. Illegal commands
(``answer`` with no incoming call, ``refer`` outside an established call) raise :class:`UaError` and change
nothing.

Retransmissions and timeouts of requests come from :mod:`leansip.sip.transaction` (one
:class:`~leansip.sip.txtable.TransactionTable`); the UA adds only what section 13 leaves to the TU:
re-sending our 2xx to an INVITE until its ACK arrives (13.3.1.4), the ACK of a 2xx, which is end-to-end and
built here with a new branch (13.2.2.4) -- for every 2xx: a second fork that answers too is ACKed and hung up
with a BYE at once --, and the retry of a re-INVITE refused with 491 after the random wait of 14.1.

Several calls can exist at once (:attr:`UserAgent.calls`, by Call-ID): a transfer needs two. Incoming calls are
limited by ``UaConfig.max_calls`` (one more gets 486 Busy Here, 13.3.1.3), except an INVITE with Replaces
(RFC 3891) for one of our calls, which takes that call's place. Transfer (RFC 3515 REFER with its implicit
subscription, NOTIFY with message/sipfrag; RFC 5589's call flows): :meth:`refer` as transferor, with
:class:`TransferProgress` events; as transferee a REFER is answered 202 and reported as
:class:`TransferRequested`, and the call the application then makes with ``invite(..., transfer_of=...)`` is
reported to the transferor in NOTIFYs. INFO carrying DTMF (application/dtmf-relay) becomes
:class:`DtmfReceived`. Each call's life is the table :data:`CALL_TRANSITIONS`; a move not in it raises
:class:`UaError`.

Layout: this module is the transaction user itself (:class:`UserAgent`, its configuration :class:`UaConfig`) and
the public home of the names it exported before; the events it reports are in :mod:`leansip.ua.events`, the call
state table and the :class:`Call` record in :mod:`leansip.ua.callstate`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from leansip.media.dtmf import DTMF_PLAIN, DTMF_RELAY, parse_info_body
from leansip.sip.digest import build_authorization, choose_challenge
from leansip.sip.digest_hash import DigestError
from leansip.sip.digest_parse import parse_digest
from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    REASONS,
    Request,
    Response,
    build_request,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from leansip.sip.send import Send
from leansip.sip.transaction import (
    ClientTransaction,
    Deliver,
    InviteServerTransaction,
    ServerTransaction,
    Terminated,
    Timeout,
    TransportError,
)
from leansip.sip.txstate import DEFAULT_TIMERS, Timers, TransactionError
from leansip.sip.txtable import TooManyTransactions, TransactionTable
from leansip.sip.uri import SipURI, parse_uri
from leansip.ua.callstate import CALL_TRANSITIONS, Call, CallState, UaError, _ReferIn
from leansip.ua.dialog import (
    MAX_FORWARDS,
    DialogError,
    dialog_as_uac,
    dialog_as_uas,
    new_branch,
    new_call_id,
    new_tag,
    uri_destination,
)
from leansip.ua.events import (
    CallEnded,
    CallEstablished,
    CallUpdated,
    CallUpdateFailed,
    DtmfReceived,
    IncomingCall,
    OfferReceived,
    OptionsResult,
    Output,
    Registered,
    RegistrationFailed,
    Ringing,
    TransferProgress,
    TransferRequested,
    UaEvent,
    Unregistered,
)
from leansip.ua.refer import (
    SIPFRAG,
    ReferError,
    ReplacesId,
    parse_refer_to,
    parse_replaces,
    parse_sipfrag,
    refer_to_value,
    sipfrag,
    subscription_terminated,
)

__all__ = [
    "UaConfig",
    "UaError",
    "CallState",
    "CALL_TRANSITIONS",
    "Call",
    "UserAgent",
    "UaEvent",
    "Registered",
    "RegistrationFailed",
    "Unregistered",
    "IncomingCall",
    "Ringing",
    "CallEstablished",
    "OfferReceived",
    "CallUpdated",
    "CallUpdateFailed",
    "CallEnded",
    "OptionsResult",
    "DtmfReceived",
    "TransferRequested",
    "TransferProgress",
    "Output",
]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"
SUPPORTED = "replaces"
SDP = "application/sdp"
MAX_STALE_RETRIES = 3  # a server that says stale=true forever must not make us loop
#: 14.1: how often a re-INVITE answered 491 is tried again before CallUpdateFailed(491) is reported
MAX_GLARE_RETRIES = 3
#: ended calls kept in :attr:`UserAgent.calls` for late lookups (a bound: the rest are forgotten)
KEEP_ENDED = 8
#: NOTIFY's implicit-subscription lifetime we announce (RFC 3515 2.4.4 leaves it to the notifier)
REFER_EXPIRES = 60
#: INFO requests (DTMF digits) waiting for the previous one's answer, per call
MAX_QUEUED_INFO = 64


def _check_sip_uri(text: str, what: str) -> None:
    """A command's URI must parse and be sip:/sips: (our caller's mistake otherwise: :class:`UaError`)."""
    try:
        uri = parse_uri(text)
    except SipParseError as exc:
        raise UaError(f"bad {what} URI: {exc.reason}") from None
    if not isinstance(uri, SipURI):
        raise UaError(f"{what} must be a sip: URI")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True, kw_only=True)
class UaConfig:
    """Who we are and where to send things.

    ``local`` is the address written in Via and Contact (the socket's address). ``server`` is the registrar
    and outbound proxy; without it the UA works peer to peer (direct mode) and sends each request to its
    Request-URI. ``domain`` is the host part of our address-of-record (default: the server's host, else ours).
    """

    user: str
    local: tuple[str, int]
    password: str | None = None
    server: tuple[str, int] | None = None
    domain: str | None = None
    display: str | None = None
    transport: str = "udp"
    user_agent: str = "leansip-phone"
    timers: Timers = DEFAULT_TIMERS
    #: incoming calls that may ring or talk at once; one more gets 486 Busy Here (13.3.1.3). An INVITE that
    #: replaces a call of ours (RFC 3891) is always taken; outgoing calls are the application's to limit.
    max_calls: int = 1

    @property
    def aor_domain(self) -> str:
        if self.domain:
            return self.domain
        host = (self.server or self.local)[0]
        return f"[{host}]" if ":" in host else host  # an IPv6 address in a URI is bracketed (RFC 3261 25.1)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.aor_domain}"

    @property
    def contact_uri(self) -> str:
        host, port = self.local
        host = f"[{host}]" if ":" in host else host
        # over a stream the transport parameter makes requests to us come back over TCP/TLS (RFC 3261 19.1.4)
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{self.user}@{host}:{port}{suffix}"




@dataclass(slots=True)
class _Registration:
    call_id: str
    from_tag: str
    cseq: int = 0
    expires: int = 0  # what we asked for; 0 while unregistering
    refresh_at: float | None = None
    registered: bool = False
    txn: ClientTransaction | None = None
    auth_tries: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(slots=True)
class _Credential:
    challenge: str
    nc: int = 0


# --------------------------------------------------------------------------- the user agent


class UserAgent:
    """A SIP phone's signalling core. See the module docstring for the calling convention."""

    def __init__(self, config: UaConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.table = TransactionTable(timers=config.timers)
        #: every call by Call-ID, the ended ones too (at most :data:`KEEP_ENDED` of those)
        self.calls: dict[str, Call] = {}
        self._last: Call | None = None
        self._reg = _Registration(call_id=new_call_id(config.local[0]), from_tag=new_tag())
        # each client transaction -> what it is for, and the call it belongs to
        self._ops: dict[ClientTransaction, tuple[str, Call | None]] = {}
        # (header name, realm) -> last challenge; reused with a rising nc for later requests (RFC 7616 3.4)
        self._creds: dict[tuple[str, str], _Credential] = {}
        self.rng = rng or random.Random()

    # ------------------------------------------------------------------ properties
    @property
    def registered(self) -> bool:
        return self._reg.registered

    @property
    def call(self) -> Call | None:
        """The call made or received last (the one commands act on when they are given no ``call_id``)."""
        return self._last

    @property
    def in_call(self) -> bool:
        """Some call is not over yet."""
        return any(c.active for c in self.calls.values())

    @property
    def active_calls(self) -> list[Call]:
        return [c for c in self.calls.values() if c.active]

    def _get(self, call_id: str | None) -> Call | None:
        return self._last if call_id is None else self.calls.get(call_id)

    def _add_call(self, call: Call) -> None:
        self.calls[call.call_id] = call
        self._last = call
        ended = [k for k, c in self.calls.items() if not c.active and c is not call]
        for key in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self.calls[key]

    # ------------------------------------------------------------------ input
    def receive(self, data: bytes, source: tuple[str, int], now: float) -> list[Output]:
        """Handle one datagram from ``source``. Malformed requests get a stateless 400 (8.2); malformed
        responses and keep-alives are dropped. Never raises for anything the peer sent."""
        if not data.strip(b"\r\n"):
            return []  # RFC 5626 CRLF keep-alive
        try:
            msg = parse_message(data)
            if isinstance(msg, Request):
                validate_request(msg)
            else:
                validate_response(msg)
        except SipParseError as exc:
            bad = exc.message
            if isinstance(bad, Request) and exc.status and bad.method != "ACK":
                try:
                    resp = make_response(bad, exc.status, "Bad Request", to_tag=new_tag())
                    dest = (source[0], bad.top_via.port or 5060)
                    if "rport" in bad.top_via.params:
                        dest = source
                    return [Send(resp.to_bytes(), dest, self.config.transport)]
                except SipParseError:
                    return []
            return []
        if isinstance(msg, Request):
            try:
                actions = self.table.receive_request(msg, source, self.config.transport, now)
            except TooManyTransactions:
                return []
            return self._process(actions, now)
        return self._process(self.table.receive_response(msg, now), now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` next has work (transactions, refresh, 2xx retransmission, a glare retry),
        or None."""
        times = [self.table.next_deadline(), self._reg.refresh_at]
        for call in self.calls.values():
            times += [call.ok_retx_at, call.give_up_at, call.reinvite_retry_at]
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def handle_timers(self, now: float) -> list[Output]:
        """Fire everything due at ``now``."""
        out = self._process(self.table.handle_timers(now), now)
        reg = self._reg
        if reg.refresh_at is not None and reg.refresh_at <= now:
            reg.refresh_at = None
            if reg.txn is None:
                out += self._send_register(reg.expires, now, fresh=True)
        for call in list(self.calls.values()):
            if call.ok_retx_at is not None and call.ok_retx_at <= now:
                if now >= call.ok_give_up:
                    out += self._no_ack(call, now)
                else:
                    assert call.ok is not None
                    out.append(Send(call.ok, call.ok_dest, self.config.transport))
                    call.ok_interval = min(call.ok_interval * 2, self.config.timers.t2)
                    call.ok_retx_at = min(now + call.ok_interval, call.ok_give_up)
            if call.give_up_at is not None and call.give_up_at <= now:
                call.give_up_at = None
                if call.state is CallState.CANCELLING:
                    # 9.1: the INVITE transaction should have ended with a 487; the peer never sent one
                    call.move("final")
                    out.append(CallEnded(call_id=call.call_id, reason="cancelled", status=None))
                    out += self._notify_transfer(call, 487, "Request Terminated", now)
            if call.reinvite_retry_at is not None and call.reinvite_retry_at <= now:
                call.reinvite_retry_at = None
                if call.state is not CallState.CONFIRMED:
                    out.append(CallUpdateFailed(call_id=call.call_id, status=491))
                elif call.reinvite_in is not None or call.ok_retx_at is not None:
                    call.reinvite_retry_at = now + self.rng.randint(10, 200) / 100  # the peer's offer first
                else:
                    out += self._send_reinvite(call, call.glare_sdp, now)
        return out

    # ------------------------------------------------------------------ commands: registration
    def register(self, expires: int = 3600, *, now: float) -> list[Output]:
        """Register our Contact at the server for ``expires`` seconds; refreshed at half the granted time
        until :meth:`unregister`. Raises :class:`UaError` in direct mode or while a REGISTER is pending."""
        if self.config.server is None:
            raise UaError("register needs a server")
        if expires <= 0:
            raise UaError("expires must be positive; use unregister()")
        if self._reg.txn is not None:
            raise UaError("a REGISTER is already in progress")
        return self._send_register(expires, now, fresh=True)

    def unregister(self, *, now: float) -> list[Output]:
        """Remove our binding (REGISTER with expires=0) and stop refreshing."""
        if self.config.server is None:
            raise UaError("unregister needs a server")
        reg = self._reg
        reg.refresh_at = None
        if reg.txn is not None:
            self._ops.pop(reg.txn, None)  # its answer no longer matters
            reg.txn = None
        return self._send_register(0, now, fresh=True)

    def _send_register(self, expires: int, now: float, *, fresh: bool) -> list[Output]:
        cfg = self.config
        assert cfg.server is not None
        reg = self._reg
        if fresh:
            reg.auth_tries = {}
        reg.expires = expires
        reg.cseq += 1
        host, port = cfg.server
        ruri = f"sip:{cfg.aor_domain}"
        if cfg.aor_domain.strip("[]") == host and port != 5060:
            ruri += f":{port}"
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", MAX_FORWARDS),
            ("From", f"<{cfg.aor}>;tag={reg.from_tag}"),
            ("To", f"<{cfg.aor}>"),
            ("Call-ID", reg.call_id),
            ("CSeq", f"{reg.cseq} REGISTER"),
            ("Contact", f"<{cfg.contact_uri}>"),
            ("Expires", str(expires)),
            ("Allow", ALLOW),
            ("User-Agent", cfg.user_agent),
        ]
        req = build_request("REGISTER", ruri, headers)
        self._authorize(req)
        out: list[Output] = []
        reg.txn = self._start_client(req, cfg.server, "register", now, out)
        return out

    def _granted_expiry(self, resp: Response, asked: int) -> int:
        """The expiry the registrar granted our contact (10.2.4): its Contact's expires parameter, else the
        Expires header, else what we asked for."""
        mine = parse_uri(self.config.contact_uri)
        for contact in resp.contacts:
            try:
                uri = contact.uri
            except SipParseError:
                continue
            if (
                isinstance(uri, SipURI)
                and isinstance(mine, SipURI)
                and uri.host == mine.host
                and uri.effective_port == mine.effective_port
                and uri.user == mine.user
            ):
                value = contact.params.get("expires")
                if value and value.isdigit():
                    return int(value)
        try:
            header = resp.expires
        except SipParseError:
            header = None
        return header if header is not None else asked

    def _on_register_response(self, resp: Response, now: float) -> list[Output]:
        reg = self._reg
        status = resp.status
        if status < 200:
            return []
        reg.txn = None
        if status in (401, 407):
            if self._accept_challenge(resp, reg.auth_tries):
                return self._send_register(reg.expires, now, fresh=False)
            reg.registered = False
            return [RegistrationFailed(status=status, reason=resp.reason or "authentication failed")]
        if status == 423 and reg.expires:
            # 10.2.8: Interval Too Brief carries the minimum we must ask for
            try:
                minimum = resp.int_header("min-expires")
            except SipParseError:
                minimum = None
            if minimum and minimum > reg.expires:
                return self._send_register(minimum, now, fresh=False)
        if 200 <= status < 300:
            if reg.expires == 0:
                reg.registered = False
                return [Unregistered()]
            granted = self._granted_expiry(resp, reg.expires)
            if granted <= 0:
                reg.registered = False
                return [RegistrationFailed(status=status, reason="registrar granted no time")]
            reg.registered = True
            # refresh at half the granted time (a common choice; RFC 3261 10.2.4 leaves it to us)
            reg.refresh_at = now + max(granted / 2, 1.0)
            return [Registered(expires=granted)]
        reg.registered = False
        return [RegistrationFailed(status=status, reason=resp.reason or "")]

    # ------------------------------------------------------------------ commands: calls
    def invite(self, target_uri: str, sdp_offer: bytes, *, now: float, transfer_of: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> list[Output]:
        """Call ``target_uri`` (a sip: URI) with our SDP offer. Through the server when one is configured,
        else straight to the URI's host and port. The new call becomes :attr:`call`; its events carry its
        Call-ID.

        ``transfer_of`` names the call whose REFER (:class:`TransferRequested`) this call carries out: the INVITE
        gets its Referred-By and Replaces, and the transferor hears how it goes (NOTIFY) until it ends. Raises
        :class:`UaError` for a bad URI or a ``transfer_of`` with no pending REFER."""
        _check_sip_uri(target_uri, "target")
        extra = list(headers or [])
        refer_of: str | None = None
        replaces: str | None = None
        if transfer_of is not None:
            old = self.calls.get(transfer_of)
            if old is None or old.refer_in is None or not old.refer_in.active:
                raise UaError("no transfer was asked for in that call")
            refer_of = transfer_of
            if old.refer_in.referred_by:
                extra.append(("Referred-By", old.refer_in.referred_by))
            if old.refer_in.target.replaces is not None:
                extra.append(("Replaces", old.refer_in.target.replaces.value()))
                replaces = old.refer_in.target.replaces.call_id
        call = Call(role="uac", call_id=new_call_id(self.config.local[0]), local_tag=new_tag())
        call.target = target_uri
        call.local_sdp = sdp_offer
        call.refer_of = refer_of
        call.replaces = replaces
        call.extra_headers = extra
        call.move("invite")
        self._add_call(call)
        return self._send_invite(call, 1, now)

    def _send_invite(self, call: Call, cseq: int, now: float) -> list[Output]:
        cfg = self.config
        from_value = f"<{cfg.aor}>" if not cfg.display else f'"{cfg.display}" <{cfg.aor}>'
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", MAX_FORWARDS),
            ("From", f"{from_value};tag={call.local_tag}"),
            ("To", f"<{call.target}>"),
            ("Call-ID", call.call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", f"<{cfg.contact_uri}>"),
            ("Allow", ALLOW),
            ("Supported", SUPPORTED),
            ("User-Agent", cfg.user_agent),
            *call.extra_headers,
        ]
        req = build_request("INVITE", call.target, headers, call.local_sdp, SDP)
        self._authorize(req)
        call.invite = req
        dest = cfg.server if cfg.server is not None else uri_destination(call.target)
        out: list[Output] = []
        call.invite_txn = self._start_client(req, dest, "invite", now, out, call)
        return out

    def cancel(self, *, now: float, call_id: str | None = None) -> list[Output]:
        """Cancel our ringing call (9.1). The CANCEL goes out once a provisional response has arrived; the
        call ends when the INVITE gets its (487) final response. Raises :class:`UaError` if there is no
        outgoing call still ringing."""
        call = self._get(call_id)
        if call is None or call.role != "uac" or call.state not in (CallState.CALLING, CallState.EARLY):
            raise UaError("no outgoing call to cancel")
        call.move("cancel")
        call.give_up_at = now + 64 * self.config.timers.t1
        if call.got_provisional:
            return self._send_cancel(call, now)
        return []

    def _send_cancel(self, call: Call, now: float) -> list[Output]:
        invite = call.invite
        txn = call.invite_txn
        assert invite is not None and txn is not None
        call.cancel_sent = True
        # 9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via (branch) as the INVITE, and its Route
        headers: list[tuple[str, str]] = [("Via", str(invite.top_via)), ("Max-Forwards", MAX_FORWARDS)]
        headers += [("Route", r) for r in invite.header_lines("route")]
        headers += [
            ("From", invite.header("from") or ""),
            ("To", invite.header("to") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq[0]} CANCEL"),
            ("User-Agent", self.config.user_agent),
        ]
        req = build_request("CANCEL", invite.uri, headers)
        out: list[Output] = []
        self._start_client(req, txn.dest, "cancel", now, out, call)
        return out

    def answer(self, sdp: bytes, *, now: float, call_id: str | None = None) -> list[Output]:
        """Accept the ringing incoming call, or the pending re-INVITE, with our SDP answer (200 OK).
        Raises :class:`UaError` when there is nothing to answer."""
        call = self._get(call_id)
        if call is None:
            raise UaError("nothing to answer")
        if call.reinvite_in is not None:
            txn = call.reinvite_in
            call.reinvite_in = None
            call.local_sdp = sdp
            call.remote_sdp = call.reinvite_sdp
            return self._send_2xx(call, txn, sdp, now)
        if call.state is not CallState.INCOMING:
            raise UaError(f"nothing to answer in call state {call.state.value}")
        invite_txn = call.invite_txn
        assert isinstance(invite_txn, ServerTransaction)
        call.move("answer")
        call.local_sdp = sdp
        return self._send_2xx(call, invite_txn, sdp, now)

    def _send_2xx(self, call: Call, txn: ServerTransaction, sdp: bytes, now: float) -> list[Output]:
        req = txn.request
        resp = make_response(
            req, 200, to_tag=call.local_tag, headers=self._uas_headers(req), body=sdp, content_type=SDP
        )
        out: list[Output] = []
        try:
            out += self._process(txn.send_response(resp, now), now)
        except TransactionError:
            return out  # the transaction died (timeout, transport error) under us
        # 13.3.1.4: the TU retransmits its 2xx, T1 doubling to T2, until the ACK or 64*T1
        t = self.config.timers
        call.ok = resp.to_bytes()
        call.ok_dest = txn.dest
        call.ok_cseq = req.cseq[0]
        call.ok_interval = t.t1
        call.ok_retx_at = now + t.t1
        call.ok_give_up = now + 64 * t.t1
        return out

    def reject(self, status: int = 486, *, now: float, call_id: str | None = None) -> list[Output]:
        """Refuse the ringing incoming call (486 Busy Here, 603 Decline ...) or the pending re-INVITE
        (488 Not Acceptable Here). Raises :class:`UaError` when there is nothing to refuse."""
        if not 300 <= status <= 699:
            raise UaError("reject needs a status of 300-699")
        call = self._get(call_id)
        if call is None:
            raise UaError("nothing to reject")
        if call.reinvite_in is not None:
            txn = call.reinvite_in
            call.reinvite_in = None
            return self._respond(txn, status, now, to_tag=call.local_tag)
        if call.state is not CallState.INCOMING:
            raise UaError(f"nothing to reject in call state {call.state.value}")
        assert isinstance(call.invite_txn, ServerTransaction)
        call.move("reject")
        out = self._respond(call.invite_txn, status, now, to_tag=call.local_tag)
        out.append(CallEnded(call_id=call.call_id, reason="rejected", status=status))
        return out

    def bye(self, *, now: float, call_id: str | None = None) -> list[Output]:
        """Hang up an established call (15.1). While our 2xx waits for its ACK, the BYE waits too (15).
        Raises :class:`UaError` if there is no established call; use :meth:`hangup` to end a call in any state."""
        call = self._get(call_id)
        if call is None or call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            raise UaError("no established call to hang up")
        if call.state is CallState.ANSWERED:
            call.bye_pending = True
            return []
        call.move("bye")
        return self._send_bye(call, now)

    def hangup(self, *, now: float, call_id: str | None = None) -> list[Output]:
        """End the call whatever its state: CANCEL while ringing out, 603 while ringing in, else BYE."""
        call = self._get(call_id)
        if call is None or not call.active:
            return []
        if call.state in (CallState.CALLING, CallState.EARLY):
            return self.cancel(now=now, call_id=call.call_id)
        if call.state is CallState.INCOMING:
            return self.reject(603, now=now, call_id=call.call_id)
        if call.state in (CallState.CONFIRMED, CallState.ANSWERED):
            return self.bye(now=now, call_id=call.call_id)
        return []

    def _send_bye(self, call: Call, now: float) -> list[Output]:
        dialog = call.dialog
        assert dialog is not None
        call.ok_retx_at = None
        call.reinvite_retry_at = None
        req = dialog.request("BYE", self._via(), extra=[("User-Agent", self.config.user_agent)])
        out: list[Output] = []
        self._start_client(req, dialog.next_hop(), "bye", now, out, call)
        return out

    def reinvite(self, sdp: bytes, *, now: float, call_id: str | None = None) -> list[Output]:
        """Send a new offer in the established call (14.1), e.g. ``a=sendonly`` to hold. Raises
        :class:`UaError` outside an established call or while another offer is pending (14.1 forbids two).
        A 491 (glare, 14.1) is retried after the RFC's random wait; :class:`CallUpdateFailed` only when that
        fails too."""
        call = self._get(call_id)
        if call is None or call.state is not CallState.CONFIRMED:
            raise UaError("no established call")
        if (call.reinvite_in is not None or call.reinvite_out is not None or call.ok_retx_at is not None
                or call.reinvite_retry_at is not None):
            raise UaError("an offer/answer exchange is already in progress")
        call.glare_retries = 0
        return self._send_reinvite(call, sdp, now)

    def _send_reinvite(self, call: Call, sdp: bytes, now: float) -> list[Output]:
        dialog = call.dialog
        assert dialog is not None
        req = dialog.request(
            "INVITE", self._via(), contact=f"<{self.config.contact_uri}>", body=sdp, content_type=SDP,
            extra=[("Allow", ALLOW), ("Supported", SUPPORTED), ("User-Agent", self.config.user_agent)],
        )
        call.reinvite_sdp = sdp
        out: list[Output] = []
        call.reinvite_out = self._start_client(req, dialog.next_hop(), "reinvite", now, out, call)
        return out

    def info(self, body: bytes, content_type: str, *, now: float, call_id: str | None = None) -> list[Output]:
        """Send an INFO in the established call (RFC 6086 legacy use: DTMF as application/dtmf-relay). Raises
        :class:`UaError` outside an established call."""
        call = self._in_dialog(call_id)
        if call.info_pending:
            if len(call.info_queue) >= MAX_QUEUED_INFO:
                raise UaError("too many INFO requests queued")
            call.info_queue.append((body, content_type))
            return []
        return self._send_info(call, body, content_type, now)

    def _send_info(self, call: Call, body: bytes, content_type: str, now: float) -> list[Output]:
        assert call.dialog is not None
        req = call.dialog.request("INFO", self._via(), body=body, content_type=content_type,
                                  extra=[("User-Agent", self.config.user_agent)])
        call.info_pending = True
        out: list[Output] = []
        self._start_client(req, call.dialog.next_hop(), "info", now, out, call)
        return out

    def _next_info(self, call: Call, now: float) -> list[Output]:
        """The previous INFO got its final answer (or none): send the next queued one."""
        call.info_pending = False
        if call.info_queue and call.state is CallState.CONFIRMED and call.dialog is not None:
            body, content_type = call.info_queue.popleft()
            return self._send_info(call, body, content_type, now)
        call.info_queue.clear()
        return []

    def refer(self, target_uri: str, *, now: float, call_id: str | None = None,
              replaces_call: str | None = None) -> list[Output]:
        """Ask the peer of the established call to call ``target_uri`` (REFER, RFC 3515): a blind transfer; with
        ``replaces_call`` (our established call with the target) an attended one, whose Refer-To carries that
        dialog's Replaces (RFC 3891, RFC 5589 7). :class:`TransferProgress` events follow. Raises
        :class:`UaError` outside an established call, for a bad URI, or while a transfer is still going on."""
        call = self._in_dialog(call_id)
        if call.refer_out:
            raise UaError("a transfer of this call is already in progress")
        _check_sip_uri(target_uri, "transfer target")
        replaces: ReplacesId | None = None
        if replaces_call is not None:
            other = self.calls.get(replaces_call)
            if other is None or other.dialog is None or other.state is not CallState.CONFIRMED:
                raise UaError("the call to replace is not established")
            d = other.dialog
            replaces = ReplacesId(call_id=d.call_id, to_tag=d.remote_tag, from_tag=d.local_tag)
        assert call.dialog is not None
        cfg = self.config
        req = call.dialog.request("REFER", self._via(), contact=f"<{cfg.contact_uri}>", extra=[
            ("Refer-To", refer_to_value(target_uri, replaces)),
            ("Referred-By", f"<{cfg.aor}>"),
            ("Allow", ALLOW),
            ("User-Agent", cfg.user_agent),
        ])
        call.refer_out = True
        out: list[Output] = []
        self._start_client(req, call.dialog.next_hop(), "refer", now, out, call)
        return out

    def decline_transfer(self, status: int = 603, *, now: float, call_id: str | None = None) -> list[Output]:
        """Refuse the transfer the peer asked for (:class:`TransferRequested`): the final NOTIFY carries
        ``status`` (603 Declined by default). Raises :class:`UaError` when no transfer is pending."""
        call = self._get(call_id)
        if call is None or call.refer_in is None or not call.refer_in.active:
            raise UaError("no transfer to decline")
        if not 300 <= status <= 699:
            raise UaError("decline_transfer needs a status of 300-699")
        return self._send_notify(call, status, REASONS.get(status, "Declined"), now)

    def _in_dialog(self, call_id: str | None) -> Call:
        call = self._get(call_id)
        if call is None or call.state is not CallState.CONFIRMED or call.dialog is None:
            raise UaError("no established call")
        return call

    def options(self, target_uri: str, *, now: float) -> list[Output]:
        """Send an OPTIONS (11) to ``target_uri``: a capability query or a keep-alive. Ends in
        :class:`OptionsResult`."""
        cfg = self.config
        headers = [
            ("Via", self._via()),
            ("Max-Forwards", MAX_FORWARDS),
            ("From", f"<{cfg.aor}>;tag={new_tag()}"),
            ("To", f"<{target_uri}>"),
            ("Call-ID", new_call_id(cfg.local[0])),
            ("CSeq", "1 OPTIONS"),
            ("Accept", SDP),
            ("User-Agent", cfg.user_agent),
        ]
        req = build_request("OPTIONS", target_uri, headers)
        dest = cfg.server if cfg.server is not None else uri_destination(target_uri)
        out: list[Output] = []
        self._start_client(req, dest, "options", now, out)
        return out

    # ------------------------------------------------------------------ transfer: the notifier side
    def _send_notify(self, call: Call, status: int, reason: str, now: float) -> list[Output]:
        """Tell the transferor how its REFER goes (RFC 3515 2.4.4): one sipfrag status line; a final status
        ends the implicit subscription."""
        sub = call.refer_in
        if sub is None or not sub.active or call.dialog is None or call.state is not CallState.CONFIRMED:
            return []
        final = status >= 200
        state = "terminated;reason=noresource" if final else f"active;expires={REFER_EXPIRES}"
        if final:
            sub.active = False
        req = call.dialog.request("NOTIFY", self._via(), contact=f"<{self.config.contact_uri}>",
                                  body=sipfrag(status, reason), content_type=SIPFRAG, extra=[
                                      ("Event", sub.event), ("Subscription-State", state),
                                      ("User-Agent", self.config.user_agent)])
        out: list[Output] = []
        self._start_client(req, call.dialog.next_hop(), "notify", now, out, call)
        return out

    def _notify_transfer(self, call: Call, status: int, reason: str, now: float) -> list[Output]:
        """A call made for a REFER got ``status``: pass it on to the transferor's call."""
        if call.refer_of is None or status == 100:
            return []
        old = self.calls.get(call.refer_of)
        return self._send_notify(old, status, reason, now) if old is not None else []

    # ------------------------------------------------------------------ machinery
    def _via(self) -> str:
        host, port = self.config.local
        host = f"[{host}]" if ":" in host else host
        # rport (RFC 3581): answer to the address the request came from, so NATed phones get their responses
        return f"SIP/2.0/{self.config.transport.upper()} {host}:{port};rport;branch={new_branch()}"

    def _uas_headers(self, req: Request) -> list[tuple[str, str]]:
        """Headers of a dialog-creating response: Record-Route copied in order (12.1.1) and our Contact."""
        headers = [("Record-Route", rr) for rr in req.header_lines("record-route")]
        headers += [("Contact", f"<{self.config.contact_uri}>"), ("Allow", ALLOW), ("Supported", SUPPORTED),
                    ("User-Agent", self.config.user_agent)]
        return headers

    def _start_client(
        self, req: Request, dest: tuple[str, int], op: str, now: float, out: list[Output], call: Call | None = None
    ) -> ClientTransaction:
        txn = self.table.create_client(req, dest, self.config.transport)
        self._ops[txn] = (op, call)
        out += self._process(txn.start(now), now)
        return txn

    def _respond(
        self, txn: ServerTransaction, status: int, now: float, *, to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None, reason: str | None = None,
    ) -> list[Output]:
        resp = make_response(txn.request, status, reason, to_tag=to_tag or new_tag(), headers=headers or [])
        try:
            return self._process(txn.send_response(resp, now), now)
        except TransactionError:
            return []

    def _process(self, actions: list, now: float) -> list[Output]:  # type: ignore[type-arg]
        """Turn transaction actions into outputs: sends pass through, deliveries reach the TU logic."""
        out: list[Output] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(action)
            elif isinstance(action, Deliver):
                msg = action.message
                owner = action.transaction
                assert owner is None or isinstance(owner, ClientTransaction | ServerTransaction)
                if isinstance(msg, Request):
                    out += self._on_request(msg, owner, now)
                else:
                    out += self._on_response(msg, owner, now)
            elif isinstance(action, Timeout | TransportError):
                txn = action.transaction
                if isinstance(txn, ClientTransaction):
                    out += self._on_client_failure(txn, now)
                elif isinstance(txn, InviteServerTransaction):
                    pass  # Timer H: the ACK for our non-2xx never came; nothing left to do (17.2.1)
            elif isinstance(action, Terminated):
                txn = action.transaction
                if isinstance(txn, ClientTransaction):
                    self._ops.pop(txn, None)
        return out

    # ------------------------------------------------------------------ authentication (RFC 3261 22)
    def _authorize(self, req: Request) -> None:
        """Add credentials for every realm that challenged us before, with the next nonce count."""
        cfg = self.config
        if cfg.password is None:
            return
        for (header, _realm), cred in self._creds.items():
            cred.nc += 1
            try:
                value = build_authorization(
                    cred.challenge, req.method, req.uri, cfg.user, cfg.password, req.body, nc=cred.nc
                )
            except DigestError:
                continue
            req.add_header(header, value)

    def _accept_challenge(self, resp: Response, tries: dict[tuple[str, str], int]) -> bool:
        """Remember the challenge of a 401/407 and say whether to retry: once per challenge, again only
        when the server says our nonce was merely stale (22.2, RFC 7616 3.3)."""
        if self.config.password is None:
            return False
        source, header = (
            ("www-authenticate", "Authorization") if resp.status == 401 else
            ("proxy-authenticate", "Proxy-Authorization")
        )
        try:
            value = choose_challenge(resp.header_lines(source))
            params = parse_digest(value)
        except DigestError:
            return False
        key = (header, params.realm or "")
        count = tries.get(key, 0)
        if count >= 1 and not params.stale:
            return False  # the same realm challenged our fresh answer: wrong password
        if count >= MAX_STALE_RETRIES:
            return False
        tries[key] = count + 1
        self._creds[key] = _Credential(value)
        return True

    # ------------------------------------------------------------------ responses
    def _on_response(self, resp: Response, txn: ClientTransaction | ServerTransaction | None,
                     now: float) -> list[Output]:
        if txn is None:
            return self._on_stray_response(resp, now)
        op, call = self._ops.get(txn, ("", None)) if isinstance(txn, ClientTransaction) else ("", None)
        if op == "register":
            if txn is not self._reg.txn:
                return []
            return self._on_register_response(resp, now)
        if op == "options":
            return [OptionsResult(status=resp.status, allow=resp.header("allow"))] if resp.status >= 200 else []
        if call is None:
            return []
        if op == "invite":
            if txn is not call.invite_txn:
                return []
            return self._on_invite_response(call, resp, now)
        if op == "reinvite":
            if txn is not call.reinvite_out:
                return []
            return self._on_reinvite_response(call, resp, now)
        if op == "bye":
            if resp.status >= 200 and call.state is CallState.TERMINATING:
                call.move("bye_done")
                if call.replaced_by is None:  # a replaced call's end was reported when it was replaced
                    return [CallEnded(call_id=call.call_id, reason="local hangup", status=resp.status)]
            return []
        if op == "refer" and resp.status >= 200:
            final = resp.status >= 300
            if final:
                call.refer_out = False
            return [TransferProgress(call_id=call.call_id, status=resp.status, reason=resp.reason or "",
                                     final=final)]
        if op == "info" and resp.status >= 200:
            return self._next_info(call, now)
        return []  # CANCEL's own response (the INVITE's 487 is what counts), NOTIFY, a fork's BYE

    def _on_stray_response(self, resp: Response, now: float) -> list[Output]:
        """A 2xx after the INVITE transaction ended (RFC 6026 Timer M): ACK it again, or it is a fork's."""
        call = self.calls.get(resp.call_id) if 200 <= resp.status < 300 else None
        if call is None or call.role != "uac" or call.invite is None or resp.cseq != (call.invite.cseq[0], "INVITE"):
            return []
        return self._on_fork_or_retransmission(call, resp, now)

    def _on_fork_or_retransmission(self, call: Call, resp: Response, now: float) -> list[Output]:
        """Another 2xx to an INVITE we already have a dialog for (13.2.2.4): the same dialog's is a
        retransmission (the ACK was lost: send it again); another To tag is a second fork that answered too:
        ACK it (the 2xx must be acknowledged) and hang that dialog up at once with a BYE, once."""
        dialog = call.dialog
        assert dialog is not None
        if dialog.matches(resp):
            if call.ack is not None and resp.cseq[0] == call.ack_cseq:
                return [Send(call.ack, dialog.next_hop(), self.config.transport)]
            return []
        tag = resp.to_tag or ""
        known = call.forks.get(tag)
        if known is not None:
            return [Send(known[0], known[1], self.config.transport)]
        try:
            fork = dialog_as_uac(call.invite, resp)  # type: ignore[arg-type]
        except (DialogError, SipParseError):
            return []  # no way to ACK or BYE it: its sender gives up without an ACK
        if len(call.forks) >= 16:
            return []  # a bound on what a misbehaving forking proxy can make us keep
        ack = fork.request("ACK", self._via(), cseq=resp.cseq[0]).to_bytes()
        call.forks[tag] = (ack, fork.next_hop())
        out: list[Output] = [Send(ack, fork.next_hop(), self.config.transport)]
        bye = fork.request("BYE", self._via(), extra=[("User-Agent", self.config.user_agent)])
        self._start_client(bye, fork.next_hop(), "fork_bye", now, out, call)
        return out

    def _ack_2xx(self, call: Call, resp: Response) -> list[Output]:
        """Build and send the ACK for a 2xx (13.2.2.4): in the dialog, new branch, the INVITE's CSeq number."""
        dialog = call.dialog
        assert dialog is not None
        cseq = resp.cseq[0]
        ack = dialog.request("ACK", self._via(), cseq=cseq)
        call.ack = ack.to_bytes()
        call.ack_cseq = cseq
        return [Send(call.ack, dialog.next_hop(), self.config.transport)]

    def _on_invite_response(self, call: Call, resp: Response, now: float) -> list[Output]:
        status = resp.status
        out: list[Output] = []
        if status < 200:
            call.got_provisional = True
            if call.state is CallState.CANCELLING and not call.cancel_sent:
                out += self._send_cancel(call, now)
            elif status > 100:
                call.move("1xx")
                out.append(Ringing(call_id=call.call_id, status=status))
                out += self._notify_transfer(call, status, resp.reason or "", now)
            return out
        if status < 300:
            if call.dialog is not None:
                return self._on_fork_or_retransmission(call, resp, now)
            try:
                call.dialog = dialog_as_uac(call.invite, resp)  # type: ignore[arg-type]
            except (DialogError, SipParseError):
                # no way to ACK or BYE: the call cannot be used (the peer will give up without its ACK)
                call.move("final")
                return [CallEnded(call_id=call.call_id, reason="failed", status=status),
                        *self._notify_transfer(call, 500, "Server Internal Error", now)]
            call.give_up_at = None
            out += self._ack_2xx(call, resp)
            if call.state is CallState.CANCELLING:
                call.move("2xx")  # -> TERMINATING: the CANCEL lost the race, hang up at once (9.1)
                out += self._send_bye(call, now)
                return out
            call.move("2xx")
            call.remote_sdp = resp.body
            out.append(CallEstablished(call_id=call.call_id, remote_sdp=resp.body))
            out += self._notify_transfer(call, status, resp.reason or "OK", now)
            return out
        if status in (401, 407) and call.state is not CallState.CANCELLING:
            if self._accept_challenge(resp, call.auth_tries):
                assert call.invite is not None
                return self._send_invite(call, call.invite.cseq[0] + 1, now)
        call.give_up_at = None
        reason = "cancelled" if call.state is CallState.CANCELLING else "rejected"
        call.move("final")
        out.append(CallEnded(call_id=call.call_id, reason=reason, status=status))
        out += self._notify_transfer(call, status, resp.reason or "", now)
        return out

    def _on_reinvite_response(self, call: Call, resp: Response, now: float) -> list[Output]:
        status = resp.status
        if status < 200:
            return []
        dialog = call.dialog
        assert dialog is not None
        if status < 300:
            out: list[Output] = []
            if call.reinvite_out is not None:
                call.reinvite_out = None
                dialog.update_target(resp)  # 12.2.1.2: a 2xx to a target refresh updates the target
                call.local_sdp = call.reinvite_sdp
                call.remote_sdp = resp.body
                out += self._ack_2xx(call, resp)
                out.append(CallUpdated(call_id=call.call_id, remote_sdp=resp.body))
            elif call.ack is not None and resp.cseq[0] == call.ack_cseq:
                out.append(Send(call.ack, dialog.next_hop(), self.config.transport))
            return out
        call.reinvite_out = None
        if status == 491 and call.glare_retries < MAX_GLARE_RETRIES and call.state is CallState.CONFIRMED:
            # 14.1: glare. Try again after a random wait: 2.1-4 s if we own the Call-ID (we made the call),
            # 0-2 s otherwise, in units of 10 ms -- so the two sides do not collide again
            call.glare_retries += 1
            call.glare_sdp = call.reinvite_sdp
            ticks = self.rng.randint(210, 400) if call.role == "uac" else self.rng.randint(0, 200)
            call.reinvite_retry_at = now + ticks / 100
            return []
        if status in (408, 481):
            # 14.1: the dialog is gone; tear the call down
            call.move("bye")
            return [CallUpdateFailed(call_id=call.call_id, status=status), *self._send_bye(call, now)]
        return [CallUpdateFailed(call_id=call.call_id, status=status)]

    def _on_client_failure(self, txn: ClientTransaction, now: float) -> list[Output]:
        """Timer B/F fired or the transport failed: act as if a 408 arrived (8.1.3.1)."""
        op, call = self._ops.pop(txn, ("", None))
        if op == "register" and txn is self._reg.txn:
            self._reg.txn = None
            self._reg.registered = False
            if self._reg.expires == 0:
                return [RegistrationFailed(status=408, reason="unregister timed out")]
            return [RegistrationFailed(status=408, reason="Request Timeout")]
        if op == "options":
            return [OptionsResult(status=408)]
        if call is None:
            return []
        if op == "invite" and txn is call.invite_txn and call.dialog is None and call.active:
            call.give_up_at = None
            call.move("final")
            return [CallEnded(call_id=call.call_id, reason="timeout", status=408),
                    *self._notify_transfer(call, 408, "Request Timeout", now)]
        if op == "reinvite" and txn is call.reinvite_out:
            call.reinvite_out = None
            if call.state is CallState.CONFIRMED:
                call.move("bye")
                return [CallUpdateFailed(call_id=call.call_id, status=408), *self._send_bye(call, now)]
            return [CallUpdateFailed(call_id=call.call_id, status=408)]
        if op == "bye" and call.state is CallState.TERMINATING:
            call.move("bye_done")
            if call.replaced_by is None:
                return [CallEnded(call_id=call.call_id, reason="local hangup", status=408)]
            return []
        if op == "refer":
            call.refer_out = False
            return [TransferProgress(call_id=call.call_id, status=408, reason="Request Timeout", final=True)]
        if op == "info":
            return self._next_info(call, now)
        return []

    def _no_ack(self, call: Call, now: float) -> list[Output]:
        """13.3.1.4: no ACK for our 2xx within 64*T1: the session is dead; send BYE and end it."""
        call.ok_retx_at = None
        if call.state is CallState.ANSWERED:
            call.move("no_ack")
            return [*self._send_bye(call, now), CallEnded(call_id=call.call_id, reason="no ACK", status=408)]
        # an unacknowledged 2xx to a re-INVITE: also fatal for the dialog
        if call.state is CallState.CONFIRMED:
            call.move("bye")
            return self._send_bye(call, now)
        return []

    # ------------------------------------------------------------------ requests
    def _on_request(self, req: Request, txn: ClientTransaction | ServerTransaction | None,
                    now: float) -> list[Output]:
        method = req.method
        if method == "ACK":
            return self._on_ack(req, now)
        assert isinstance(txn, ServerTransaction)
        if req.to_tag is not None:
            # in-dialog request (12.2.2)
            call = self.calls.get(req.call_id)
            if call is None or call.dialog is None or not call.dialog.matches(req):
                return self._respond(txn, 481, now)
            if not call.dialog.check_remote_cseq(req):
                return self._respond(txn, 500, now, to_tag=call.local_tag, reason="CSeq Out of Order")
            if method == "BYE":
                return self._on_bye(call, txn, now)
            if method == "INVITE":
                return self._on_reinvite(call, txn, now)
            if method == "OPTIONS":
                return self._respond(txn, 200, now, to_tag=call.local_tag, headers=self._options_headers())
            if method == "INFO":
                return self._on_info(call, txn, now)
            if method == "REFER":
                return self._on_refer(call, txn, now)
            if method == "NOTIFY":
                return self._on_notify(call, txn, now)
            return self._respond(txn, 405, now, to_tag=call.local_tag, headers=[("Allow", ALLOW)])
        if method == "INVITE":
            return self._on_invite(req, txn, now)
        if method == "CANCEL":
            return self._on_cancel(req, txn, now)
        if method == "OPTIONS":
            return self._respond(txn, 200, now, headers=self._options_headers())
        if method in ("BYE", "INFO", "NOTIFY"):
            return self._respond(txn, 481, now)
        return self._respond(txn, 405, now, headers=[("Allow", ALLOW)])

    def _options_headers(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", SDP), ("Supported", SUPPORTED), ("User-Agent", self.config.user_agent)]

    def _on_invite(self, req: Request, txn: ServerTransaction, now: float) -> list[Output]:
        if req.body and (req.header("content-type") or "").split(";")[0].strip().lower() != SDP:
            return self._respond(txn, 415, now, headers=[("Accept", SDP)])
        existing = self.calls.get(req.call_id)
        if existing is not None and existing.active:
            return self._respond(txn, 482, now)  # 8.2.2.2: the same request reached us twice (merged)
        replaced: Call | None = None
        replaces_header = req.header("replaces")
        if replaces_header is not None:
            try:
                wanted = parse_replaces(replaces_header)
            except ReferError as exc:
                return self._respond(txn, 400, now, reason=f"Bad Request ({exc})")
            replaced = self._replaceable(wanted)
            if replaced is None:
                return self._respond(txn, 481, now)  # RFC 3891 3: no such dialog (or not ours to replace)
            if wanted.early_only and replaced.state is not CallState.EARLY:
                return self._respond(txn, 486, now)
        elif sum(1 for c in self.calls.values() if c.active) >= self.config.max_calls:
            return self._respond(txn, 486, now)  # 13.3.1.3: busy
        call = Call(role="uas", call_id=req.call_id, local_tag=new_tag())
        try:
            call.dialog = dialog_as_uas(req, call.local_tag)
        except (DialogError, SipParseError) as exc:
            reason = exc.reason if isinstance(exc, SipParseError) else str(exc)
            return self._respond(txn, 400, now, reason=f"Bad Request ({reason})")
        call.invite = req
        call.invite_txn = txn
        call.remote_sdp = req.body
        call.replaces = replaced.call_id if replaced is not None else None
        call.move("incoming")
        self._add_call(call)
        # 180 with our tag and Contact: an early dialog the caller can already address (13.3.1.1)
        ringing = make_response(req, 180, to_tag=call.local_tag, headers=self._uas_headers(req))
        out = self._process(txn.send_response(ringing, now), now)
        out.append(IncomingCall(call_id=req.call_id, caller=req.header("from") or "", remote_sdp=req.body,
                                replaces=call.replaces))
        return out

    def _replaceable(self, wanted: ReplacesId) -> Call | None:
        """The call an INVITE with Replaces may take over (RFC 3891 3): a confirmed dialog of ours, or an early
        one we started; never an early dialog in which we are the callee."""
        call = self.calls.get(wanted.call_id)
        if call is None or call.dialog is None or not call.active:
            return None
        d = call.dialog
        if d.local_tag != wanted.to_tag or d.remote_tag != wanted.from_tag:
            return None
        if call.state in (CallState.CONFIRMED, CallState.ANSWERED):
            return call
        return None

    def _on_reinvite(self, call: Call, txn: ServerTransaction, now: float) -> list[Output]:
        if call.state is not CallState.CONFIRMED:
            return self._respond(txn, 491 if call.state is CallState.ANSWERED else 481, now,
                                 to_tag=call.local_tag)
        if call.reinvite_in is not None or call.reinvite_out is not None or call.ok_retx_at is not None:
            # 14.2: an offer of ours is pending (glare): 491, the peer retries later
            return self._respond(txn, 491, now, to_tag=call.local_tag)
        assert call.dialog is not None
        call.dialog.update_target(txn.request)
        call.reinvite_in = txn
        call.reinvite_sdp = txn.request.body
        return [OfferReceived(call_id=call.call_id, remote_sdp=txn.request.body)]

    def _on_ack(self, ack: Request, now: float) -> list[Output]:
        call = self.calls.get(ack.call_id)
        if call is None or call.dialog is None or not call.dialog.matches(ack):
            return []  # 17.2.3 stray ACK (e.g. for a 2xx we already forgot): nothing to do
        if call.ok_retx_at is None or ack.cseq[0] != call.ok_cseq:
            return []
        call.ok_retx_at = None
        out: list[Output] = []
        if call.state is CallState.ANSWERED:
            call.move("ack")
            out.append(CallEstablished(call_id=call.call_id, remote_sdp=call.remote_sdp))
            if call.bye_pending:
                call.bye_pending = False
                call.move("bye")
                out += self._send_bye(call, now)
            out += self._end_replaced(call, now)
        else:
            out.append(CallUpdated(call_id=call.call_id, remote_sdp=call.remote_sdp))
        return out

    def _end_replaced(self, call: Call, now: float) -> list[Output]:
        """RFC 3891 3: the new dialog is confirmed; the one it replaces is hung up."""
        old = self.calls.get(call.replaces) if call.replaces is not None else None
        if old is None or not old.active:
            return []
        if old.state is CallState.CONFIRMED:
            old.move("bye")
            out = self._send_bye(old, now)
        elif old.state is CallState.ANSWERED:
            old.bye_pending = True
            return []
        else:
            return []
        # the BYE's answer moves it to ENDED quietly: the application hears "replaced" now
        old.replaced_by = call.call_id
        out.append(CallEnded(call_id=old.call_id, reason="replaced", status=None))
        return out

    def _on_bye(self, call: Call, txn: ServerTransaction, now: float) -> list[Output]:
        out = self._respond(txn, 200, now, to_tag=call.local_tag)
        if call.state is CallState.INCOMING and isinstance(call.invite_txn, ServerTransaction):
            # 15.1.2: a BYE in the early dialog: the INVITE gets 487
            out += self._respond(call.invite_txn, 487, now, to_tag=call.local_tag)
        call.ok_retx_at = None
        call.reinvite_in = None
        call.reinvite_retry_at = None
        call.move("remote_bye")
        if call.replaced_by is None:
            out.append(CallEnded(call_id=call.call_id, reason="remote hangup", status=None))
        return out

    def _on_cancel(self, req: Request, txn: ServerTransaction, now: float) -> list[Output]:
        target = self.table.find_cancel_target(req)
        if target is None:
            return self._respond(txn, 481, now)  # 9.2
        call = self.calls.get(req.call_id)
        out = self._respond(txn, 200, now, to_tag=call.local_tag if call is not None else None)
        if call is not None and call.invite_txn is target and call.state is CallState.INCOMING:
            out += self._respond(target, 487, now, to_tag=call.local_tag)
            call.move("cancelled")
            out.append(CallEnded(call_id=call.call_id, reason="cancelled", status=487))
        return out

    def _on_info(self, call: Call, txn: ServerTransaction, now: float) -> list[Output]:
        """INFO in a dialog (RFC 6086, legacy use without Info-Package): DTMF bodies become
        :class:`DtmfReceived`; an empty one is a ping; any other body type is refused with 415."""
        req = txn.request
        kind = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
        if not req.body:
            return self._respond(txn, 200, now, to_tag=call.local_tag)
        if kind not in (DTMF_RELAY, DTMF_PLAIN):
            return self._respond(txn, 415, now, to_tag=call.local_tag,
                                 headers=[("Accept", f"{DTMF_RELAY}, {DTMF_PLAIN}")])
        out = self._respond(txn, 200, now, to_tag=call.local_tag)
        digit = parse_info_body(kind, req.body)
        if digit is not None:
            out.append(DtmfReceived(call_id=call.call_id, digit=digit.digit, duration_ms=digit.duration_ms,
                                    via="info"))
        return out

    def _on_refer(self, call: Call, txn: ServerTransaction, now: float) -> list[Output]:
        """The peer asks us to call someone (RFC 3515): 202, a first NOTIFY, then :class:`TransferRequested`."""
        req = txn.request
        if call.state is not CallState.CONFIRMED:
            return self._respond(txn, 481 if not call.active else 491, now, to_tag=call.local_tag)
        values = req.header_values("refer-to")
        if len(values) != 1:
            return self._respond(txn, 400, now, to_tag=call.local_tag,
                                 reason="Bad Request (exactly one Refer-To needed)")
        try:
            target = parse_refer_to(values[0])
        except ReferError as exc:
            return self._respond(txn, 400, now, to_tag=call.local_tag, reason=f"Bad Request ({exc})"[:100])
        if call.refer_in is not None and call.refer_in.active:
            return self._respond(txn, 491, now, to_tag=call.local_tag)  # one transfer at a time
        # RFC 3515 2.4.6: the NOTIFYs of a dialog's later REFERs carry the REFER's CSeq as the event id
        event = "refer" if call.refer_in is None else f"refer;id={req.cseq[0]}"
        call.refer_in = _ReferIn(target=target, referred_by=req.header("referred-by"), event=event)
        out = self._respond(txn, 202, now, to_tag=call.local_tag, headers=[("Contact", f"<{self.config.contact_uri}>")])
        out += self._send_notify(call, 100, "Trying", now)
        out.append(TransferRequested(call_id=call.call_id, target=target.uri, referred_by=call.refer_in.referred_by,
                                     replaces=target.replaces.call_id if target.replaces else None))
        return out

    def _on_notify(self, call: Call, txn: ServerTransaction, now: float) -> list[Output]:
        """A NOTIFY for our REFER's implicit subscription: 200, then :class:`TransferProgress` from its sipfrag."""
        req = txn.request
        event = (req.header("event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            return self._respond(txn, 489, now, to_tag=call.local_tag, reason="Bad Event")
        if not call.refer_out:
            return self._respond(txn, 481, now, to_tag=call.local_tag)  # no subscription of ours
        try:
            status, reason = parse_sipfrag(req.body)
        except ReferError as exc:
            return self._respond(txn, 400, now, to_tag=call.local_tag, reason=f"Bad Request ({exc})"[:100])
        out = self._respond(txn, 200, now, to_tag=call.local_tag)
        final = subscription_terminated(req.header("subscription-state")) or status >= 200
        if final:
            call.refer_out = False
        out.append(TransferProgress(call_id=call.call_id, status=status, reason=reason, final=final))
        return out
