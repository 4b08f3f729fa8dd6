"""Redirect mode (RFC 3261 8.3 and 21.3.3): 302 Moved Temporarily with every current binding of the callee.

The caller then contacts the callee directly; leansip carries no call traffic. The ACK for our 302 (a non-2xx
final response) is absorbed by the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leansip.server.routing import Router
from leansip.sip.message import Request
from leansip.sip.send import Send
from leansip.sip.uri import SipURI

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.core import ServerCore


class Redirector:
    def __init__(self, core: ServerCore) -> None:
        self.core = core
        self.router = Router(core)

    def on_request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                   conn_id: str | None) -> list[Send]:
        core = self.core
        if req.method == "CANCEL":
            # we answer INVITEs at once with a final response, so there is never anything to cancel
            return [core.reply(req, 481, None, source, transport, conn_id)]
        if req.to_tag is not None:
            return [core.reply(req, 481, None, source, transport, conn_id)]
        if core.authenticator is not None:
            user, challenge = core.authenticate(req, source, transport, now, conn_id, proxy=True)
            if user is None:
                return challenge
        ruri = req.ruri
        assert isinstance(ruri, SipURI)
        if ruri.user is None:
            return [core.reply(req, 404, None, source, transport, conn_id)]
        policy = core.settings.policy
        user = ruri.user_unescaped or ""
        aor = f"{user}@{ruri.host.lower()}" if policy.use_domain else user
        bindings = core.location.lookup(aor, now)
        if not bindings:
            status = 480 if core.user_exists(user) else 404
            return [core.reply(req, status, None, source, transport, conn_id)]
        contacts = [("Contact", f"<{b.contact}>;q={b.q:g}") for b in bindings]
        return [core.reply(req, 302, None, source, transport, conn_id, contacts)]
