"""Stateless relaying (RFC 3261 16.11): how a request decided "relay, stateless" leaves, and how responses to
it go back.

Stateless forwarding keeps nothing between messages: a request gets our Via with a branch derived from the
request itself (so a retransmission, its CANCEL and its non-2xx ACK get the same branch and follow the same
path), and leaves; a response loses its top Via (ours) and goes to the next one. INVITEs also get a 100 Trying
back, as the research's server did, so the caller stops retransmitting early.

What to relay is decided before (a handler's :class:`~leansip.server.context.RequestContext`); the stateful
relay (:mod:`leansip.server.stateful`) builds on this class and uses the same response path for responses that
match none of its transactions.
"""

from __future__ import annotations

from typing import Final

from leansip.server.context import RequestContext
from leansip.server.handler import Handler, ResponseContext
from leansip.server.routing import Router, Target, next_hop_of_response
from leansip.server.services import Services
from leansip.server.timing import STEP_BUILD, STEP_LOCATION
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, make_response
from leansip.sip.send import Send

#: the drop reason (Stats.drops) of a response whose next Via does not parse as a usable SIP/2.0 Via
DROP_UNUSABLE_VIA: Final = "unusable next Via"


class StatelessRelay:
    def __init__(self, services: Services, handler: Handler) -> None:
        self.services = services
        #: the server's handler, for its response hook (the core sets it again on a reload)
        self.handler = handler
        self.router = Router(services)
        self.router.set_local(services.local_addresses)

    def set_local(self, addresses: list[tuple[str, str, int]]) -> None:
        self.router.set_local(addresses)

    def next_deadline(self) -> float | None:
        return None

    def handle_timers(self, now: float) -> list[Send]:
        return []

    def on_transport_error(self, data: bytes, now: float, reason: str = "") -> list[Send]:
        """Nothing to undo for a stateless forward that could not be sent."""
        return []

    @property
    def live_transactions(self) -> int:
        return 0

    @property
    def calls_in_progress(self) -> int:
        return 0

    def held_bytes(self) -> int:
        """Bytes kept between messages (none: stateless)."""
        return 0

    def our_ack(self, req: Request) -> bool:
        """Is this the ACK for a non-2xx reply we generated (407, 404, ...)? It ends our stateless "transaction"
        (RFC 3261 17.2.1) and must not reach the callee, who never saw that INVITE (as Kamailio's sl)."""
        to_tag = req.to_tag
        return to_tag is not None and to_tag == self.services.to_tag(req)

    def forward(self, ctx: RequestContext) -> list[Send]:
        """Relay ``ctx.request`` statelessly: one target only (no forking, RFC 3261 16.11), the first of
        ``ctx.targets`` or of where the request leads; a status instead when it leads nowhere."""
        services = self.services
        router = self.router
        req = ctx.request
        method = req.method
        source = ctx.source
        transport = ctx.transport
        conn_id = ctx.conn_id
        branch = router.branch_for(req)
        if router.loop_detected(req, branch):
            return [] if method == "ACK" else [services.reply(req, 482, None, source, transport, conn_id)]
        chosen = ctx.targets
        target: Target | None = None
        status = 480
        reason: str | None = None
        if chosen is None:
            decision = router.decide(req, ctx.now)
            if decision.targets:
                target = decision.targets[0]
            status = decision.status
            reason = decision.reason
        elif chosen:
            target = chosen[0]
        timing = services.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)
        if target is None:
            if method == "ACK":
                return []
            return [services.reply(req, status, reason, source, transport, conn_id)]
        out: list[Send] = []
        if method == "INVITE":
            trying = make_response(req, 100)
            out.append(services.send_response(req, trying, source, transport, conn_id))
        fwd = req.copy()
        if target.ruri is not None:
            fwd.uri = target.ruri
        router.prepare_forward(fwd, record_route=ctx.record_route, out_transport=target.transport,
                               in_conn=conn_id, out_conn=target.conn_id)
        fwd.add_header("via", router.via(branch, target.transport), first=True)
        services.stats.forwarded_requests += 1
        data = fwd.to_bytes()
        if timing is not None:
            timing.mark(STEP_BUILD)
        out.append(Send(data, target.dest, target.transport, target.conn_id))
        return out

    def on_response(self, resp: Response, source: tuple[str, int], transport: str, now: float,
                    conn_id: str | None) -> list[Send]:
        """A response to a request we forwarded: without our Via, to the next one (RFC 3261 16.7, 18.2.2)."""
        stats = self.services.stats
        # the copy to forward, without the top Via value: its own top Via is the next hop's (RFC 3261 16.7)
        fwd = resp.copy()
        fwd.pop_first_value("via")
        if fwd.header("via") is None:
            stats.dropped("response for us")
            return []
        try:
            top = resp.top_via  # parsed by validate_response
            nxt = fwd.top_via
        except SipParseError as exc:
            stats.dropped(exc.reason)
            return []
        if not self.router.is_our_via(top):
            stats.dropped("response Via not ours")
            return []
        if resp.status == 100:
            return []  # hop-by-hop; we sent our own 100 for INVITE
        handler = self.handler
        if handler.wants_responses:
            rctx = ResponseContext(self.services, None, resp, now)
            handler.on_response(resp, rctx)
            if rctx.dropped:
                return []
            fwd = resp.copy()  # with the handler's edits
            fwd.pop_first_value("via")
        dest = next_hop_of_response(nxt)
        if dest is None:
            stats.dropped(DROP_UNUSABLE_VIA)
            return []
        if dest[0] in ("255.255.255.255", "0.0.0.0"):
            stats.dropped("broadcast Via")
            return []
        stats.forwarded_responses += 1
        stats.response(resp.status)
        next_transport = nxt.transport.lower()
        return [Send(fwd.to_bytes(), dest, next_transport if next_transport != "udp" else "udp")]
