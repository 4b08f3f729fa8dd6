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

from leansip.server.context import FailureHandler, RequestContext, editable_name, line_value
from leansip.server.services import Services
from leansip.sip.message import Request, Response

ALLOW_SELF: Final = "REGISTER, OPTIONS"


class ResponseContext:
    """What a response handler may do with a response on its way back upstream: let it pass (the default),
    edit its headers, or drop it if it is provisional.

    ``request`` is the request as it was relayed on this branch (None after a stateless relay, which keeps no
    state); ``response`` the response itself."""

    def __init__(self, services: Services, request: Request | None, response: Response, now: float) -> None:
        self.services = services
        self.request = request
        self.response = response
        self.now = now
        self.dropped = False

    def drop(self) -> None:
        """Do not pass this provisional response on. A final response cannot be dropped: the caller's
        transaction needs one (a failure handler on the relay decides what it is instead)."""
        if self.response.status >= 200:
            raise ValueError(f"a final response ({self.response.status}) cannot be dropped, only 1xx")
        self.dropped = True

    def add_header(self, name: str, value: str) -> None:
        """Add a header line to the response that is passed on."""
        self.response.add_header(editable_name(name), line_value(value))

    def remove_header(self, name: str) -> int:
        """Remove every header of that name from the response that is passed on."""
        return self.response.remove_header(editable_name(name))


class Handler(Protocol):
    """What the core calls. Every method runs inline on the message's path: no I/O, no blocking."""

    #: in-dialog requests that came back along our own Record-Route (and ACKs of 2xx) go to :meth:`on_request`
    #: too; False: the core relays them where their Route leads, as Kamailio's default script does
    wants_in_dialog: bool
    #: REGISTERs go to :meth:`on_register` (after authentication, before the registrar saves the binding)
    wants_register: bool
    #: responses from relayed branches go to :meth:`on_response` before they are passed on
    wants_responses: bool

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        """Decide a new request: record exactly one of ``ctx.reply``, ``ctx.relay``, ``ctx.drop``."""

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        """A REGISTER about to be saved: record ``ctx.reply`` (refuse) or ``ctx.drop``; nothing lets it on."""

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        """A response coming back from a branch: ``ctx.drop()`` it, or nothing to pass it on."""

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
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

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        if self.auth and not ctx.authenticate():
            return
        ctx.relay()

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        pass

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        pass

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)


class RegistrarHandler:
    """The built-in registrar only (``--mode registrar``): REGISTER and OPTIONS to the server are answered by
    the core; anything else is 405 with Allow (RFC 3261 21.4.6)."""

    def __init__(self) -> None:
        self.wants_in_dialog = True
        self.wants_register = False
        self.wants_responses = False

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        ctx.reply(405, None, [("Allow", ALLOW_SELF)])

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        pass

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        pass

    def on_failure(self, fn: FailureHandler, req: Request, ctx: RequestContext, resp: Response) -> None:
        fn(req, ctx, resp)
