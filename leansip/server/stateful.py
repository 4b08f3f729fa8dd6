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
from typing import TYPE_CHECKING, Final

from leansip.server.proxy import StatelessProxy, needs_auth
from leansip.server.routing import Target
from leansip.server.timing import STEP_BUILD, STEP_LOCATION
from leansip.sip.errors import SipParseError
from leansip.sip.message import Header, Request, Response, make_response, parse_message
from leansip.sip.send import Send
from leansip.sip.transaction import (
    Action,
    ClientTransaction,
    DeadlineQueue,
    Deliver,
    InviteServerTransaction,
    ServerTransaction,
    State,
    Terminated,
    Timeout,
    Timers,
    TooManyTransactions,
    TransactionError,
    TransactionTable,
    TransportError,
)

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.core import ServerCore


@dataclass(slots=True, eq=False)
class Branch:
    txn: ClientTransaction
    request: Request
    target: Target
    final: int
    provisional: bool
    cancel_pending: bool
    cancelled: bool

    # explicit __init__s here: mypyc compiles them (a generated dataclass __init__ stays interpreted)
    def __init__(self, txn: ClientTransaction, request: Request, target: Target) -> None:
        self.txn = txn
        self.request = request
        self.target = target
        self.final = 0
        self.provisional = False
        self.cancel_pending = False
        self.cancelled = False


@dataclass(slots=True, eq=False)
class Context:
    """Response context of one proxied request (RFC 3261 16.7)."""

    server: ServerTransaction
    request: Request
    conn_id: str | None
    branches: list[Branch]
    best: Response | None
    final_sent: bool
    auth_headers: list[Header]

    def __init__(self, server: ServerTransaction, request: Request, conn_id: str | None) -> None:
        self.server = server
        self.request = request
        self.conn_id = conn_id
        self.branches = []
        self.best = None
        self.final_sent = False
        self.auth_headers = []


TIMER_C: Final = 180.0  # RFC 3261 16.6 step 11: greater than 3 minutes; refreshed by nothing here (one shot)


def _forget_views(ctx: Context) -> None:
    """The request is answered: what is kept until the transactions end (32 s for most) is not read again, so
    its parsed views go now, while they are in cache (freeing them cold at the end was most of the cost of
    ending a transaction: bench/analysis.md). A branch still waiting for its final response keeps its own."""
    ctx.request.forget_views()
    for b in ctx.branches:
        if b.final:
            b.request.forget_views()


