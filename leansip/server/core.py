"""The server's straight path: one datagram in, its answer out, with no queue in between.

:meth:`ServerCore.receive` is the whole per-packet path of the research's bare-PC server, in sans-I/O form:
reply cache -> parse -> validate -> (authenticate) -> decide -> build -> return :class:`Send` items. The asyncio
shell (``leansip.io``) calls it from the datagram callback and writes what it returns; timers (transactions,
binding expiry, persistence) go through :meth:`next_deadline` / :meth:`handle_timers`.

What the core answers itself (RFC 3261 8.2 and 16.3): 400 for malformed requests (dropped when not even a Via
could be read), 505 for another SIP version, 416 for a Request-URI scheme it cannot route, 420 for unsupported
Require/Proxy-Require extensions, 405 with Allow for methods it does not handle, 483 when Max-Forwards is
exhausted, 200 to OPTIONS addressed to the server itself. REGISTER goes to the registrar; everything else to the
proxy or redirect logic, depending on the mode.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from leansip.logevent import log_event
from leansip.server.flows import Flows, drop_flow_bindings
from leansip.server.location import Binding, LocationService
from leansip.server.registrar import Registrar, RegistrarPolicy, aor_of
from leansip.server.routing import WILDCARD_HOSTS
from leansip.server.stats import Stats
from leansip.server.timing import STEP_AUTH, STEP_BUILD, STEP_LOCATION, StepTimer
from leansip.sip.digest import AuthKind, DigestAuthenticator, DigestError, parse_digest
from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    KIND_CALL_ID,
    KIND_PROXY_REQUIRE,
    KIND_REQUIRE,
    KIND_ROUTE,
    Header,
    Request,
    Response,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from leansip.sip.ratelimit import DecisionKind, FailureLimiter
from leansip.sip.send import Send
from leansip.sip.uri import SipURI, Via, cache_put, format_params, remember_via, split_comma

log = logging.getLogger("leansip.server")

SUPPORTED_EXTENSIONS: Final = frozenset({"path"})
PROXY_METHODS: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "INFO", "UPDATE", "PRACK", "REFER",
                 "SUBSCRIBE", "NOTIFY", "PUBLISH")
ALLOW_SELF: Final = "REGISTER, OPTIONS"
Ha1Lookup = Callable[[str, str, str], "str | None"]


@dataclass(slots=True)
class CoreSettings:
    mode: str = "proxy"  # proxy | redirect | registrar
    stateful: bool = True
    auth: bool = False
    realm: str = "leansip"
    record_route: bool = True
    server_name: str = "leansip"
    reply_cache_size: int = 20000
    reply_cache_ttl: float = 32.0
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timers.end_grid of the stateful proxy's transactions (0: exact; the server runs with 1 s, see serve.py)
    end_grid: float = 0.0
    max_transactions: int = 100000
    policy: RegistrarPolicy = field(default_factory=RegistrarPolicy)


def response_destination(via: Via, source: tuple[str, int]) -> tuple[str, int]:
    """Where a response to a request with this top Via goes (RFC 3261 18.2.2, RFC 3581 section 4).

    maddr wins; otherwise the packet's source address (which is ``received``), at the rport when the client
    asked for it, else at the sent-by port (default 5060)."""
    params = via.params
    maddr = params.get("maddr")
    if maddr:
        return maddr, via.port or 5060
    if "rport" in params:
        return source
    return source[0], via.port or 5060


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
    """Sans-I/O SIP server: registrar + proxy/redirect, with optional digest authentication."""

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
    ) -> None:
        self.settings = settings
        self.location = location
        self.secret = secret or os.urandom(32)
        #: connections clients opened to us (RFC 5626 flows): the shell reports them (connection_opened/closed)
        self.flows = Flows(self.secret)
        self.registrar = Registrar(location, settings.policy, self.flows)
        self.ha1_lookup = ha1_lookup or (lambda user, realm, alg: None)
        self.user_exists = user_exists or (lambda user: False)
        if settings.auth and authenticator is None:
            authenticator = DigestAuthenticator(self.secret, settings.realm)
        self.authenticator = authenticator
        # "is None", not "or": an empty FailureLimiter has len() 0 and is falsy, and the configured one must win
        self.limiter = limiter if limiter is not None else FailureLimiter()
        #: (transport, host, port) of every socket we listen on; the first UDP one goes into our Via.
        self.local_addresses = local_addresses or [("udp", "127.0.0.1", 5060)]
        self.stats = Stats()
        #: the user store behind ``ha1_lookup``/``user_exists`` (a ``UserStore``), for the admin view; may be None
        self.users: Any = None
        #: per-step timings of REGISTER / initial INVITE; the app injects one with its clock, None = off
        self.timing: StepTimer | None = None
        #: host names that mean "this server" besides the listen addresses (RFC 3261 16.4 Route checks)
        self.local_names: set[str] = {"localhost", settings.realm.lower()}
        #: the machine's addresses, which a wildcard listener (0.0.0.0, ::) answers on; the shell adds the
        #: interfaces' addresses at start-up
        self.local_ips: set[str] = {"127.0.0.1", "::1"}
        #: datagram -> (expiry, source, what we sent): a retransmission is answered before parsing (see receive)
        self._reply_cache: OrderedDict[bytes, tuple[float, tuple[str, int], list[Send]]] = OrderedDict()
        self._tag_salt = self.secret[:8]
        self.proxy = None
        self.redirect = None
        if settings.mode == "proxy":
            from leansip.server.proxy import make_proxy

            self.proxy = make_proxy(self)
        elif settings.mode == "redirect":
            from leansip.server.redirect import Redirector

            self.redirect = Redirector(self)

    # ------------------------------------------------------------------ helpers
    def to_tag(self, req: Request) -> str:
        """A stable To tag per request, so retransmissions and their replies agree (RFC 3261 8.2.6.2)."""
        # Python's (randomized, per process) string hash is enough: the tag must be stable for the lifetime of
        # a transaction and unlikely to collide, not secret; a keyed blake2s cost more than the rest of a reply.
        # decimal: compiled, str() of an int is a direct conversion, where "%x" formatting went through printf
        return str(hash((req.first_value(KIND_CALL_ID), req.from_tag, self._tag_salt)) & 0xFFFFFFFFFFFF)

    def reply(self, req: Request, status: int, reason: str | None = None, source: tuple[str, int] = ("", 0),
              transport: str = "udp", conn_id: str | None = None, headers: list[tuple[str, str]] | None = None,
              ) -> Send:
        resp = make_response(req, status, reason, to_tag=self.to_tag(req), headers=headers or ())
        return self.send_response(req, resp, source, transport, conn_id)

    def send_response(self, req: Request, resp: Response, source: tuple[str, int], transport: str,
                      conn_id: str | None) -> Send:
        self.stats.response(resp.status)
        dest = response_destination(req.top_via, source)
        if transport != "udp":
            dest = source
        return Send(resp.to_bytes(), dest, transport, conn_id)

    def is_local(self, uri: SipURI) -> bool:
        """Does ``uri`` name this server (RFC 3261 16.4 Route checks, 16.5 targets, OPTIONS to us)?"""
        return self.is_local_host(uri.host, uri.port)

    def is_local_host(self, host: str, port: int | None) -> bool:
        """Is ``host``:``port`` one of our listeners? The host is a listening address (an IPv6 one with or without
        brackets), any address of this machine for a wildcard listener (``0.0.0.0``, ``[::]``), ``localhost`` or
        the realm; the port is one we listen on, or absent: a URI naming our host without a port is us, as
        Kamailio's ``myself`` (the client did not say which of our ports, and no other server is meant)."""
        host = host.lower()
        if host.startswith("["):
            host = host[1:-1]
        if ":" in host:
            host = canonical_ipv6(host)
        named = host in self.local_names
        for _t, lhost, lport in self.local_addresses:
            if port is None or port == lport:
                if named or host == lhost or (lhost in WILDCARD_HOSTS and host in self.local_ips):
                    return True
        return port is None and named

    def targets_self(self, req: Request) -> bool:
        """A request for the server itself, not for a user: R-URI without a user part (e.g. ``sip:host``).

        Not when the R-URI is our Record-Route URI (``lr``) and Route headers follow: a strict router put it
        there and the real target is the last Route (RFC 3261 16.4), so the proxy must route it."""
        ruri = req.ruri
        if not isinstance(ruri, SipURI) or ruri.user is not None or not self.is_local(ruri):
            return False
        return not ("lr" in ruri.params and req.first_value(KIND_ROUTE) is not None and req.method != "REGISTER")

    def _safe_to_tag(self, req: Request) -> str | None:
        """The To tag for an error reply to a request whose From may itself be what is broken."""
        try:
            return self.to_tag(req)
        except SipParseError:
            return None

    # ------------------------------------------------------------------ entry points
    def receive(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                conn_id: str | None = None) -> list[Send]:
        """Handle one datagram or one framed stream message; never raises for bad input."""
        timing = self.timing
        if timing is not None:
            timing.start()
        # A retransmitted request is answered from the replies to the first copy, before any parsing. Keyed by
        # the bytes alone (the source is checked on a hit: no key tuple to build and hash); responses, INVITE
        # and ACK are never cached, so their datagrams skip the lookup (and the hash of the whole datagram).
        if _cacheable(data):
            cached = self._reply_cache.get(data)
            if cached is not None and cached[0] > now and cached[1] == source:
                self.stats.retransmissions += 1
                return cached[2]
        try:
            msg = parse_message(data, stream=transport != "udp")
        except SipParseError as exc:
            return self._reject(exc, source, transport, conn_id)
        if isinstance(msg, Response):
            try:
                validate_response(msg)
            except SipParseError as exc:
                self.stats.dropped(exc.reason)
                return []
            if self.proxy is not None:
                return self.proxy.on_response(msg, source, transport, now, conn_id)
            self.stats.dropped("response without a transaction")
            return []
        try:
            validate_request(msg)
        except SipParseError as exc:
            return self._reject(exc, source, transport, conn_id)
        self.stats.request(msg.method)
        if timing is not None:
            timing.begin_request(msg.method, msg.to_tag is None)
        try:
            out = self._request(msg, source, transport, now, conn_id)
        except SipParseError as exc:
            exc.message = exc.message or msg
            return self._reject(exc, source, transport, conn_id)
        if out and msg.method != "INVITE" and msg.method != "ACK" and not self._stateful_forward(out):
            self._cache_reply(data, source, out, now)
        return out

    def _stateful_forward(self, out: list[Send]) -> bool:
        """Did a stateful proxy forward something? Then its transactions absorb retransmissions and answer them
        with the latest response (RFC 3261 17.2.2); a cached copy of the forward would bypass them."""
        return self.settings.stateful and self.proxy is not None and any(
            not s.data.startswith(b"SIP/2.0 ") for s in out)

    def _cache_reply(self, data: bytes, source: tuple[str, int], out: list[Send], now: float) -> None:
        cache = self._reply_cache
        cache[data] = (now + self.settings.reply_cache_ttl, source, out)
        if len(cache) > self.settings.reply_cache_size:
            cache.popitem(last=False)

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
            return [self.send_response(msg, resp, source, transport, conn_id)]
        except SipParseError as inner:
            self.stats.dropped(inner.reason)
            return []

    def _request(self, req: Request, source: tuple[str, int], transport: str, now: float,
                 conn_id: str | None) -> list[Send]:
        method = req.method
        stamp_via(req, source, transport)
        ruri = req.ruri
        if method == "ACK":
            if self.proxy is not None:
                return self.proxy.on_request(req, source, transport, now, conn_id)
            return []  # ACK for our own non-2xx answers is absorbed (RFC 3261 17.2.1)
        if not isinstance(ruri, SipURI):
            return [self.reply(req, 416, None, source, transport, conn_id)]
        if ruri.headers:
            raise SipParseError("Request-URI must not carry headers")
        to_self = method == "REGISTER" or self.targets_self(req)
        if method != "CANCEL":
            bad = self._unsupported(req, KIND_PROXY_REQUIRE)
            if to_self:
                bad += self._unsupported(req, KIND_REQUIRE)
            if bad:
                return [self.reply(req, 420, None, source, transport, conn_id, [("Unsupported", ", ".join(bad))])]
        if method == "REGISTER":
            return self._register(req, source, transport, now, conn_id)
        if to_self:
            if method == "OPTIONS":
                return [self.reply(req, 200, None, source, transport, conn_id, self._capabilities())]
            if method == "CANCEL":
                return [self.reply(req, 481, None, source, transport, conn_id)]
            return [self.reply(req, 405, None, source, transport, conn_id, [("Allow", ALLOW_SELF)])]
        mf = req.max_forwards
        if mf is not None and mf <= 0 and method != "CANCEL":
            return [self.reply(req, 483, None, source, transport, conn_id)]
        if self.redirect is not None:
            return self.redirect.on_request(req, source, transport, now, conn_id)
        if self.proxy is not None:
            out = self.proxy.on_request(req, source, transport, now, conn_id)
            timing = self.timing
            if timing is not None and method == "INVITE" and any(not s.data.startswith(b"SIP/2.0 ") for s in out):
                timing.forwarded()  # closes BUILD for a proxy that does not mark its own steps
            return out
        return [self.reply(req, 405, None, source, transport, conn_id, [("Allow", ALLOW_SELF)])]

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
    def authenticate(self, req: Request, source: tuple[str, int], transport: str, now: float,
                     conn_id: str | None, *, proxy: bool) -> tuple[str | None, list[Send]]:
        """Check credentials (RFC 3261 22): returns (username, []) when authenticated, (None, [reply]) with a
        401/407 challenge (or 403 for blocked sources) otherwise, and (None, []) to drop a rate-limited try."""
        user, resp = self.check_credentials(req, source, now, proxy=proxy)
        if resp is None:
            return user, []
        return None, [self.send_response(req, resp, source, transport, conn_id)]

    def check_credentials(self, req: Request, source: tuple[str, int], now: float, *,
                          proxy: bool) -> tuple[str | None, Response | None]:
        """The sans-send part of :meth:`authenticate`: (user, None) when authenticated, (None, response) for a
        challenge or a block, (None, None) when the source is being slowed down (drop the request)."""
        auth = self.authenticator
        assert auth is not None
        kind = self.limiter.check(source[0], now).kind  # an enum compared by identity (`.name` is a slow property)
        if kind is DecisionKind.BLOCK:
            self.stats.blocked += 1
            return None, make_response(req, 403, "Blocked", to_tag=self.to_tag(req))
        header = "proxy-authorization" if proxy else "authorization"
        stale = False
        for value in req.header_lines(header):
            if value[:6].lower() != "digest":  # the scheme only: no lower-cased copy of the whole value
                continue
            result = auth.verify(value, req.method, self.ha1_lookup, now, request_uri=req.uri, body=req.body)
            if result.kind is AuthKind.OK:
                self.limiter.record_success(source[0], now)
                if self.timing is not None:
                    self.timing.mark(STEP_AUTH)
                return result.username, None
            if result.kind is AuthKind.STALE:
                stale = True
            else:
                self.stats.auth_failures += 1
                decision = self.limiter.record_failure(source[0], now).kind
                if log.isEnabledFor(logging.WARNING):
                    log_event(log, "auth_failed", level=logging.WARNING, user=_claimed_user(value),
                              src=f"{source[0]}:{source[1]}", method=req.method, reason=result.reason)
                if decision is DecisionKind.BLOCK:
                    self.stats.blocked += 1
                    return None, make_response(req, 403, "Blocked", to_tag=self.to_tag(req))
                if kind is DecisionKind.DELAY:
                    # Slow a guessing source down without a timer: a wrong answer from it gets no reply at all,
                    # so the client only retries after its retransmission timer or timeout. Its failures keep
                    # counting towards the block; a right password still gets in; other sources are unaffected.
                    self.stats.delayed += 1
                    return None, None
        status, hname = (407, "Proxy-Authenticate") if proxy else (401, "WWW-Authenticate")
        challenges = [(hname, v) for v in auth.challenge(now, stale=stale)]
        return None, make_response(req, status, to_tag=self.to_tag(req), headers=challenges)

    # ------------------------------------------------------------------ registrar
    def _register(self, req: Request, source: tuple[str, int], transport: str, now: float,
                  conn_id: str | None) -> list[Send]:
        if self.authenticator is not None:
            # a To that names no AOR is a 400 before any challenge (register() checks it again without auth)
            aor = self.registrar.aor_for(req)
            user, out = self.authenticate(req, source, transport, now, conn_id, proxy=False)
            if user is None:
                return out
            uri = req.to.uri
            owner = aor_of(uri, False) if isinstance(uri, SipURI) else aor
            if user != owner:
                return [self.reply(req, 403, "Not your address-of-record", source, transport, conn_id)]
        resp = self.registrar.register(req, source, transport, now, to_tag=self.to_tag(req), conn_id=conn_id)
        timing = self.timing
        if timing is not None:
            timing.mark(STEP_LOCATION)  # registrar decision + store update + Contact lookup for the reply
        sent = self.send_response(req, resp, source, transport, conn_id)
        if resp.status < 300:
            # a durable store: the 200 OK (and the bindings it lists) goes out once they are committed
            sent.after_commit = self.location.write_ticket()
        if timing is not None:
            timing.mark(STEP_BUILD)  # serialized
        return [sent]

    def transport_error(self, data: bytes, now: float, reason: str = "") -> list[Send]:
        """The transport could not send ``data`` (one of our outputs): a stateful proxy fails that branch at once
        (RFC 3261 16.9: as if it had answered 503); otherwise there is nothing to undo."""
        handler = getattr(self.proxy, "on_transport_error", None)
        if handler is None:
            return []
        out: list[Send] = handler(data, now, reason)
        return out

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
        if self.proxy is not None:
            return self.proxy.next_deadline()
        return None

    def handle_timers(self, now: float) -> list[Send]:
        if self.proxy is not None:
            return self.proxy.handle_timers(now)
        return []

    def housekeeping(self, now: float) -> None:
        """Once a second: expire bindings, drop old cached replies, forget sources whose auth failures aged out."""
        expired = self.location.expire(now)
        if expired:
            self.stats.expired_bindings += len(expired)
        # without this, every source that ever failed once stays in the limiter until max_sources evicts it
        self.limiter.purge(now)
        cache = self._reply_cache
        while cache:
            key, (deadline, _source, _out) = next(iter(cache.items()))
            if deadline > now:
                break
            del cache[key]


def canonical_ipv6(host: str) -> str:
    """An IPv6 address in its one compressed form (``0:0:0:0:0:0:0:1`` is ``::1``), as the listeners' addresses
    are written; anything else unchanged. Remembered (bounded): the host comes from a peer."""
    known = _IPV6_FORMS.get(host)
    if known is None:
        try:
            known = str(ipaddress.IPv6Address(host))
        except ValueError:
            known = host
        cache_put(_IPV6_FORMS, host, known, 1024)
    return known


_IPV6_FORMS: Final[dict[str, str]] = {}


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


def _claimed_user(credentials: str) -> str | None:
    """The user name a failed Authorization value claims (for the log line; at most 64 characters of it)."""
    try:
        user = parse_digest(credentials).username
    except DigestError:
        return None
    return None if user is None else user[:64]
