"""What a request handler may use: the server's services, without the server.

A handler (:mod:`leansip.server.handler`) decides what happens to a request; to decide it reads the location
service, checks credentials, builds replies and counts. :class:`Services` is that surface, and only that: the
handler, the request context (:mod:`leansip.server.context`), the router and the relays hold a ``Services``,
never the :class:`~leansip.server.core.ServerCore` (which owns the parse/validate path, the reply cache, the
registrar and the timers). The modules depend on this one, and it depends on none of them: no import circle.

:class:`CoreSettings` lives here for the same reason: the router and the relays read it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from leansip.logevent import log_event
from leansip.server.calls import CallTracker
from leansip.server.flows import Flows
from leansip.server.gateways import Gateways
from leansip.server.location import LocationService
from leansip.server.registrar import RegistrarPolicy
from leansip.server.routing import WILDCARD_HOSTS
from leansip.server.stats import Stats
from leansip.server.timing import STEP_AUTH, StepTimer
from leansip.sip.digest_auth import AuthKind, DigestAuthenticator
from leansip.sip.digest_hash import DigestError
from leansip.sip.digest_parse import parse_digest
from leansip.sip.message import KIND_CALL_ID, KIND_ROUTE, Request, Response, make_response
from leansip.sip.ratelimit import DecisionKind, FailureLimiter
from leansip.sip.send import Send
from leansip.sip.uri import SipURI, TextBound, Via, cache_text

log = logging.getLogger("leansip.server")

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
    #: bytes of datagrams and replies the reply cache holds, and the most one entry may (see replycache.py)
    reply_cache_bytes: int = 8 << 20
    reply_cache_entry_bytes: int = 16 << 10
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timers.end_grid of the stateful proxy's transactions (0: exact; the server runs with 1 s, see serve.py)
    end_grid: float = 0.0
    max_transactions: int = 100000
    #: bytes the open transactions may keep (TransactionTable's max_bytes; 256 MiB by default)
    max_transaction_bytes: int = 256 << 20
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


def _no_ha1(user: str, realm: str, algorithm: str) -> str | None:
    return None


def _no_user(user: str) -> bool:
    return False


class Services:
    """The location service, users, digest checks, reply building, counters and our own addresses.

    Built once by the core; shared by every handler and relay. ``timing`` and ``local_addresses`` are set
    again by the application after construction (the core forwards its attributes of the same names here)."""

    def __init__(
        self,
        settings: CoreSettings,
        location: LocationService,
        secret: bytes,
        *,
        ha1_lookup: Ha1Lookup | None = None,
        user_exists: Callable[[str], bool] | None = None,
        authenticator: DigestAuthenticator | None = None,
        limiter: FailureLimiter | None = None,
        local_addresses: list[tuple[str, str, int]] | None = None,
        calls: CallTracker | None = None,
        gateways: Gateways | None = None,
    ) -> None:
        self.settings = settings
        self.location = location
        self.secret = secret
        self.ha1_lookup: Ha1Lookup = ha1_lookup or _no_ha1
        self.user_exists: Callable[[str], bool] = user_exists or _no_user
        #: None when the server was started without authentication (a route script's authenticate() then makes
        #: one with the server's secret and realm, see :meth:`digest`)
        self.authenticator = authenticator
        # "is None", not "or": an empty FailureLimiter has len() 0 and is falsy, and the configured one must win
        self.limiter = limiter if limiter is not None else FailureLimiter()
        #: (transport, host, port) of every socket we listen on; the first UDP one goes into our Via.
        self.local_addresses: list[tuple[str, str, int]] = local_addresses or [("udp", "127.0.0.1", 5060)]
        #: host names that mean "this server" besides the listen addresses (RFC 3261 16.4 Route checks)
        self.local_names: set[str] = {"localhost", settings.realm.lower()}
        #: the machine's addresses, which a wildcard listener (0.0.0.0, ::) answers on; the shell adds the
        #: interfaces' addresses at start-up
        self.local_ips: set[str] = {"127.0.0.1", "::1"}
        #: connections clients opened to us (RFC 5626 flows): the shell reports them through the core
        self.flows = Flows(secret)
        self.stats = Stats()
        #: the calls the stateful relay tracks (leansip.server.calls), None when calls are not tracked
        self.calls = calls
        #: the gateway sets by name and the routes to them (leansip.server.gateways), None when none
        self.gateways = gateways
        #: per-step timings of REGISTER / initial INVITE; the app injects one with its clock, None = off
        self.timing: StepTimer | None = None
        self._tag_salt = secret[:8]

    # ------------------------------------------------------------------ replies
    def to_tag(self, req: Request) -> str:
        """A stable To tag per request, so retransmissions and their replies agree (RFC 3261 8.2.6.2)."""
        # Python's (randomized, per process) string hash is enough: the tag must be stable for the lifetime of
        # a transaction and unlikely to collide, not secret; a keyed blake2s cost more than the rest of a reply.
        # decimal: compiled, str() of an int is a direct conversion, where "%x" formatting went through printf
        return str(hash((req.first_value(KIND_CALL_ID), req.from_tag, self._tag_salt)) & 0xFFFFFFFFFFFF)

    def reply(self, req: Request, status: int, reason: str | None = None, source: tuple[str, int] = ("", 0),
              transport: str = "udp", conn_id: str | None = None, headers: list[tuple[str, str]] | None = None,
              ) -> Send:
        """A stateless reply to ``req`` with our To tag, addressed as RFC 3261 18.2.2 says."""
        resp = make_response(req, status, reason, to_tag=self.to_tag(req), headers=headers or ())
        return self.send_response(req, resp, source, transport, conn_id)

    def send_response(self, req: Request, resp: Response, source: tuple[str, int], transport: str,
                      conn_id: str | None) -> Send:
        self.stats.response(resp.status)
        dest = response_destination(req.top_via, source)
        if transport != "udp":
            dest = source
        return Send(resp.to_bytes(), dest, transport, conn_id)

    # ------------------------------------------------------------------ who we are
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

    def aor(self, uri: SipURI) -> str:
        """The address-of-record a Request-URI names in the location service (user, or user@domain)."""
        user = uri.user_unescaped or ""
        return f"{user}@{uri.host.lower()}" if self.settings.policy.use_domain else user

    # ------------------------------------------------------------------ authentication
    def digest(self) -> DigestAuthenticator:
        """The digest authenticator; made on first use when the server was started without one."""
        auth = self.authenticator
        if auth is None:
            auth = DigestAuthenticator(self.secret, self.settings.realm)
            self.authenticator = auth
        return auth

    def check_credentials(self, req: Request, source: tuple[str, int], now: float, *,
                          proxy: bool) -> tuple[str | None, Response | None]:
        """Check credentials (RFC 3261 22): (user, None) when authenticated, (None, response) for a 401/407
        challenge or a 403 block, (None, None) when the source is being slowed down (drop the request)."""
        auth = self.digest()
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


def _claimed_user(credentials: str) -> str | None:
    """The user name a failed Authorization value claims (for the log line; at most 64 characters of it)."""
    try:
        user = parse_digest(credentials).username
    except DigestError:
        return None
    return None if user is None else user[:64]


def canonical_ipv6(host: str) -> str:
    """An IPv6 address in its one compressed form (``0:0:0:0:0:0:0:1`` is ``::1``), as the listeners' addresses
    are written; anything else unchanged. Remembered (bounded): the host comes from a peer."""
    known = _IPV6_FORMS.get(host)
    if known is None:
        try:
            known = str(ipaddress.IPv6Address(host))
        except ValueError:
            known = host
        cache_text(_IPV6_FORMS, _IPV6_FORMS_BOUND, host, known)
    return known


_IPV6_FORMS: Final[dict[str, str]] = {}
#: 1,024 hosts, 64 K characters
_IPV6_FORMS_BOUND: Final = TextBound(1024, 64 << 10)
