"""Redirect mode (RFC 3261 8.3 and 21.3.3): 302 Moved Temporarily with every current binding of the callee.

The caller then contacts the callee directly; leansip carries no call traffic. A handler like any other
(:mod:`leansip.server.handler`): it only replies. The ACK for our 302 (a non-2xx final response) is absorbed
by the core.
"""

from __future__ import annotations

from leansip.server.context import FailureHandler, RequestContext
from leansip.server.handler import ResponseContext
from leansip.sip.message import Request, Response
from leansip.sip.uri import SipURI


class RedirectHandler:
    def __init__(self, auth: bool) -> None:
        self.auth = auth
        self.wants_in_dialog = True  # no dialog passes through us: answer 481 to whatever claims one
        self.wants_register = False
        self.wants_responses = False

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        if req.method == "CANCEL" or req.to_tag is not None:
            # we answer INVITEs at once with a final response: there is never anything to cancel, nor a dialog
            ctx.reply(481)
            return
        if self.auth and not ctx.authenticate():
            return
        ruri = req.ruri
        assert isinstance(ruri, SipURI)
        if ruri.user is None:
            ctx.reply(404)
            return
        services = ctx.services
        bindings = services.location.lookup(services.aor(ruri), ctx.now)
        if not bindings:
            ctx.reply(480 if services.user_exists(ruri.user_unescaped or "") else 404)
            return
        ctx.reply(302, None, [("Contact", f"<{b.contact}>;q={b.q:g}") for b in bindings])

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        pass

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        pass

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)
