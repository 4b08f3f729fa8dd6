"""The server's straight path: one datagram in, its answer out, with no queue in between.

:meth:`ServerCore.receive` is the whole per-packet path of the research's bare-PC server, in sans-I/O form:
reply cache -> parse -> validate -> (authenticate) -> decide -> build -> return :class:`Send` items. The asyncio
shell (``leansip.io``) calls it from the datagram callback and writes what it returns; timers (transactions,
binding expiry, persistence) go through :meth:`next_deadline` / :meth:`handle_timers`.

What the core answers itself (RFC 3261 8.2 and 16.3): 400 for malformed requests (dropped when not even a Via
could be read), 505 for another SIP version, 416 for a Request-URI scheme it cannot route, 420 for unsupported
Require/Proxy-Require extensions, 405 with Allow for methods it does not handle, 483 when Max-Forwards is
exhausted, 200 to OPTIONS addressed to the server itself. REGISTER goes to the registrar; every other request to
the one request handler (:mod:`leansip.server.handler`: the mode's built-in one, or a route script), whose
recorded decision the core then carries out through the relay (:mod:`leansip.server.proxy`, stateless, and
:mod:`leansip.server.stateful`). Handlers and relays see :class:`~leansip.server.services.Services`, never the core.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Final

from leansip.logevent import log_event
from leansip.server.calls import CallTracker
from leansip.server.context import ABSORB, DROP, RELAY, REPLY, RequestContext
from leansip.server.flows import Flows, drop_flow_bindings
from leansip.server.gateways import GatewayProber, Gateways
from leansip.server.handler import ALLOW_SELF, Handler, ProxyHandler, RegistrarHandler
from leansip.server.location import Binding, LocationService
from leansip.server.redirect import RedirectHandler
from leansip.server.registrar import Registrar, aor_of
from leansip.server.replycache import ReplyCache
from leansip.server.services import CoreSettings, Ha1Lookup, Services, response_destination
from leansip.server.stateful import StatefulRelay
from leansip.server.stats import Stats
from leansip.server.timing import STEP_BUILD, STEP_LOCATION, StepTimer
from leansip.sip.digest_auth import DigestAuthenticator
from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    KIND_PROXY_REQUIRE,
    KIND_REQUIRE,
    Header,
    Request,
    Response,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from leansip.sip.ratelimit import FailureLimiter
from leansip.sip.send import Send
from leansip.sip.transaction import ServerTransaction
from leansip.sip.txstate import State
from leansip.sip.uri import SipURI, Via, format_params, remember_via, split_comma

log = logging.getLogger("leansip.server")

SUPPORTED_EXTENSIONS: Final = frozenset({"path"})
PROXY_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER",
                 "SUBSCRIBE", "NOTIFY", "PUBLISH")

__all__ = ["ALLOW_SELF", "CoreSettings", "Ha1Lookup", "ServerCore", "response_destination", "stamp_via"]


def stamp_via(req: Request, source: tuple[str, int], transport: str = "udp") -> None:
    """Add ``received`` (and fill ``rport``) to the top Via (RFC 3261 18.2.1, RFC 3581 section 4).

    On a connection (``transport`` not udp) rport is always filled: the response must go back over that
    connection (RFC 3261 18.2.2), and received+rport name it for a stateless proxy that forwards the response
    by the Via alone (the stream layer maps the address back to the open connection)."""
    via = req.top_via
    params = via.params
    host = via.host[1:-1] if via.host.startswith("[") else via.host
    has_rport = "rport" in params or transport != "udp"
    if host == source[0] and not has_rport:
        return
    new_params = dict(params)
    new_params["received"] = source[0]
    if has_rport:
        new_params["rport"] = str(source[1])
    text = f"{via.protocol}/{via.transport} {via.sent_by}{format_params(new_params)}"
    for i, h in enumerate(req.headers):
        if h.name == "via":
            values = split_comma(h.value) if "," in h.value else [h.value]
            values[0] = text
            req.replace_header(i, Header("via", ", ".join(values)))
            break
    stamped = Via(via.protocol, via.transport, via.host, via.port, new_params, text)
    req.set_top_via_view(stamped)
    remember_via(stamped)  # every response to this request carries it (a proxy parses it there again)


class ServerCore:
    """Sans-I/O SIP server: the straight path from a message to its outputs, around one request handler.

    Construct with the settings and the location service (and users, digest, limiter, our addresses); the
    handler is the mode's built-in one unless given (a route script: ``leansip.routes.Routes``). Feed it with
    :meth:`receive`; run :meth:`handle_timers` at :meth:`next_deadline`, :meth:`housekeeping` once a second,
    :meth:`transport_error` when an output could not be sent."""

    def __init__(
        self,
        settings: CoreSettings,
        location: LocationService,
        *,
        ha1_lookup: Ha1Lookup | None = None,
        user_exists: Callable[[str], bool] | None = None,
        authenticator: DigestAuthenticator | None = None,
        limiter: FailureLimiter | None = None,
        local_addresses: list[tuple[str, str, int]] | None = None,
        secret: bytes | None = None,
        handler: Handler | None = None,
        calls: CallTracker | None = None,
        gateways: Gateways | None = None,
    ) -> None:
        self.settings = settings
        self.location = location
        self.secret = secret or os.urandom(32)
        if settings.auth and authenticator is None:
            authenticator = DigestAuthenticator(self.secret, settings.realm)
        #: what handlers and relays may use (they never hold the core)
        self.services = Services(settings, location, self.secret, ha1_lookup=ha1_lookup, user_exists=user_exists,
                                 authenticator=authenticator, limiter=limiter, local_addresses=local_addresses,
                                 calls=calls, gateways=gateways)
        self.registrar = Registrar(location, settings.policy, self.services.flows)
        #: the gateways' OPTIONS prober, set by the shell once it listens: it takes the answers to its probes
        self.prober: GatewayProber | None = None
        #: the user store behind ``ha1_lookup``/``user_exists`` (a ``UserStore``), for the admin view; may be None
        self.users: Any = None
        #: datagram -> what we sent: a retransmission is answered before parsing (see receive); bounded in bytes
        self._reply_cache = ReplyCache(settings.reply_cache_ttl, max_entries=settings.reply_cache_size,
                                       max_bytes=settings.reply_cache_bytes,
                                       max_entry_bytes=settings.reply_cache_entry_bytes)
        self._handler: Handler = handler if handler is not None else self._builtin_handler()
        #: proxy mode's relay (stateless, and stateful with its transactions); None in registrar/redirect mode
        self.relay: StatefulRelay | None = None
        if settings.mode == "proxy":
            self.relay = StatefulRelay(self.services, self._handler)
        #: True while the request being handled was relayed statefully: its transactions absorb retransmissions
        self._stateful_relayed = False

    @property
    def handler(self) -> Handler:
        """Who decides about new requests. Set a new one at any time (a reloaded route script): requests
        from then on go to it; relayed requests already running finish with the one that relayed them."""
        return self._handler

    @handler.setter
    def handler(self, value: Handler) -> None:
        self._handler = value
        if self.relay is not None:
            self.relay.handler = value

    def _builtin_handler(self) -> Handler:
        mode = self.settings.mode
        auth = self.settings.auth
        if mode == "proxy":
            return ProxyHandler(auth)
        if mode == "redirect":
            return RedirectHandler(auth)
        return RegistrarHandler()

    # ------------------------------------------------------------------ the services, as the app sees them
    @property
    def proxy(self) -> StatefulRelay | None:
        """The relay (kept under its old name for the admin view and tests)."""
        return self.relay

    @property
    def stats(self) -> Stats:
        return self.services.stats

    @property
    def authenticator(self) -> DigestAuthenticator | None:
        return self.services.authenticator

    @property
    def limiter(self) -> FailureLimiter:
        return self.services.limiter

    @property
    def timing(self) -> StepTimer | None:
        """Per-step timings of REGISTER / initial INVITE; the app injects one with its clock, None = off."""
        return self.services.timing

    @timing.setter
    def timing(self, value: StepTimer | None) -> None:
        self.services.timing = value

    @property
    def local_addresses(self) -> list[tuple[str, str, int]]:
        """(transport, host, port) of every socket we listen on; the first UDP one goes into our Via."""
        return self.services.local_addresses

    @local_addresses.setter
    def local_addresses(self, value: list[tuple[str, str, int]]) -> None:
        self.services.local_addresses = value

    @property
    def local_names(self) -> set[str]:
        return self.services.local_names

    @property
    def local_ips(self) -> set[str]:
        """The machine's addresses, which a wildcard listener (0.0.0.0, ::) answers on (the shell adds the
        interfaces' addresses at start-up)."""
        return self.services.local_ips

    @local_ips.setter
    def local_ips(self, value: set[str]) -> None:
        self.services.local_ips = value

    @property
    def flows(self) -> Flows:
        """Connections clients opened to us (RFC 5626 flows): the shell reports them (connection_opened/closed)."""
        return self.services.flows

    def is_local(self, uri: SipURI) -> bool:
        return self.services.is_local(uri)

    def set_local(self, addresses: list[tuple[str, str, int]]) -> None:
        """Our listening addresses, once the sockets are open: our Via, Record-Route and "is this us"."""
        self.services.local_addresses = addresses
        if self.relay is not None:
            self.relay.set_local(addresses)

    def to_tag(self, req: Request) -> str:
        return self.services.to_tag(req)

    def reply(self, req: Request, status: int, reason: str | None = None, source: tuple[str, int] = ("", 0),
              transport: str = "udp", conn_id: str | None = None, headers: list[tuple[str, str]] | None = None,
              ) -> Send:
        return self.services.reply(req, status, reason, source, transport, conn_id, headers)

    def _safe_to_tag(self, req: Request) -> str | None:
        """The To tag for an error reply to a request whose From may itself be what is broken."""
        try:
            return self.services.to_tag(req)
        except SipParseError:
            return None

    # ------------------------------------------------------------------ entry points
    def receive(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                conn_id: str | None = None) -> list[Send]:
        """Handle one datagram or one framed stream message; never raises for bad input."""
        services = self.services
        timing = services.timing
        if timing is not None:
            timing.start()
        # A retransmitted request is answered from the replies to the first copy, before any parsing. Keyed by
        # the bytes alone (the source is checked on a hit: no key tuple to build and hash); responses, INVITE
        # and ACK are never cached, so their datagrams skip the lookup (and the hash of the whole datagram).
        if _cacheable(data):
            cached = self._reply_cache.get(data, source, now)
            if cached is not None:
                services.stats.retransmissions += 1
                return cached
        try:
            msg = parse_message(data, stream=transport != "udp")
        except SipParseError as exc:
            return self._reject(exc, source, transport, conn_id)
        if isinstance(msg, Response):
            try:
                validate_response(msg)
            except SipParseError as exc:
                services.stats.dropped(exc.reason)
                return []
            prober = self.prober
            if prober is not None and prober.on_response(msg, now):
                return []  # the answer to one of our gateway health probes
            if self.relay is not None:
                return self.relay.on_response(msg, source, transport, now, conn_id)
            services.stats.dropped("response without a transaction")
            return []
        try:
            validate_request(msg)
        except SipParseError as exc:
            return self._reject(exc, source, transport, conn_id)
        services.stats.request(msg.method)
        if timing is not None:
            timing.begin_request(msg.method, msg.to_tag is None)
        self._stateful_relayed = False
        try:
            out = self._request(msg, source, transport, now, conn_id)
        except SipParseError as exc:
            exc.message = exc.message or msg
            return self._reject(exc, source, transport, conn_id)
        # a stateful relay's transactions absorb retransmissions and answer them with the latest response
        # (RFC 3261 17.2.2): a cached copy of the forward would bypass them
        if out and msg.method != "INVITE" and msg.method != "ACK" and not (
                self._stateful_relayed and any(not s.data.startswith(b"SIP/2.0 ") for s in out)):
            self._reply_cache.put(data, source, out, now)
        return out

    def _reject(self, exc: SipParseError, source: tuple[str, int], transport: str,
                conn_id: str | None) -> list[Send]:
        msg = exc.message
        if not exc.status or not isinstance(msg, Request) or msg.method == "ACK":
            self.stats.dropped(exc.reason)
            log_event(log, "drop", level=logging.DEBUG, reason=exc.reason, src=f"{source[0]}:{source[1]}")
            return []
        try:
            msg.top_via  # noqa: B018
            stamp_via(msg, source)
            resp = make_response(msg, exc.status, _reason_phrase(exc), to_tag=self._safe_to_tag(msg))
            return [self.services.send_response(msg, resp, source, transport, conn_id)]
        except SipParseError as inner:
            self.stats.dropped(inner.reason)
            return []

    def _request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                 conn_id: str | None) -> list[Send]:
        """What the core answers itself (RFC 3261 8.2, 16.3), then the registrar or the handler."""
        method = req.method
        stamp_via(req, source, transport)
        services = self.services
        ruri = req.ruri
        if method == "ACK":
            if self.relay is not None:
                return self._proxy(req, source, transport, now, conn_id)
            return []  # ACK for our own non-2xx answers is absorbed (RFC 3261 17.2.1)
        if not isinstance(ruri, SipURI):
            return [services.reply(req, 416, None, source, transport, conn_id)]
        if ruri.headers:
            raise SipParseError("Request-URI must not carry headers")
        to_self = method == "REGISTER" or services.targets_self(req)
        if method != "CANCEL":
            bad = self._unsupported(req, KIND_PROXY_REQUIRE)
            if to_self:
                bad += self._unsupported(req, KIND_REQUIRE)
            if bad:
                return [services.reply(req, 420, None, source, transport, conn_id,
                                       [("Unsupported", ", ".join(bad))])]
        if method == "REGISTER":
            return self._register(req, source, transport, now, conn_id)
        if to_self:
            if method == "OPTIONS":
                return [services.reply(req, 200, None, source, transport, conn_id, self._capabilities())]
            if method == "CANCEL":
                return [services.reply(req, 481, None, source, transport, conn_id)]
            return [services.reply(req, 405, None, source, transport, conn_id, [("Allow", ALLOW_SELF)])]
        mf = req.max_forwards
        if mf is not None and mf <= 0 and method != "CANCEL":
            return [services.reply(req, 483, None, source, transport, conn_id)]
        if self.relay is not None:
            out = self._proxy(req, source, transport, now, conn_id)
            timing = services.timing
            if timing is not None and method == "INVITE" and any(not s.data.startswith(b"SIP/2.0 ") for s in out):
                timing.forwarded()  # closes BUILD for a relay that does not mark its own steps
            return out
        ctx = RequestContext(services, req, source, transport, now, conn_id)
        self.handler.on_request(req, ctx)
        return self._perform(ctx, None, [])

    def _proxy(self, req: Request, source: tuple[str, int], transport: str, now: float,
               conn_id: str | None) -> list[Send]:
        """A request in proxy mode: what the core handles before the handler (as Kamailio's default script
        does), then the handler, then its decision carried out.

        Before the handler: a retransmission, or the ACK of a non-2xx, goes to its transaction (17.2.3); with
        stateful relaying a new request gets its server transaction (and an INVITE its 100 Trying); a CANCEL
        for one of our transactions is answered and passed on (16.10); our own Route entry is removed (16.4);
        and unless the handler wants them, an ACK of a 2xx and an in-dialog request that came back along our
        Record-Route are relayed where their Route leads. With stateless relaying an ACK of a reply we made
        ourselves ends here, and other ACKs and CANCELs go to the handler, to follow their INVITE."""
        relay = self.relay
        assert relay is not None
        method = req.method
        out: list[Send] = []
        stx = relay.match(req)
        if stx is not None:
            if method != "ACK" or stx.state is not State.ACCEPTED:
                return relay.absorb(stx, req, now)
            stx = None  # the ACK of a 2xx (RFC 6026 7.1): end to end, relayed below like any other
        elif method == "ACK":
            if relay.our_ack(req):
                self.stats.dropped("ACK for our reply")
                return []
        elif self.settings.stateful or (method == "CANCEL" and relay.cancel_target(req)):
            stx = relay.open(req, source, transport, now, conn_id, out)
            if stx is None:
                return out
        if method == "CANCEL" and stx is not None:
            out.extend(relay.cancel(req, stx, now, conn_id))
            self._stateful_relayed = True
            return out
        routed = relay.router.preprocess_routes(req, conn_id)
        ctx = RequestContext(self.services, req, source, transport, now, conn_id)
        handler = self.handler
        # along our Record-Route: an in-dialog request that came back through our Route entry; with stateful
        # relaying, an ACK no transaction took (the ACK of a 2xx, end to end)
        along_route = (routed and req.to_tag is not None) or (method == "ACK" and self.settings.stateful)
        if along_route and not handler.wants_in_dialog:
            ctx.relay()
        else:
            handler.on_request(req, ctx)
        return self._perform(ctx, stx, out)

    def _perform(self, ctx: RequestContext, stx: ServerTransaction | None, out: list[Send]) -> list[Send]:
        """Carry out the handler's decision: a relay (stateful from ``stx``, made now if needed, or
        stateless), a reply (through ``stx`` or stateless), or nothing."""
        relay = self.relay
        req = ctx.request
        action = ctx.action
        if action == RELAY and relay is not None:
            if ctx.stateful and req.method != "ACK":  # an ACK is never sent in a transaction (17.1.1.3)
                if stx is None:
                    stx = relay.open(req, ctx.source, ctx.transport, ctx.now, ctx.conn_id, out)
                    if stx is None:
                        return out
                self._stateful_relayed = True
                out.extend(relay.relay(ctx, stx, self.handler))
                return out
            if stx is not None:
                relay.discard(stx)
            out.extend(relay.forward(ctx))
            return out
        if action == REPLY:
            if req.method == "ACK":
                return out  # an ACK is never answered
            if stx is not None and relay is not None:
                out.extend(relay.respond(stx, ctx))
                return out
            resp = ctx.response
            if resp is None:
                resp = make_response(req, ctx.status, ctx.reason, to_tag=self.services.to_tag(req),
                                     headers=ctx.headers or ())
            out.append(self.services.send_response(req, resp, ctx.source, ctx.transport, ctx.conn_id))
            return out
        if action == DROP or action == ABSORB:
            if action == DROP and stx is not None and relay is not None:
                relay.discard(stx)
            return out
        # no decision (or a relay without a relay, outside proxy mode): a bug of the handler, not of the peer
        self.stats.dropped("handler did not decide")
        log.warning("event=handler_undecided method=%s action=%d", req.method, action)
        ctx.action = REPLY
        ctx.status = 500
        ctx.reason = "No routing decision"
        return self._perform(ctx, stx, out)

    def _capabilities(self) -> list[tuple[str, str]]:
        allow = ALLOW_SELF if self.settings.mode == "registrar" else "REGISTER, " + ", ".join(PROXY_METHODS)
        return [("Allow", allow), ("Accept", "application/sdp"), ("Supported", ", ".join(sorted(SUPPORTED_EXTENSIONS))),
                ("Server", self.settings.server_name)]

    def _unsupported(self, req: Request, kind: int) -> list[str]:
        """The option tags of a Require or Proxy-Require (``kind``) that leansip does not support."""
        if req.first_value(kind) is None:
            return []
        return [tag for tag in req.values_of(kind) if tag.lower() not in SUPPORTED_EXTENSIONS]

    # ------------------------------------------------------------------ authentication
    def check_credentials(self, req: Request, source: tuple[str, int], now: float, *,
                          proxy: bool) -> tuple[str | None, Response | None]:
        """See :meth:`Services.check_credentials`."""
        return self.services.check_credentials(req, source, now, proxy=proxy)

    # ------------------------------------------------------------------ registrar
    def _register(self, req: Request, source: tuple[str, int], transport: str, now: float,
                  conn_id: str | None) -> list[Send]:
        """REGISTER (RFC 3261 10.3): authenticated when the server has digest on (the user may only register
        its own address-of-record), shown to the handler when it wants REGISTERs, then saved; the reply is
        built from the bindings the registrar keeps."""
        services = self.services
        user: str | None = None
        if self.settings.auth:
            # a To that names no AOR is a 400 before any challenge (register() checks it again without auth)
            aor = self.registrar.aor_for(req)
            user, resp = services.check_credentials(req, source, now, proxy=False)
            if user is None:
                return [] if resp is None else [services.send_response(req, resp, source, transport, conn_id)]
            uri = req.to.uri
            owner = aor_of(uri, False) if isinstance(uri, SipURI) else aor
            if user != owner:
                return [services.reply(req, 403, "Not your address-of-record", source, transport, conn_id)]
        handler = self.handler
        if handler.wants_register:
            ctx = RequestContext(services, req, source, transport, now, conn_id)
            ctx.user = user
            handler.on_register(req, ctx)
            if ctx.action != 0:
                return self._perform(ctx, None, [])
        resp = self.registrar.register(req, source, transport, now, to_tag=services.to_tag(req), conn_id=conn_id)
        timing = services.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)  # registrar decision + store update + Contact lookup for the reply
        sent = services.send_response(req, resp, source, transport, conn_id)
        if resp.status < 300:
            # a durable store: the 200 OK (and the bindings it lists) goes out once they are committed
            sent.after_commit = self.location.write_ticket()
        if timing is not None:
            timing.mark(STEP_BUILD)  # serialized
        return [sent]

    def transport_error(self, data: bytes, now: float, reason: str = "") -> list[Send]:
        """The transport could not send ``data`` (one of our outputs): a stateful relay fails that branch at once
        (RFC 3261 16.9: as if it had answered 503); otherwise there is nothing to undo."""
        if self.relay is None:
            return []
        return self.relay.on_transport_error(data, now, reason)

    # ------------------------------------------------------------------ connections
    def connection_opened(self, conn_id: str, transport: str, peer: tuple[str, int]) -> None:
        """The shell accepted or opened a connection (TCP, TLS, WS, WSS): a flow requests can go out on."""
        self.flows.opened(conn_id, transport, peer)

    def connection_closed(self, conn_id: str) -> list[Binding]:
        """A connection is gone: in-dialog requests for it get 430 from now on, and the bindings only it could
        reach are removed at once rather than at expiry (returned, for the log)."""
        dropped = drop_flow_bindings(self.flows, self.location, conn_id)
        if dropped:
            self.stats.lost_bindings += len(dropped)
        return dropped

    # ------------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        if self.relay is not None:
            return self.relay.next_deadline()
        return None

    def handle_timers(self, now: float) -> list[Send]:
        if self.relay is not None:
            return self.relay.handle_timers(now)
        return []

    def held_bytes(self) -> int:
        """Bytes the core keeps for what peers sent, as its byte bounds count them: cached replies and the
        relay's transactions (the shell trims the heap after this falls a lot: leansip.app.memtrim)."""
        held = self._reply_cache.nbytes
        if self.relay is not None:
            held += self.relay.held_bytes()
        return held

    def housekeeping(self, now: float) -> None:
        """Once a second: expire bindings, drop old cached replies, forget sources whose auth failures aged out."""
        expired = self.location.expire(now)
        if expired:
            self.stats.expired_bindings += len(expired)
        # without this, every source that ever failed once stays in the limiter until max_sources evicts it
        self.services.limiter.purge(now)
        self._reply_cache.expire(now)


def _cacheable(data: bytes) -> bool:
    """Could the replies to this datagram be in the reply cache? Not if it is a response (``SIP/``), an INVITE
    or an ACK (see ServerCore.receive). Read byte by byte: compiled, an index into bytes is a direct read."""
    if len(data) < 4:
        return True
    first = data[0]
    if first == 83:  # S: SIP/ (a response) or SUBSCRIBE
        return not (data[1] == 73 and data[2] == 80 and data[3] == 47)
    if first == 73:  # I: INVITE or INFO
        return not (data[1] == 78 and data[2] == 86)
    if first == 65:  # A: ACK
        return not (data[1] == 67 and data[2] == 75 and data[3] == 32)
    return True


def _reason_phrase(exc: SipParseError) -> str:
    if exc.status == 505:
        return "Version Not Supported"
    reason = exc.reason.replace("\r", " ").replace("\n", " ")
    return f"Bad Request ({reason[:80]})" if exc.status == 400 else reason[:80]

