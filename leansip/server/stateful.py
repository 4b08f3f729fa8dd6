"""The transaction-stateful proxy (RFC 3261 sections 16 and 17, RFC 6026).

Every request gets a server transaction (retransmissions absorbed, 100 Trying at once for INVITE), and every
target a client transaction (retransmission over UDP, Timer B/F timeouts turned into 408). A *response context*
per server transaction collects the branches' responses and picks what goes upstream (16.7): provisional
responses pass at once, every 2xx passes at once and cancels the other branches, a 6xx cancels them too, and
when all branches are final the best of the rest is sent (6xx first, then the lowest class). CANCEL gets its
200 from us and is turned into a CANCEL per pending branch (16.10); the 487 then comes back from the callee.

ACK for a 2xx and responses that match no transaction (a 2xx retransmitted after the client transaction ended)
are forwarded statelessly, as 16.7 step 3 and 16.10 say. Live transactions are bounded: past the bound a new
request is answered 503 with Retry-After (RFC 3261 21.5.4) instead of eating memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from leansip.server.calls import Call
from leansip.server.context import RELAY, REPLY, FailureHandler, RequestContext
from leansip.server.gateways import Gateway, Gateways, GatewaySet, caller_of
from leansip.server.handler import Handler, ResponseContext
from leansip.server.proxy import StatelessRelay
from leansip.server.routing import Target
from leansip.server.services import Services
from leansip.server.timing import STEP_BUILD, STEP_LOCATION
from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    KIND_CALL_ID,
    KIND_ROUTE,
    Header,
    Request,
    Response,
    make_response,
    parse_message,
)
from leansip.sip.send import Send
from leansip.sip.transaction import (
    Action,
    ClientTransaction,
    Deliver,
    InviteServerTransaction,
    ServerTransaction,
    Terminated,
    Timeout,
    TransportError,
)
from leansip.sip.txstate import State, Timers, TransactionError
from leansip.sip.txtable import DeadlineQueue, TooManyTransactions, TransactionTable


@dataclass(slots=True, eq=False)
class Branch:
    txn: ClientTransaction
    request: Request
    target: Target
    final: int
    provisional: bool
    cancel_pending: bool
    cancelled: bool
    gateway: Gateway | None

    # explicit __init__s here: mypyc compiles them (a generated dataclass __init__ stays interpreted)
    def __init__(self, txn: ClientTransaction, request: Request, target: Target,
                 gateway: Gateway | None = None) -> None:
        self.txn = txn
        self.request = request
        self.target = target
        self.final = 0
        self.provisional = False
        self.cancel_pending = False
        self.cancelled = False
        #: the gateway of a set this branch went to (its failover and counters)
        self.gateway = gateway


@dataclass(slots=True, eq=False)
class Context:
    """Response context of one proxied request (RFC 3261 16.7), and what to do when all its branches fail."""

    server: ServerTransaction
    request: Request
    conn_id: str | None
    branches: list[Branch]
    best: Response | None
    final_sent: bool
    auth_headers: list[Header]
    base: str
    forks: int
    handler: Handler
    source: tuple[str, int]
    transport: str
    record_route: bool
    timeout: float
    on_failure: FailureHandler | None
    cancelled: bool
    call: Call | None
    initial: bool
    gset: GatewaySet | None
    failover: list[Gateway]
    ruri: str

    def __init__(self, server: ServerTransaction, request: Request, base: str, handler: Handler,
                 ctx: RequestContext) -> None:
        self.server = server
        self.request = request
        self.conn_id = ctx.conn_id
        self.branches = []
        self.best = None
        self.final_sent = False
        self.auth_headers = []
        #: the branch of every fork is ``<base>.<n>``, n counting the forks (parallel and serial)
        self.base = base
        self.forks = 0
        #: the handler that relayed the request: its failure handlers run through it, even after a reload
        self.handler = handler
        self.source = ctx.source
        self.transport = ctx.transport
        self.record_route = ctx.record_route
        self.timeout = ctx.timeout
        self.on_failure = ctx.on_failure
        #: the caller cancelled: no failure handler runs any more
        self.cancelled = False
        #: the tracked call this request belongs to (an initial INVITE's attempt, or the call of an in-dialog
        #: request), and whether the request starts it (leansip.server.calls)
        self.call = None
        self.initial = False
        #: a relay to a gateway set: the set, the destinations still to try when the current one fails (408,
        #: 503, transport error, silence: the set's failover_on and timeout) and the Request-URI for them
        self.gset = None
        self.failover = []
        self.ruri = ""


TIMER_C: Final = 180.0  # RFC 3261 16.6 step 11: greater than 3 minutes; refreshed by nothing here (one shot)
#: branches of one request, parallel and serial together: bounds a failure handler that relays again and again
MAX_FORKS: Final = 16


def _forget_views(ctx: Context) -> None:
    """The request is answered: what is kept until the transactions end (32 s for most) is not read again, so
    its parsed views go now, while they are in cache (freeing them cold at the end was most of the cost of
    ending a transaction: bench/analysis.md). A branch still waiting for its final response keeps its own."""
    ctx.request.forget_views()
    for b in ctx.branches:
        if b.final:
            b.request.forget_views()


def _add_fields(call: Call, fields: dict[str, str]) -> None:
    """A handler's ``ctx.cdr`` fields onto the call's record (bounded by Call.add_field)."""
    for name, value in fields.items():
        call.add_field(str(name), str(value))


def _rank(status: int) -> tuple[int, int]:
    """Lower is better when no 2xx/6xx decides (RFC 3261 16.7 step 6): 6xx wins, then 3xx < 4xx < 5xx;
    among 4xx, 401/407 are preferred so the caller can authenticate."""
    if status >= 600:
        return (0, status)
    if status in (401, 407):
        return (2, status)
    return (status // 100 * 10, status)


class StatefulRelay(StatelessRelay):
    """Transaction-stateful relaying: the server transactions of requests decided "relay, stateful", their
    branches' client transactions, and the response context that picks what goes upstream (RFC 3261 16.7).

    The core calls, per request: :meth:`match` (a retransmission or an ACK of a non-2xx: :meth:`absorb`),
    :meth:`open` (a new request's server transaction, with 100 Trying for INVITE) before the handler decides,
    then :meth:`relay`, :meth:`respond` or :meth:`discard` with what it decided; :meth:`cancel` for a CANCEL
    of one of our transactions. Responses: :meth:`on_response`; timers: :meth:`next_deadline` and
    :meth:`handle_timers`. Responses that match no transaction are relayed statelessly (the base class)."""

    def __init__(self, services: Services, handler: Handler) -> None:
        super().__init__(services, handler)
        s = services.settings
        timers = Timers(t1=s.t1, t2=s.t2, t4=s.t4, end_grid=s.end_grid)
        self.table = TransactionTable(timers=timers, max_transactions=s.max_transactions,
                                      max_bytes=s.max_transaction_bytes)
        self.contexts: dict[ServerTransaction, Context] = {}
        self.branch_of: dict[ClientTransaction, tuple[Context, Branch]] = {}
        #: Timer C (RFC 3261 16.6 step 11, 16.8) per INVITE branch in Proceeding: (branch, hard) by deadline
        self._timer_c: DeadlineQueue[tuple[Branch, bool]] = DeadlineQueue()
        self.timer_c = TIMER_C
        #: a handler's per-branch timeout (``ctx.relay(timeout=...)``): branches by the time they give up
        self._ring: DeadlineQueue[Branch] = DeadlineQueue()
        #: a gateway branch with no response at all by its set's ``timeout``: failed over as a 408
        self._silent: DeadlineQueue[Branch] = DeadlineQueue()

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        at = self.table.next_deadline()
        c = self._timer_c.earliest
        ring = self._ring.earliest
        if ring < c:
            c = ring
        silent = self._silent.earliest
        if silent < c:
            c = silent
        if c != math.inf and (at is None or c < at):
            return c
        return at

    def handle_timers(self, now: float) -> list[Send]:
        out = self._run(self.table.handle_timers(now), now)
        while True:
            rung = self._ring.pop_due(now)
            if rung is None:
                break
            for b in rung:
                out.extend(self._give_up(b, now))
        while (silent := self._silent.pop_due(now)) is not None:
            for b in silent:
                if b.final or b.provisional or b.txn.state is State.TERMINATED:
                    continue  # it answered something: alive
                ctxb = self.branch_of.get(b.txn)
                if ctxb is not None:
                    out.extend(self._branch_failed(ctxb, now, 408))
                out.extend(self._run(b.txn.transport_error(now, "gateway silent"), now))
        while True:
            due = self._timer_c.pop_due(now)
            if due is None:
                return out
            for b, hard in due:
                if b.final or b.txn.state is State.TERMINATED:
                    continue
                if hard:
                    # the callee ignored our CANCEL too: end the branch as a 408 (16.8 "terminate the transaction")
                    ctxb = self.branch_of.get(b.txn)
                    if ctxb is not None:
                        out.extend(self._branch_failed(ctxb, now, 408))
                    out.extend(self._run(b.txn.transport_error(now, "timer C"), now))
                else:
                    out.extend(self._send_cancel(b, now) if not b.cancelled else [])
                    self._arm_timer_c(b, now + 64 * self.services.settings.t1, hard=True)

    def _arm_timer_c(self, b: Branch, at: float, *, hard: bool = False) -> None:
        self._timer_c.add(at, (b, hard))

    @property
    def live_transactions(self) -> int:
        return len(self.table)

    def held_bytes(self) -> int:
        """What the transactions keep, estimated (the table's byte bounds are on it)."""
        return self.table.held_bytes

    @property
    def calls_in_progress(self) -> int:
        return sum(1 for ctx in self.contexts.values() if ctx.request.method == "INVITE")

    # ------------------------------------------------------------------ requests
    def match(self, req: Request) -> ServerTransaction | None:
        """The server transaction a retransmission (or an ACK of a non-2xx) belongs to (RFC 3261 17.2.3)."""
        if not len(self.table):
            return None  # a stateless server that never relayed statefully: no key to build
        return self.table.match_request(req)

    def absorb(self, stx: ServerTransaction, req: Request, now: float) -> list[Send]:
        """A retransmission or an ACK matched to ``stx``: the last response again, or nothing (17.2)."""
        return self._run(stx.receive_request(req, now), now)

    def open(self, req: Request, source: tuple[str, int], transport: str, now: float, conn_id: str | None,
             out: list[Send]) -> ServerTransaction | None:
        """A new request's server transaction, before anyone decides about it; an INVITE's 100 Trying goes
        into ``out`` at once (RFC 3261 16.2, so it never follows a final answer on the wire). None when the
        table is full (503 with Retry-After in ``out``, RFC 3261 21.5.4) or the request cannot have one."""
        try:
            stx = self.table.create_server(req, source, transport)
        except TooManyTransactions:
            self.services.stats.dropped("too many transactions")
            out.append(self.services.reply(req, 503, None, source, transport, conn_id, [("Retry-After", "5")]))
            return None
        except TransactionError as exc:
            self.services.stats.dropped(str(exc))
            return None
        if isinstance(stx, InviteServerTransaction):
            out.extend(self._run(stx.send_trying(now), now, conn_id))
        return stx

    def discard(self, stx: ServerTransaction) -> None:
        """The request was relayed statelessly or dropped after all: its transaction goes, unanswered."""
        self.table.discard(stx)

    def respond(self, stx: ServerTransaction, ctx: RequestContext) -> list[Send]:
        """Carry out a handler's reply through the request's server transaction."""
        resp = ctx.response
        status = resp.status if resp is not None else ctx.status
        if status != 401 and status != 407:  # a challenge is a step of the attempt that follows, not one
            self._reject_call(ctx.request, ctx.source, ctx.transport, status,
                              resp.reason if resp is not None else (ctx.reason or ""), ctx.now, ctx.cdr)
        if resp is None:
            return self._respond(stx, ctx.request, ctx.status, ctx.now, ctx.reason, ctx.headers, ctx.conn_id)
        self.services.stats.response(resp.status)
        return self._answered(stx, resp, ctx.now, ctx.conn_id)

    def _respond(self, stx: ServerTransaction, req: Request, status: int, now: float,
                 reason: str | None = None, headers: list[tuple[str, str]] | None = None,
                 conn_id: str | None = None) -> list[Send]:
        resp = make_response(req, status, reason, to_tag=self.services.to_tag(req), headers=headers or ())
        self.services.stats.response(status)
        return self._answered(stx, resp, now, conn_id)

    def _answered(self, stx: ServerTransaction, resp: Response, now: float, conn_id: str | None) -> list[Send]:
        """Send our own final answer from ``stx``, which no branch carries on (a challenge, 404, 481, 482,
        503, a CANCEL's 200 ...): the transaction keeps its response, not the request, from then on (memory a
        peer's requests can make us hold, see :meth:`ServerTransaction.keep_response_only`)."""
        out = self._run(stx.send_response(resp, now), now, conn_id)
        stx.keep_response_only()
        return out

    def relay(self, ctx: RequestContext, stx: ServerTransaction, handler: Handler) -> list[Send]:
        """Relay ``ctx.request`` statefully from its server transaction ``stx``: a client transaction per
        target (INVITE: every target at once, parallel forking; others: the first), or a status instead.
        ``handler`` (the one that decided) runs ``ctx.on_failure`` if every branch fails."""
        router = self.router
        req = ctx.request
        now = ctx.now
        base = router.stateful_branch(req)
        if router.loop_detected(req, base):
            return self._respond(stx, req, 482, now, conn_id=ctx.conn_id)
        chosen = ctx.targets
        gset = ctx.gateway_set
        ruri = req.uri
        gateways = self.services.gateways
        if gset is None and chosen is None and gateways is not None and req.to_tag is None \
                and req.first_value(KIND_ROUTE) is None:
            route = gateways.route(req)  # the configuration sends this domain or number prefix to a set
            if route is not None:
                gset, ruri = route
        first: Gateway | None = None
        rest: list[Gateway] = []
        headers: list[tuple[str, str]] | None = None
        if gset is not None:
            candidates = gset.candidates(req.first_value(KIND_CALL_ID) or "", caller_of(req))
            targets = []
            status = 503
            reason: str | None = "No Gateway Available"
            headers = [("Retry-After", "5")]
            if candidates:
                first = candidates[0]
                rest = candidates[1:]
                targets = [Target(Gateways.request_uri(gset, first, ruri), first.dest, first.transport)]
        elif chosen is None:
            decision = router.decide(req, now)
            targets = list(decision.targets)
            status = decision.status
            reason = decision.reason
        else:
            targets = chosen
            status = 480
            reason = None
        timing = self.services.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)
        if not targets and ctx.on_failure is None:
            self._reject_call(req, ctx.source, ctx.transport, status, reason or "", now, ctx.cdr)
            return self._respond(stx, req, status, now, reason, headers, conn_id=ctx.conn_id)
        rc = Context(stx, req, base, handler, ctx)
        tracker = self.services.calls
        if tracker is not None:
            method = req.method
            if req.to_tag is None:
                if method == "INVITE":
                    call = tracker.start(req, ctx.source, ctx.transport, now)
                    if call is None:  # max_calls: a call that cannot be tracked (billed) is not connected
                        return self._respond(stx, req, 503, now, "Too Many Calls", [("Retry-After", "5")],
                                             ctx.conn_id)
                    rc.call = call
                    rc.initial = True
            elif method == "BYE" or method == "INVITE" or method == "UPDATE":
                rc.call = tracker.in_dialog(req, now)  # a BYE ends its call here
            if rc.call is not None and ctx.cdr:
                _add_fields(rc.call, ctx.cdr)
        self.contexts[stx] = rc
        if gset is not None:
            rc.gset = gset
            rc.ruri = ruri
            rc.failover = rest
        if not targets:  # nobody to try: straight to the failure handler, with the status we would answer
            rc.best = make_response(req, status, reason, to_tag=self.services.to_tag(req), headers=headers or ())
            return self._all_failed(rc, now)
        return self._fork(rc, targets, now, first)

    def _fork(self, rc: Context, targets: list[Target], now: float, gateway: Gateway | None = None) -> list[Send]:
        """A client transaction per target (INVITE: all of them; others: the first), each with our Via
        ``<base>.<n>`` and, per ``rc.record_route``, our Record-Route. When none could be made: 503/500 for a
        new request; the best response so far for a serial fork."""
        services = self.services
        router = self.router
        req = rc.request
        stx = rc.server
        timing = services.timing
        if req.method != "INVITE":
            targets = targets[:1]
        before = len(rc.branches)
        full = False
        out: list[Send] = []
        for target in targets:
            i = rc.forks
            if i >= MAX_FORKS:
                break
            rc.forks = i + 1
            fwd = req.copy()
            if target.ruri is not None:
                fwd.uri = target.ruri
            router.prepare_forward(fwd, record_route=rc.record_route, out_transport=target.transport,
                                   in_conn=rc.conn_id, out_conn=target.conn_id)
            fwd.add_header("via", router.via(f"{rc.base}.{i}", target.transport), first=True)
            data = fwd.to_bytes()
            if timing is not None and i == 0:
                timing.mark(STEP_BUILD)
            try:
                txn = self.table.create_client(fwd, target.dest, target.transport, data=data)
            except TooManyTransactions:
                full = True
                break
            except TransactionError:
                continue
            b = Branch(txn, fwd, target, gateway)
            rc.branches.append(b)
            self.branch_of[txn] = (rc, b)
            services.stats.forwarded_requests += 1
            if rc.timeout > 0.0:
                self._ring.add(now + rc.timeout, b)
            if gateway is not None and rc.gset is not None:
                gateway.selected += 1
                self._silent.add(now + rc.gset.timeout, b)
            out.extend(self._run(txn.start(now), now, target.conn_id))
        if len(rc.branches) > before:
            return out
        if before:
            return out + self._send_best(rc, now)
        del self.contexts[stx]
        if full:
            self._call_failed(rc, 503, "Service Unavailable", now)
            return self._respond(stx, req, 503, now, headers=[("Retry-After", "5")], conn_id=rc.conn_id)
        self._call_failed(rc, 500, "No branch could be created", now)
        return self._respond(stx, req, 500, now, "No branch could be created", conn_id=rc.conn_id)

    def _give_up(self, b: Branch, now: float) -> list[Send]:
        """A branch's own timeout (``ctx.relay(timeout=...)``) ran out before its final response: cancel it
        (an INVITE that rang; one that did not yet is cancelled at its first provisional, RFC 3261 9.1) and
        count it as 408 (what Kamailio's fr_inv_timer does), which may run the failure handler."""
        ctxb = self.branch_of.get(b.txn)
        if b.final or ctxb is None or b.txn.state is State.TERMINATED:
            return []
        out: list[Send] = []
        if ctxb[0].request.method == "INVITE" and not b.cancelled:
            if b.provisional:
                out.extend(self._send_cancel(b, now))
            else:
                b.cancel_pending = True
        out.extend(self._branch_failed(ctxb, now, 408))
        return out

    def _all_failed(self, rc: Context, now: float) -> list[Send]:
        """Every branch ended without a 2xx: the failure handler decides (once per relay; relay again:
        serial forking; reply; or nothing: the best response goes up), else the best response goes up."""
        fn = rc.on_failure
        best = rc.best
        if fn is None or best is None or rc.final_sent or rc.cancelled:
            return self._send_best(rc, now)
        rc.on_failure = None
        req = rc.request
        fctx = RequestContext(self.services, req, rc.source, rc.transport, now, rc.conn_id)
        rc.handler.on_failure(fn, req, fctx, best)
        action = fctx.action
        if rc.call is not None and fctx.cdr:
            _add_fields(rc.call, fctx.cdr)
        if action == RELAY:
            rc.timeout = fctx.timeout
            rc.on_failure = fctx.on_failure
            rc.record_route = fctx.record_route
            gset = fctx.gateway_set
            if gset is not None:  # serial forking to a gateway set
                candidates = gset.candidates(req.first_value(KIND_CALL_ID) or "", caller_of(req))
                if not candidates:
                    rc.best = make_response(req, 503, "No Gateway Available", to_tag=self.services.to_tag(req),
                                            headers=[("Retry-After", "5")])
                    return self._all_failed(rc, now)
                rc.gset = gset
                rc.ruri = req.uri
                rc.failover = candidates[1:]
                rc.best = None
                g = candidates[0]
                return self._fork(rc, [Target(Gateways.request_uri(gset, g, req.uri), g.dest, g.transport)], now, g)
            targets = fctx.targets
            if targets is None:
                decision = self.router.decide(req, now)
                targets = list(decision.targets)
            if not targets:
                return self._all_failed(rc, now)  # nobody new to try: the next failure handler, or the best
            return self._fork(rc, targets, now)
        if action == REPLY:
            resp = fctx.response
            if resp is None:
                resp = make_response(req, fctx.status, fctx.reason, to_tag=self.services.to_tag(req),
                                     headers=fctx.headers or ())
            return self._answer(rc, resp, now)
        return self._send_best(rc, now)

    def _answer(self, rc: Context, resp: Response, now: float) -> list[Send]:
        """Our own final response upstream for a relayed request (a failure handler's reply)."""
        self._call_failed(rc, resp.status, resp.reason, now)
        rc.final_sent = True
        _forget_views(rc)
        self.services.stats.response(resp.status)
        try:
            actions = rc.server.send_response(resp, now)
        except TransactionError:
            return []
        return self._run(actions, now, rc.conn_id)

    def cancel_target(self, cancel: Request) -> bool:
        """Is there an INVITE transaction of ours this CANCEL refers to (RFC 3261 9.2)?"""
        return bool(len(self.table)) and self.table.find_cancel_target(cancel) is not None

    def cancel(self, cancel: Request, stx: ServerTransaction, now: float, conn_id: str | None) -> list[Send]:
        """A CANCEL, in its own server transaction ``stx``: 200 and a CANCEL for each pending branch of the
        INVITE it names (RFC 3261 16.10), or 481 when there is none (the 487 comes back from the callee)."""
        return self._cancel(cancel, stx, now, conn_id)

    def _cancel(self, cancel: Request, stx: ServerTransaction, now: float, conn_id: str | None) -> list[Send]:
        target = self.table.find_cancel_target(cancel)
        ctx = self.contexts.get(target) if target is not None else None
        if ctx is None:
            return self._respond(stx, cancel, 481, now, conn_id=conn_id)
        ctx.cancelled = True
        call = ctx.call
        if call is not None and ctx.initial:
            tracker = self.services.calls
            assert tracker is not None
            tracker.cancelled(call)
        out = self._respond(stx, cancel, 200, now, conn_id=conn_id)
        out.extend(self._cancel_branches(ctx, now))
        return out

    def _cancel_branches(self, ctx: Context, now: float, keep: Branch | None = None) -> list[Send]:
        out: list[Send] = []
        for b in ctx.branches:
            if b is keep or b.final or b.cancelled:
                continue
            if not b.provisional:
                b.cancel_pending = True  # RFC 3261 9.1: wait for a provisional response before CANCEL
                continue
            out.extend(self._send_cancel(b, now))
        return out

    def _send_cancel(self, b: Branch, now: float) -> list[Send]:
        b.cancelled = True
        b.cancel_pending = False
        inv = b.request
        headers = [h for h in inv.headers if h.name in ("via", "from", "to", "call-id", "route")]
        via_top = [h for h in headers if h.name == "via"][:1]
        rest = [h for h in headers if h.name != "via"]
        cancel = Request("CANCEL", inv.uri, via_top + rest)
        cancel.add_header("cseq", f"{inv.cseq[0]} CANCEL")
        cancel.add_header("max-forwards", "70")
        cancel.add_header("content-length", "0")
        try:
            txn = self.table.create_client(cancel, b.target.dest, b.target.transport)
        except TransactionError:
            return []
        return self._run(txn.start(now), now, b.target.conn_id)

    # ------------------------------------------------------------------ responses
    def on_response(self, resp: Response, source: tuple[str, int], transport: str, now: float,
                    conn_id: str | None) -> list[Send]:
        if not len(self.table):
            return super().on_response(resp, source, transport, now, conn_id)  # stateless so far: no match
        return self._run(self.table.receive_response(resp, now), now)

    def _response(self, resp: Response, ctxb: tuple[Context, Branch] | None, now: float,
                  source: tuple[str, int] | None = None) -> list[Send]:
        if ctxb is None:
            # no transaction: forward statelessly by Via (RFC 3261 16.7 step 3 for late 2xx retransmissions)
            return super().on_response(resp, source or ("", 0), "udp", now, None)
        ctx, b = ctxb
        status = resp.status
        out: list[Send] = []
        hidden = False
        handler = ctx.handler
        if handler.wants_responses and status > 100:
            rctx = ResponseContext(self.services, b.request, resp, now)
            handler.on_response(resp, rctx)
            hidden = rctx.dropped
        call = ctx.call
        if call is not None and not hidden:
            self._track(ctx, call, b, resp, now)
        if status < 200:
            if not b.provisional and ctx.request.method == "INVITE":
                self._arm_timer_c(b, now + self.timer_c)
            b.provisional = True
            if b.cancel_pending:
                out.extend(self._send_cancel(b, now))
            if status == 100 or ctx.final_sent or b.final or hidden:  # b.final: timed out already (_give_up)
                return out
            return out + self._forward_up(ctx, resp, now)
        first_final = not b.final
        b.final = status
        if status < 300:
            out.extend(self._forward_up(ctx, resp, now))
            if first_final and ctx.request.method == "INVITE":
                out.extend(self._cancel_branches(ctx, now, keep=b))
            return out
        if not first_final or ctx.final_sent:
            return out
        if status in (401, 407):
            name = "www-authenticate" if status == 401 else "proxy-authenticate"
            ctx.auth_headers.extend(h for h in resp.headers if h.name == name)
        if ctx.best is None or _rank(status) < _rank(ctx.best.status):
            ctx.best = resp
        if status >= 600:
            out.extend(self._cancel_branches(ctx, now))
        if all(br.final for br in ctx.branches):
            gset = ctx.gset
            if gset is not None and b.gateway is not None and status in gset.failover_on and not ctx.cancelled:
                b.gateway.failed += 1
                started = self._next_gateway(ctx, now)
                if started is not None:
                    return out + started
            out.extend(self._all_failed(ctx, now))
        return out

    def _next_gateway(self, ctx: Context, now: float) -> list[Send] | None:
        """The branch to a gateway failed over (RFC 3261 16.7 lets a proxy try more targets before it answers):
        a branch to the next gateway of the set, in the same server transaction; None when none is left."""
        gset = ctx.gset
        assert gset is not None
        while ctx.failover:
            g = ctx.failover.pop(0)
            before = len(ctx.branches)
            ctx.best = None  # the answer now is the next gateway's, not the one that failed
            out = self._fork(ctx, [Target(Gateways.request_uri(gset, g, ctx.ruri), g.dest, g.transport)], now, g)
            if len(ctx.branches) > before or ctx.final_sent:
                return out
        return None

    def _track(self, ctx: Context, call: Call, b: Branch, resp: Response, now: float) -> None:
        """A response on a branch of a tracked call's request (see leansip.server.calls)."""
        tracker = self.services.calls
        assert tracker is not None
        status = resp.status
        if not ctx.initial:
            if 200 <= status < 300:
                tracker.refreshed(call, resp, now)  # a re-INVITE's or UPDATE's 2xx
        elif status < 200:
            tracker.progress(call, status, b.target.dest, b.target.transport, now)
        elif status < 300:
            tracker.answered(call, resp, b.target.dest, b.target.transport, now)

    def _call_failed(self, ctx: Context, status: int, reason: str, now: float, answered_by: int = 0) -> None:
        """The attempt's final answer is not a 2xx: it ends (``answered_by``: the status of the branch whose
        answer it is, to name its leg)."""
        call = ctx.call
        if call is None or not ctx.initial:
            return
        tracker = self.services.calls
        assert tracker is not None
        for b in ctx.branches:
            if answered_by and b.final == answered_by:
                tracker.failed(call, status, reason, now, b.target.dest, b.target.transport)
                return
        tracker.failed(call, status, reason, now)

    def _reject_call(self, req: Request, source: tuple[str, int], transport: str, status: int, reason: str,
                     now: float, fields: dict[str, str]) -> None:
        """An initial INVITE answered here (no such user, nobody registered, no gateway up, a script's reply) is
        a call attempt too: it gets its record."""
        tracker = self.services.calls
        if tracker is None or req.method != "INVITE" or req.to_tag is not None or status < 300:
            return
        call = tracker.start(req, source, transport, now)
        if call is not None:
            if fields:
                _add_fields(call, fields)
            tracker.failed(call, status, reason, now)

    def _send_best(self, ctx: Context, now: float) -> list[Send]:
        best = ctx.best
        if best is None or ctx.final_sent:
            return []
        branch_status = best.status
        if best.status == 503:
            # RFC 3261 16.7 step 6: a 503 from downstream says nothing about us; answer 500 instead
            best = best.copy()
            best.status, best.reason = 500, "Server Internal Error"
        if best.status in (401, 407) and len(ctx.auth_headers) > 1:
            # RFC 3261 16.7 step 7: collect every challenge of every branch
            name = "www-authenticate" if best.status == 401 else "proxy-authenticate"
            best = best.copy()
            best.headers = [h for h in best.headers if h.name != name] + ctx.auth_headers
        if ctx.call is not None:
            self._call_failed(ctx, best.status, best.reason, now, branch_status)  # what the caller hears ends it
        return self._forward_up(ctx, best, now)

    def _forward_up(self, ctx: Context, resp: Response, now: float) -> list[Send]:
        fwd = resp.copy()
        fwd.pop_first_value("via")
        if resp.status >= 200:
            ctx.final_sent = True
            _forget_views(ctx)
        self.services.stats.forwarded_responses += 1
        self.services.stats.response(resp.status)
        try:
            actions = ctx.server.send_response(fwd, now)
        except TransactionError:
            return []
        return self._run(actions, now, ctx.conn_id)

    # ------------------------------------------------------------------ actions
    def _run(self, actions: list[Action], now: float, conn_id: str | None = None) -> list[Send]:
        out: list[Send] = []
        for action in actions:
            if isinstance(action, Send):
                txn = action.transaction
                cid = conn_id
                if cid is None and isinstance(txn, ServerTransaction):
                    ctx = self.contexts.get(txn)
                    cid = ctx.conn_id if ctx is not None else None
                # drop the transaction reference: outputs may be kept (reply cache) longer than transactions
                out.append(Send(action.data, action.dest, action.transport, cid))
            elif isinstance(action, Deliver):
                msg = action.message
                if isinstance(msg, Response):
                    txn = action.transaction
                    ctxb = self.branch_of.get(txn) if isinstance(txn, ClientTransaction) else None
                    if txn is not None and ctxb is None:
                        continue  # response to our own CANCEL: nothing to do with it
                    out.extend(self._response(msg, ctxb, now))
            elif isinstance(action, (Timeout, TransportError)):
                txn = action.transaction
                if isinstance(txn, ClientTransaction):
                    ctxb = self.branch_of.get(txn)
                    if ctxb is not None and not ctxb[1].final:
                        status = 503 if isinstance(action, TransportError) else 408
                        out.extend(self._branch_failed(ctxb, now, status))
                # a server transaction without ACK (Timer H) just ends
            elif isinstance(action, Terminated):
                self._forget(action.transaction)
        return out

    def _branch_failed(self, ctxb: tuple[Context, Branch], now: float, status: int = 408) -> list[Send]:
        """Timer B/F: behave as if the branch answered 408 (RFC 3261 16.7 step 2); a transport error: as if
        it answered 503 (16.9), which goes upstream as 500 if nothing better arrives (16.7 step 6)."""
        ctx, b = ctxb
        # with our To tag: it goes upstream as a final response, which needs one (RFC 3261 8.2.6.2)
        timeout = make_response(b.request, status, to_tag=self.services.to_tag(ctx.request))
        return self._response(timeout, (ctx, b), now)

    def on_transport_error(self, data: bytes, now: float, reason: str = "") -> list[Send]:
        """A request we forwarded could not be sent (e.g. no TCP/TLS connection to the target)."""
        try:
            msg = parse_message(data, stream=True)
            branch = msg.branch
            method = msg.cseq[1]
        except SipParseError:
            return []
        if not isinstance(msg, Request) or branch is None:
            return []
        txn = self.table.client(branch, method)
        if txn is None:
            return []
        return self._run(txn.transport_error(now, reason), now)

    def _forget(self, txn: object) -> None:
        if isinstance(txn, ClientTransaction):
            self.branch_of.pop(txn, None)
        elif isinstance(txn, ServerTransaction):
            ctx = self.contexts.pop(txn, None)
            if ctx is not None:
                for b in ctx.branches:
                    if b.txn.state is State.TERMINATED:
                        self.branch_of.pop(b.txn, None)


__all__ = ["StatefulRelay", "InviteServerTransaction"]
