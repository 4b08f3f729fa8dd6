"""The one interface between the server core and whatever decides where requests go.

The core (:mod:`leansip.server.core`) parses and checks every message, absorbs retransmissions, and then hands
each new request to one :class:`Handler` with a :class:`~leansip.server.context.RequestContext`; the handler
records a decision (reply, relay, drop) and the core carries it out. The built-in modes are handlers
(:class:`ProxyHandler`, :class:`RegistrarHandler`, :class:`~leansip.server.redirect.RedirectHandler`), and so is
a route script (:class:`leansip.routes.Routes`): the same calls, the same context.

A handler never sees the :class:`~leansip.server.core.ServerCore`: what it may use is on the context (and its
``services``). The three ``wants_*`` flags say which optional calls it takes; the core reads them, never probes.
"""

from __future__ import annotations

from typing import Final, Protocol

from leansip.server.context import FailureHandler, RequestContext
from leansip.sip.message import Request, Response

ALLOW_SELF: Final = "REGISTER, OPTIONS"


class ResponseContext:
    """What a response handler may do with a response on its way back: let it pass (the default) or drop it.

    ``request`` is the request the response answers (as forwarded on this branch, for a stateful relay)."""

    def __init__(self, request: Request, now: float) -> None:
        self.request = request
        self.now = now
        self.dropped = False

    def drop(self) -> None:
        """Do not pass this response on (a stateful relay still counts it towards the branch's outcome)."""
        self.dropped = True


class Handler(Protocol):
    """What the core calls. Every method runs inline on the message's path: no I/O, no blocking."""

    #: in-dialog requests that came back along our own Record-Route (and ACKs of 2xx) go to :meth:`request`
    #: too; False: the core relays them where their Route leads, as Kamailio's default script does
    wants_in_dialog: bool
    #: REGISTERs go to :meth:`register` (after authentication, before the registrar saves the binding)
    wants_register: bool
    #: responses from relayed branches go to :meth:`response` before they are passed on
    wants_responses: bool

    def request(self, req: Request, ctx: RequestContext) -> None:
        """Decide a new request: record exactly one of ``ctx.reply``, ``ctx.relay``, ``ctx.drop``."""

    def register(self, req: Request, ctx: RequestContext) -> None:
        """A REGISTER about to be saved: record ``ctx.reply`` (refuse) or ``ctx.drop``; nothing lets it on."""

    def response(self, resp: Response, ctx: ResponseContext) -> None:
        """A response coming back from a branch: ``ctx.drop()`` it, or nothing to pass it on."""

    def failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        """Run ``fn``, a failure handler this handler gave to ``ctx.relay(on_failure=...)``: every branch
        failed, ``resp`` is the best final response; ``fn`` records a new decision in ``ctx`` (or none)."""


class ProxyHandler:
    """The built-in proxy (``--mode proxy``): with ``--auth``, authenticate every request that can be
    challenged (RFC 3261 22.3; in-dialog requests that follow our Record-Route never reach a handler), then
    relay it where it leads: its Route, else the callee's registered contacts, else its Request-URI.

    As a route script, the whole of it is::

        @routes.request("*")
        def proxy(req, ctx):
            if ctx.authenticate():
                ctx.relay()
    """

    def __init__(self, auth: bool) -> None:
        self.auth = auth
        self.wants_in_dialog = False
        self.wants_register = False
        self.wants_responses = False

    def request(self, req: Request, ctx: RequestContext) -> None:
        if self.auth and not ctx.authenticate():
            return
        ctx.relay()

    def register(self, req: Request, ctx: RequestContext) -> None:
        pass

    def response(self, resp: Response, ctx: ResponseContext) -> None:
        pass

    def failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)


class RegistrarHandler:
    """The built-in registrar only (``--mode registrar``): REGISTER and OPTIONS to the server are answered by
    the core; anything else is 405 with Allow (RFC 3261 21.4.6)."""

    def __init__(self) -> None:
        self.wants_in_dialog = True
        self.wants_register = False
        self.wants_responses = False

    def request(self, req: Request, ctx: RequestContext) -> None:
        ctx.reply(405, None, [("Allow", ALLOW_SELF)])

    def register(self, req: Request, ctx: RequestContext) -> None:
        pass

    def response(self, resp: Response, ctx: ResponseContext) -> None:
        pass

    def failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)