def _rank(status: int) -> tuple[int, int]:
    """Lower is better when no 2xx/6xx decides (RFC 3261 16.7 step 6): 6xx wins, then 3xx < 4xx < 5xx;
    among 4xx, 401/407 are preferred so the caller can authenticate."""
    if status >= 600:
        return (0, status)
    if status in (401, 407):
        return (2, status)
    return (status // 100 * 10, status)


class StatefulProxy(StatelessProxy):
    def __init__(self, core: ServerCore) -> None:
        super().__init__(core)
        s = core.settings
        timers = Timers(t1=s.t1, t2=s.t2, t4=s.t4, end_grid=s.end_grid)
        self.table = TransactionTable(timers=timers, max_transactions=s.max_transactions)
        self.contexts: dict[ServerTransaction, Context] = {}
        self.branch_of: dict[ClientTransaction, tuple[Context, Branch]] = {}
        #: Timer C (RFC 3261 16.6 step 11, 16.8) per INVITE branch in Proceeding: (branch, hard) by deadline
        self._timer_c: DeadlineQueue[tuple[Branch, bool]] = DeadlineQueue()
        self.timer_c = TIMER_C

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        at = self.table.next_deadline()
        c = self._timer_c.earliest
        if c != math.inf and (at is None or c < at):
            return c
        return at

    def handle_timers(self, now: float) -> list[Send]:
        out = self._run(self.table.handle_timers(now), now)
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
                    self._arm_timer_c(b, now + 64 * self.core.settings.t1, hard=True)

    def _arm_timer_c(self, b: Branch, at: float, *, hard: bool = False) -> None:
        self._timer_c.add(at, (b, hard))

    @property
    def live_transactions(self) -> int:
        return len(self.table)

    @property
    def calls_in_progress(self) -> int:
        return sum(1 for ctx in self.contexts.values() if ctx.request.method == "INVITE")

    # ------------------------------------------------------------------ requests
    def on_request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                   conn_id: str | None) -> list[Send]:
        try:
            actions = self.table.receive_request(req, source, transport, now)
        except TooManyTransactions:
            self.core.stats.dropped("too many transactions")
            if req.method == "ACK":
                return []
            return [self.core.reply(req, 503, None, source, transport, conn_id, [("Retry-After", "5")])]
        except TransactionError as exc:
            self.core.stats.dropped(str(exc))
            return []
        out: list[Send] = []
        for action in actions:
            if isinstance(action, Deliver):
                msg = action.message
                assert isinstance(msg, Request)
                if action.transaction is None:
                    # ACK for a 2xx (its own transaction, end to end): forward statelessly (RFC 3261 16.10)
                    out.extend(super().on_request(msg, source, transport, now, conn_id))
                else:
                    stx = action.transaction
                    assert isinstance(stx, ServerTransaction)
                    if isinstance(stx, InviteServerTransaction):
                        # 100 Trying first (RFC 3261 16.2), so it never follows a final answer on the wire
                        out.extend(self._run(stx.send_trying(now), now, conn_id))
                    out.extend(self._new_request(msg, stx, source, transport, now, conn_id))
            else:
                out.extend(self._run([action], now))
        return out

    def _respond(self, stx: ServerTransaction, req: Request, status: int, now: float,
                 reason: str | None = None, headers: list[tuple[str, str]] | None = None,
                 conn_id: str | None = None) -> list[Send]:
        resp = make_response(req, status, reason, to_tag=self.core.to_tag(req), headers=headers or ())
        self.core.stats.response(status)
        return self._run(stx.send_response(resp, now), now, conn_id)

    def _new_request(self, req: Request, stx: ServerTransaction, source: tuple[str, int], transport: str,
                     now: float, conn_id: str | None) -> list[Send]:
        core = self.core
        router = self.router
        method = req.method
        if method == "CANCEL":
            return self._cancel(req, stx, now, conn_id)
        routed = router.preprocess_routes(req, conn_id)
        if core.authenticator is not None and needs_auth(req, routed):
            user, challenge = core.check_credentials(req, source, now, proxy=True)
            if user is None:
                if challenge is None:  # rate limited: no answer at all; let the transaction expire quietly
                    return []
                self.core.stats.response(challenge.status)
                return self._run(stx.send_response(challenge, now), now, conn_id)
        base = router.stateful_branch(req)
        if router.loop_detected(req, base):
            return self._respond(stx, req, 482, now, conn_id=conn_id)
        decision = router.decide(req, now)
        timing = core.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)
        if decision.status:
            return self._respond(stx, req, decision.status, now, decision.reason, conn_id=conn_id)
        ctx = Context(stx, req, conn_id)
        self.contexts[stx] = ctx
        targets = decision.targets if method == "INVITE" else decision.targets[:1]
        out: list[Send] = []
        for i, target in enumerate(targets):
            fwd = req.copy()
            if target.ruri is not None:
                fwd.uri = target.ruri
            router.prepare_forward(fwd, record_route=core.settings.record_route, out_transport=target.transport,
                                  in_conn=conn_id, out_conn=target.conn_id)
            branch = f"{base}.{i}"
            fwd.add_header("via", router.via(branch, target.transport), first=True)
            data = fwd.to_bytes()
            if timing is not None and i == 0:
                timing.mark(STEP_BUILD)
            try:
                ctx_txn = self.table.create_client(fwd, target.dest, target.transport, data=data)
            except TooManyTransactions:
                if not ctx.branches:
                    del self.contexts[stx]
                    return self._respond(stx, req, 503, now, headers=[("Retry-After", "5")], conn_id=conn_id)
                break
            except TransactionError:
                continue
            b = Branch(ctx_txn, fwd, target)
            ctx.branches.append(b)
            self.branch_of[ctx_txn] = (ctx, b)
            core.stats.forwarded_requests += 1
            out.extend(self._run(ctx_txn.start(now), now, target.conn_id))
        if not ctx.branches:
            del self.contexts[stx]
            return self._respond(stx, req, 500, now, "No branch could be created", conn_id=conn_id)
        return out

    def _cancel(self, cancel: Request, stx: ServerTransaction, now: float, conn_id: str | None) -> list[Send]:
        target = self.table.find_cancel_target(cancel)
        ctx = self.contexts.get(target) if target is not None else None
        if ctx is None:
            return self._respond(stx, cancel, 481, now, conn_id=conn_id)
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
        return self._run(self.table.receive_response(resp, now), now)

    def _response(self, resp: Response, ctxb: tuple[Context, Branch] | None, now: float,
                  source: tuple[str, int] | None = None) -> list[Send]:
        if ctxb is None:
            # no transaction: forward statelessly by Via (RFC 3261 16.7 step 3 for late 2xx retransmissions)
            return super().on_response(resp, source or ("", 0), "udp", now, None)
        ctx, b = ctxb
        status = resp.status
        out: list[Send] = []
        if status < 200:
            if not b.provisional and ctx.request.method == "INVITE":
                self._arm_timer_c(b, now + self.timer_c)
            b.provisional = True
            if b.cancel_pending:
                out.extend(self._send_cancel(b, now))
            if status == 100 or ctx.final_sent:
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
            out.extend(self._send_best(ctx, now))
        return out

    def _send_best(self, ctx: Context, now: float) -> list[Send]:
        best = ctx.best
        if best is None or ctx.final_sent:
            return []
        if best.status == 503:
            # RFC 3261 16.7 step 6: a 503 from downstream says nothing about us; answer 500 instead
            best = best.copy()
            best.status, best.reason = 500, "Server Internal Error"
        if best.status in (401, 407) and len(ctx.auth_headers) > 1:
            # RFC 3261 16.7 step 7: collect every challenge of every branch
            name = "www-authenticate" if best.status == 401 else "proxy-authenticate"
            best = best.copy()
            best.headers = [h for h in best.headers if h.name != name] + ctx.auth_headers
        return self._forward_up(ctx, best, now)

    def _forward_up(self, ctx: Context, resp: Response, now: float) -> list[Send]:
        fwd = resp.copy()
        fwd.pop_first_value("via")
        if resp.status >= 200:
            ctx.final_sent = True
            _forget_views(ctx)
        self.core.stats.forwarded_responses += 1
        self.core.stats.response(resp.status)
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
        timeout = make_response(b.request, status, to_tag=self.core.to_tag(ctx.request))
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


__all__ = ["StatefulProxy", "InviteServerTransaction"]
