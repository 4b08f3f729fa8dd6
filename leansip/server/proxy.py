"""The stateless proxy (RFC 3261 16.11) and the factory that picks stateless or stateful.

Stateless forwarding keeps nothing between messages: a request is routed (:mod:`leansip.server.routing`),
gets our Via with a branch derived from the request itself (so a retransmission, its CANCEL and its non-2xx
ACK get the same branch and follow the same path), and leaves; a response loses its top Via (ours) and goes to
the next one. INVITEs also get a 100 Trying back, as the research's server did, so the caller stops
retransmitting early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

from leansip.server.routing import Router, next_hop_of_response
from leansip.server.timing import STEP_BUILD, STEP_LOCATION
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, make_response
from leansip.sip.send import Send

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.core import ServerCore


#: the drop reason (Stats.drops) of a response whose next Via does not parse as a usable SIP/2.0 Via
DROP_UNUSABLE_VIA: Final = "unusable next Via"


class Proxy(Protocol):
    def on_request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                   conn_id: str | None) -> list[Send]: ...

    def on_response(self, resp: Response, source: tuple[str, int], transport: str, now: float,
                    conn_id: str | None) -> list[Send]: ...

    def next_deadline(self) -> float | None: ...

    def handle_timers(self, now: float) -> list[Send]: ...

    def set_local(self, addresses: list[tuple[str, str, int]]) -> None: ...


def needs_auth(req: Request, routed_by_us: bool) -> bool:
    """Which requests a proxy with --auth challenges (RFC 3261 22.3): every initial request, and in-dialog
    requests that did not come back along our own Record-Route (otherwise anyone could use a made-up To tag
    to relay through us). ACK and CANCEL are never challenged: they cannot be answered with a 407."""
    if req.method in ("ACK", "CANCEL"):
        return False
    return req.to_tag is None or not routed_by_us


def make_proxy(core: ServerCore) -> Proxy:
    if core.settings.stateful:
        try:
            from leansip.server.stateful import StatefulProxy
        except ImportError:  # pragma: no cover - stateful proxy not built in this tree
            return StatelessProxy(core)
        return StatefulProxy(core)
    return StatelessProxy(core)


class StatelessProxy:
    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.router = Router(core)
        self.router.set_local(core.local_addresses)

    def set_local(self, addresses: list[tuple[str, str, int]]) -> None:
        self.router.set_local(addresses)

    def next_deadline(self) -> float | None:
        return None

    def handle_timers(self, now: float) -> list[Send]:
        return []

    def on_request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                   conn_id: str | None) -> list[Send]:
        core = self.core
        router = self.router
        method = req.method
        out: list[Send] = []
        if method == "ACK" and req.to_tag is not None and req.to_tag == core.to_tag(req):
            # the ACK for a non-2xx reply we generated (407, 404, ...): it ends our stateless "transaction"
            # (RFC 3261 17.2.1) and must not reach the callee, who never saw that INVITE (as Kamailio's sl)
            core.stats.dropped("ACK for our reply")
            return []
        routed = router.preprocess_routes(req, conn_id)
        if core.authenticator is not None and needs_auth(req, routed):
            user, challenge = core.authenticate(req, source, transport, now, conn_id, proxy=True)
            if user is None:
                return challenge
        branch = router.branch_for(req)
        if router.loop_detected(req, branch):
            return [] if method == "ACK" else [core.reply(req, 482, None, source, transport, conn_id)]
        decision = router.decide(req, now)
        timing = core.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)
        if decision.status:
            if method == "ACK":
                return []
            return [core.reply(req, decision.status, decision.reason, source, transport, conn_id)]
        target = decision.targets[0]  # stateless: no forking, the best binding only (RFC 3261 16.11)
        if method == "INVITE":
            trying = make_response(req, 100)
            out.append(core.send_response(req, trying, source, transport, conn_id))
        fwd = req.copy()
        if target.ruri is not None:
            fwd.uri = target.ruri
        router.prepare_forward(fwd, record_route=core.settings.record_route, out_transport=target.transport,
                                  in_conn=conn_id, out_conn=target.conn_id)
        fwd.add_header("via", router.via(branch, target.transport), first=True)
        core.stats.forwarded_requests += 1
        data = fwd.to_bytes()
        if timing is not None:
            timing.mark(STEP_BUILD)
        out.append(Send(data, target.dest, target.transport, target.conn_id))
        return out

    def on_response(self, resp: Response, source: tuple[str, int], transport: str, now: float,
                    conn_id: str | None) -> list[Send]:
        # the copy to forward, without the top Via value: its own top Via is the next hop's (RFC 3261 16.7)
        fwd = resp.copy()
        fwd.pop_first_value("via")
        if fwd.header("via") is None:
            self.core.stats.dropped("response for us")
            return []
        try:
            top = resp.top_via  # parsed by validate_response
            nxt = fwd.top_via
        except SipParseError as exc:
            self.core.stats.dropped(exc.reason)
            return []
        if not self.router.is_our_via(top):
            self.core.stats.dropped("response Via not ours")
            return []
        if resp.status == 100:
            return []  # hop-by-hop; we sent our own 100 for INVITE
        dest = next_hop_of_response(nxt)
        if dest is None:
            self.core.stats.dropped(DROP_UNUSABLE_VIA)
            return []
        if dest[0] in ("255.255.255.255", "0.0.0.0"):
            self.core.stats.dropped("broadcast Via")
            return []
        self.core.stats.forwarded_responses += 1
        self.core.stats.response(resp.status)
        next_transport = nxt.transport.lower()
        return [Send(fwd.to_bytes(), dest, next_transport if next_transport != "udp" else "udp")]
