"""Request routing shared by the stateless and stateful proxies and the redirect server (RFC 3261 16.4-16.6).

:class:`Router` answers "where does this request go": it processes Route headers (loose routing, and the
strict-router compatibility of 16.4), looks the callee up in the location service for requests addressed to
our users, and returns the targets as (Request-URI, destination address, transport, connection) or a status
to answer with (404 unknown user, 480 user without a binding, 482 loop, 483 too many hops).

It only decides; it does not build the forwarded message (``prepare_forward`` does the edits that every
forwarded copy shares: Max-Forwards, Route popping, Record-Route).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from leansip.server.flows import FLOW_FAILED, FLOW_TRANSPORTS, WS_TRANSPORTS, Flows, is_invalid_host
from leansip.sip.errors import SipParseError
from leansip.sip.message import KIND_CALL_ID, KIND_ROUTE, Request
from leansip.sip.uri import (
    SipURI,
    Via,
    is_ip_literal,
    parse_name_addr,
    parse_uri,
    parse_via,
    remember_via,
    split_comma,
    valid_host,
)

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.location import Binding
    from leansip.server.services import Services

MAGIC: Final = "z9hG4bK"
#: listening hosts that mean every address of the machine
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})
#: empty BLAKE2s states of the two branch hashes, copied per request: a copy is a memcpy, where the constructor
#: parses its dozen keyword arguments and sets the state up again (~30 % of the hash's time)
_UNIQUE_HASH: Final = hashlib.blake2s(digest_size=10)
_LOOP_HASH: Final = hashlib.blake2s(digest_size=6)


@dataclass(slots=True, unsafe_hash=True)
class Target:
    """One place to send a request: the Request-URI to put in it and the next-hop address. Immutable by
    convention (hashable by value)."""

    ruri: str | None  # None: keep the Request-URI as it is (loose routing towards a Route)
    dest: tuple[str, int]
    transport: str
    conn_id: str | None
    q: float

    # explicit __init__: mypyc compiles it (a generated dataclass __init__ stays interpreted)
    def __init__(self, ruri: str | None, dest: tuple[str, int], transport: str = "udp",
                 conn_id: str | None = None, q: float = 1.0) -> None:
        self.ruri = ruri
        self.dest = dest
        self.transport = transport
        self.conn_id = conn_id
        self.q = q


@dataclass(slots=True, unsafe_hash=True)
class Decision:
    targets: tuple[Target, ...]
    status: int  # non-zero: answer with this status instead of forwarding
    reason: str | None

    def __init__(self, targets: tuple[Target, ...] = (), status: int = 0, reason: str | None = None) -> None:
        self.targets = targets
        self.status = status
        self.reason = reason


_LOCAL_NAMES: Final = {"localhost": "127.0.0.1"}


def resolve_host(host: str) -> str | None:
    """The next-hop address for a URI host, without blocking: an IP literal as is, ``localhost`` as loopback,
    and any other name unchanged, for the I/O layer to look up off the event loop (``leansip.io.udpbase`` does;
    asyncio's connect does for TCP/TLS). A blocking lookup here would let one peer's made-up host name stall
    every other request. None only for what can never be an address (empty)."""
    host = host[1:-1] if host.startswith("[") else host
    if not host:
        return None
    if is_ip_literal(host):
        return host
    return _LOCAL_NAMES.get(host.lower(), host)


def uri_destination(uri: SipURI) -> tuple[tuple[str, int], str] | None:
    """Next hop for a SIP URI without DNS SRV: maddr or host, port or the scheme default (RFC 3263 A/AAAA
    fallback, done by the I/O layer for names)."""
    host = uri.params.get("maddr") or uri.host
    addr = resolve_host(host)
    if addr is None:
        return None
    return (addr, uri.effective_port), uri.transport


def binding_target(b: Binding, flows: Flows | None = None) -> Target | None:
    """Where to reach a registered contact: at the REGISTER's source when it came from behind a NAT
    (``received``) or over a connection, else at the Contact's own address. None for a WebSocket binding whose
    connection is gone (``flows`` knows): nothing else reaches a browser (RFC 7118 5)."""
    if flows is not None and b.transport in WS_TRANSPORTS and not (b.conn_id and flows.is_open(b.conn_id)):
        return None
    try:
        uri = parse_uri(b.contact)
    except SipParseError:
        return None
    if not isinstance(uri, SipURI):
        return None
    if b.transport != "udp" and b.conn_id:
        # the registration's connection first (RFC 5626); when it has closed, the stream layer opens a new one
        # to ``dest``: the Contact as written when it is reachable (not behind NAT), over the same transport
        dest = b.source
        if not b.received:
            hop = uri_destination(uri)
            if hop is not None:
                dest = hop[0]
        return Target(b.contact, dest, b.transport, b.conn_id, b.q)
    if b.received:
        return Target(b.contact, b.source, b.transport, None, b.q)
    hop = uri_destination(uri)
    if hop is None:
        return None
    return Target(b.contact, hop[0], hop[1], None, b.q)


class Router:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.via_host = "127.0.0.1"
        self.via_port = 5060
        self.rr_uri = "sip:127.0.0.1:5060;lr"
        #: first listener per transport: the sent-by of our Via and our Record-Route entry on that transport
        self.by_transport: dict[str, tuple[str, int]] = {}
        #: the unique part of a stateful proxy's branches (:meth:`stateful_branch`): random per process, then a count
        self._branch_prefix = os.urandom(6).hex()
        self._branch_count = 0
        #: connections clients opened to us (RFC 5626 flows), shared with the core
        self.flows: Flows = services.flows
        #: what a flow token in the Route entries :meth:`preprocess_routes` just removed decided (a target on that
        #: connection, or 430): read once by the :meth:`decide` that follows for the same request
        self._flow_decision: Decision | None = None

    def set_local(self, addresses: list[tuple[str, str, int]]) -> None:
        """Our own address for Via and Record-Route: the first UDP listener, and one per stream transport."""
        self.by_transport = {}
        for transport, host, port in addresses:
            self.by_transport.setdefault(transport, (self._advertised(host), port))
        if "udp" in self.by_transport:
            self.via_host, self.via_port = self.by_transport["udp"]
        host = f"[{self.via_host}]" if ":" in self.via_host else self.via_host
        self.rr_uri = f"sip:{host}:{self.via_port};lr"

    def _advertised(self, host: str) -> str:
        """The address to put in Via and Record-Route for a listener on ``host``: itself, or for a wildcard
        listener one of the machine's addresses of that family (a global one before loopback and link-local)."""
        if host not in WILDCARD_HOSTS:
            return host
        v6 = ":" in host
        ips = sorted(ip for ip in self.services.local_ips if (":" in ip) == v6)
        usable = [ip for ip in ips if not (ip.startswith("127.") or ip == "::1" or ip.startswith("fe80:"))]
        return (usable or ips or [host])[0]

    def rr_uri_for(self, transport: str, token: str = "") -> str:
        """Our Record-Route URI as reached over ``transport`` (the UDP one carries no transport parameter), with
        a flow token as its user part when the entry faces a client reached over its own connection."""
        transport = transport.lower()
        addr = self.by_transport.get(transport)
        if transport == "udp" or addr is None:
            uri = self.rr_uri
        else:
            host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
            uri = f"sip:{host}:{addr[1]};transport={transport};lr"
        return f"sip:{token}@{uri[4:]}" if token else uri

    # ------------------------------------------------------------------ checks
    def is_us(self, uri: SipURI) -> bool:
        return self.services.is_local(uri)

    def branch_for(self, req: Request) -> str:
        """RFC 3261 16.11: a stateless branch that is the same for retransmissions, for the CANCEL and the
        non-2xx ACK of an INVITE, and different for different requests (so it hashes the incoming branch and
        the fields of 16.6 step 8, never the method).

        The branch is ``z9hG4bK<unique>-<loop>``: ``<loop>`` is the loop-detection component of 16.6 step 8,
        a hash of what stays the same when the request comes back to us unchanged (Call-ID, tags, CSeq number,
        Request-URI, the remaining Route set, Proxy-Require/-Authorization) but *not* the top Via, which is a
        different hop's each time round. Call after :meth:`preprocess_routes`."""
        via = req.top_via
        in_branch = via.branch or ""
        if in_branch.startswith(MAGIC) and len(in_branch) > len(MAGIC):
            seed = f"{in_branch}|{via.sent_by}"
        else:  # RFC 2543 peer: no usable branch
            seed = f"{via.text}|{req.header('call-id')}|{req.cseq[0]}|{req.from_tag}|{req.to_tag}"
        seed = f"{seed}|{req.uri}"
        h = _UNIQUE_HASH.copy()
        h.update(seed.encode("latin-1"))
        unique = h.hexdigest()
        return f"{MAGIC}{unique}-{self._loop_key(req)}"

    def stateful_branch(self, req: Request) -> str:
        """The branch base of a transaction-stateful proxy: ``z9hG4bK<unique>-<loop>`` as :meth:`branch_for`,
        but the unique part is a per-process random prefix and a count, not a hash of the request.

        RFC 3261 16.6 step 8 asks only that it be unique; the stateless branch must be computed from the request
        because a stateless proxy has to give retransmissions, the CANCEL and the non-2xx ACK the same one
        (16.11), and a stateful proxy's server transaction absorbs all of those (it builds its own CANCELs from
        the branches it keeps). The loop part stays the hash :meth:`loop_detected` looks for. One hash a
        request less (~4,500 instructions with the seed it hashed). Call after :meth:`preprocess_routes`."""
        self._branch_count += 1
        # str(): compiled, an f-string with a format spec is a str.format call per field (~1,400 instructions each)
        return f"{MAGIC}{self._branch_prefix}{str(self._branch_count)}-{self._loop_key(req)}"

    @staticmethod
    def _loop_key(req: Request) -> str:
        # Only fields an INVITE shares with its CANCEL and its non-2xx ACK: a stateless proxy must give those
        # the INVITE's branch (RFC 3261 16.11), so the To tag (the ACK has one), Proxy-Authorization and
        # Proxy-Require (the CANCEL has none) stay out, unlike the full list of 16.6 step 8.
        seed = "|".join((
            req.first_value(KIND_CALL_ID) or "", req.from_tag or "", str(req.cseq[0]), req.uri,
            ",".join(req.values_of(KIND_ROUTE)),
        ))
        h = _LOOP_HASH.copy()
        h.update(seed.encode("latin-1"))
        return h.hexdigest()

    def loop_detected(self, req: Request, branch: str) -> bool:
        """RFC 3261 16.3 step 4: a Via of ours whose branch carries the loop component of ``branch`` (from
        :meth:`branch_for`) means this same request passed here before and came back: a loop. A spiral changes
        the Request-URI (or consumes a Route) and so the component, and is not reported."""
        loop = "-" + branch.rsplit("-", 1)[-1]
        for value in req.header_values("via"):
            if loop not in value:
                continue
            try:
                via = parse_via(value)
            except SipParseError:
                continue
            if self.is_our_via(via) and (via.branch or "").split(".", 1)[0].endswith(loop):
                return True
        return False

    # ------------------------------------------------------------------ decisions
    def preprocess_routes(self, req: Request, conn_id: str | None = None) -> bool:
        """RFC 3261 16.4: strict-router compatibility, then drop a top Route that names us.

        Returns True when the request was routed through us by a Route (or strict-routed Request-URI) that
        names us: an in-dialog request on a dialog we record-routed, which needs no new authentication.
        ``conn_id`` is the connection the request came on: a flow token in a removed entry that names another
        connection decides where the request goes (RFC 5626 5.3; see :meth:`_flow_hop`)."""
        self._flow_decision = None
        ruri = req.ruri
        ours = False
        if isinstance(ruri, SipURI) and self.is_us(ruri) and "lr" in ruri.params and req.first_value(KIND_ROUTE):
            ours = True
            # the previous hop was a strict router: our Record-Route URI came as the Request-URI
            routes = req.values_of(KIND_ROUTE)
            last = routes[-1]
            req.remove_header("route")
            for value in routes[:-1]:
                req.add_header("route", value)
            req.uri = parse_name_addr(last).uri_text
        top = req.first_value(KIND_ROUTE)
        if top is not None:
            first = split_comma(top)[0]
            try:
                uri = parse_name_addr(first).uri
            except SipParseError:
                return ours
            if isinstance(uri, SipURI) and self.is_us(uri):
                ours = True
                req.pop_first_value("route")
                if uri.user is not None:
                    self._flow_hop(uri.user, conn_id, req.ruri)
                # double record-routing leaves two of our entries (transport change): drop the second too
                top = req.first_value(KIND_ROUTE)
                if top is not None:
                    try:
                        uri2 = parse_name_addr(split_comma(top)[0]).uri
                    except SipParseError:
                        return ours
                    if isinstance(uri2, SipURI) and self.is_us(uri2):
                        req.pop_first_value("route")
                        if uri2.user is not None:
                            self._flow_hop(uri2.user, conn_id, req.ruri)
        return ours

    def _flow_hop(self, token: str, conn_id: str | None, ruri: object) -> None:
        """A user part in one of our Route entries is a flow token (RFC 5626 5.3): when it names the connection
        the request came on, it is the sender's own and the request goes on by the rest of the route set or the
        Request-URI; when it names another open one, the request goes out on it. When that one has closed: 430
        Flow Failed if nothing else reaches the client (a ``.invalid`` or WebSocket Request-URI: a browser),
        else on as without the token (a TCP/TLS phone with an address of its own gets a new connection)."""
        flow = self.flows.conn_of(token)
        if flow is None or flow == conn_id:
            return
        hop = self.flows.address(flow)
        if hop is not None:
            self._flow_decision = Decision((Target(None, hop[1], hop[0], flow),))
        elif isinstance(ruri, SipURI) and (is_invalid_host(ruri.host) or ruri.transport in WS_TRANSPORTS):
            self._flow_decision = Decision(status=FLOW_FAILED, reason="Flow Failed")

    def decide(self, req: Request, now: float) -> Decision:
        """Targets for a request, after :meth:`preprocess_routes`."""
        flow = self._flow_decision
        if flow is not None:
            self._flow_decision = None
            return flow
        top = req.first_value(KIND_ROUTE)
        if top is not None:
            try:
                uri = parse_name_addr(split_comma(top)[0]).uri
            except SipParseError:
                return Decision(status=400, reason="Bad Route")
            if not isinstance(uri, SipURI):
                return Decision(status=416)
            hop = uri_destination(uri)
            if hop is None:
                return Decision(status=404, reason="Route not resolvable")
            return Decision((Target(None, hop[0], hop[1]),))
        ruri = req.ruri
        assert isinstance(ruri, SipURI)
        in_dialog = req.to_tag is not None and not self.services.is_local(ruri)
        if in_dialog or ruri.user is None or not self._our_domain(ruri):
            # in-dialog, or a URI that is not one of our users: route by the Request-URI itself. An in-dialog
            # request for user@us (the ACK of our own 404/480, a UA that used the AOR as remote target) is
            # looked up like an initial one instead of being sent back to ourselves (RFC 3261 16.5).
            conn = self.flows.contact_flow(ruri)
            if conn is not None:  # a contact registered over a connection: over that connection (RFC 5626)
                flow_hop = self.flows.address(conn)
                if flow_hop is not None:
                    return Decision((Target(None, flow_hop[1], flow_hop[0], conn),))
            if is_invalid_host(ruri.host):  # a browser's contact whose connection is gone: never a DNS lookup
                return Decision(status=480)
            hop = uri_destination(ruri)
            if hop is None:
                return Decision(status=404, reason="Not Found")
            return Decision((Target(None, hop[0], hop[1]),))
        return self.lookup(req, ruri, now)

    def _our_domain(self, ruri: SipURI) -> bool:
        """Is the Request-URI one of our users (as opposed to the contact of a UA)? With use_domain off (the
        default) every user@host whose host is not a UA's contact address counts: requests to us carry our
        address or domain, requests to a UA carry an address/port the location service has no user for."""
        if self.services.is_local(ruri):
            return True
        user = ruri.user_unescaped or ""
        return bool(self.services.location.lookup(user, 0.0)) or self.services.user_exists(user)

    def lookup(self, req: Request, ruri: SipURI, now: float) -> Decision:
        user = ruri.user_unescaped or ""
        policy = self.services.settings.policy
        aor = f"{user}@{ruri.host.lower()}" if policy.use_domain else user
        bindings = self.services.location.lookup(aor, now)
        if not bindings:
            if self.services.user_exists(user):
                return Decision(status=480)
            return Decision(status=404)
        targets = contact_targets(bindings, self.flows)
        if not targets:
            return Decision(status=480)
        return Decision(tuple(targets))

    # ------------------------------------------------------------------ building
    def prepare_forward(self, req: Request, *, record_route: bool, out_transport: str | None = None,
                        in_conn: str | None = None, out_conn: str | None = None) -> None:
        """Edits every forwarded copy shares (RFC 3261 16.6 steps 3-5): Max-Forwards, Record-Route.

        With ``out_transport`` (the transport of the outgoing leg) different from the one the request came
        on (its top Via, stamped before we add ours), record-route twice, once per interface, so each side
        reaches us over its own transport (RFC 3261 16.6 step 4, RFC 5658); the upper entry faces the callee.
        ``in_conn``/``out_conn`` are the connections of a side reached over a connection it opened (the request
        came on one; the target registered over one): the entry facing that side carries its flow token, and
        when both sides have one, two entries, so each direction of the dialog finds its connection (RFC 5626
        5.3, RFC 7118 5). :meth:`preprocess_routes` removes both again."""
        mf = req.max_forwards
        req.set_header("max-forwards", str(70 if mf is None else mf - 1))
        if record_route and req.to_tag is None and req.method in ("INVITE", "SUBSCRIBE", "REFER", "NOTIFY"):
            if out_transport is None:
                req.add_header("record-route", f"<{self.rr_uri}>", first=True)
                return
            in_transport = req.top_via.transport.lower()
            flows = self.flows
            in_token = flows.token(in_conn) if in_conn and in_transport in FLOW_TRANSPORTS and flows.is_open(
                in_conn) else ""
            out_token = flows.token(out_conn) if out_conn and out_transport in FLOW_TRANSPORTS and flows.is_open(
                out_conn) else ""
            out_uri = self.rr_uri_for(out_transport, out_token)
            in_uri = self.rr_uri_for(in_transport, in_token)
            if in_token and not out_token and in_transport == out_transport.lower():
                out_uri = in_uri  # one entry: the token names the caller's flow (RFC 5626 5.3 tells the sides apart)
            elif out_token and not in_token and in_transport == out_transport.lower():
                in_uri = out_uri
            if in_uri != out_uri:
                req.add_header("record-route", f"<{in_uri}>", first=True)
            req.add_header("record-route", f"<{out_uri}>", first=True)

    def via(self, branch: str, transport: str = "udp") -> str:
        """Our Via for a request sent over ``transport``: its protocol and the sent-by of that transport's
        listener, where a response sent over a new connection would reach us (RFC 3261 18.2.2)."""
        host, port = self.by_transport.get(transport.lower(), (self.via_host, self.via_port))
        host = f"[{host}]" if ":" in host else host
        upper = transport.upper()
        text = f"SIP/2.0/{upper} {host}:{port};branch={branch}"
        remember_via(Via("SIP/2.0", upper, host, port, {"branch": branch}, text))  # parsed again in each response
        return text

    def is_our_via(self, via: Via) -> bool:
        port = via.port or 5060
        if via.host == self.via_host and port == self.via_port:
            return True
        host = via.host[1:-1] if via.host.startswith("[") else via.host
        addr = self.by_transport.get(via.transport.lower())
        if addr is not None and host == addr[0] and port == addr[1]:
            return True
        return self.services.is_local_host(host, port)


def contact_targets(bindings: list[Binding], flows: Flows | None) -> list[Target]:
    """Where to send a request for these registered contacts: one target each (one flow per instance when
    they registered with RFC 5626 reg-ids), leaving out the ones nothing can reach (see :func:`binding_target`)."""
    if len(bindings) > 1 and any(b.reg_id is not None for b in bindings):
        bindings = _one_flow_per_instance(bindings)
    return [t for t in (binding_target(b, flows) for b in bindings) if t is not None]


def _one_flow_per_instance(bindings: list[Binding]) -> list[Binding]:
    """RFC 5626 5.3: several flows of one UA instance (``+sip.instance`` with ``reg-id``) are ways to reach the
    same device, not devices to fork to: keep the best (first) of each instance."""
    seen: set[str] = set()
    out: list[Binding] = []
    for b in bindings:
        if b.instance is not None and b.reg_id is not None:
            if b.instance in seen:
                continue
            seen.add(b.instance)
        out.append(b)
    return out


#: the transports a response can go back over by its Via (RFC 3261 18.2.2; WS/WSS: RFC 7118)
_RESPONSE_TRANSPORTS: Final = frozenset({"UDP", "TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def next_hop_of_response(via: Via) -> tuple[str, int] | None:
    """Where a proxy sends a response: the next Via's maddr or received and rport, else its sent-by (RFC 3261
    18.2.2); None when that Via is not a usable SIP/2.0 Via, and the response must be dropped.

    The Via parser accepts the grammar's any ``protocol-name/version/transport`` (RFC 3261 25.1), so
    ``SIP/2.z9hG4bK-9c010/UDP 127.0.0.1:53011`` (a fuzzer's byte copy) parses; routing by it would send a
    response somewhere on the word of a Via that no SIP/2.0 element wrote. Usable: protocol SIP/2.0, a
    transport we know, a maddr/received that is a host, a port from 1 to 65535."""
    if via.protocol != "SIP/2.0" or via.transport not in _RESPONSE_TRANSPORTS:
        return None
    params = via.params
    host = params.get("maddr") or params.get("received")
    if host is None:
        host = via.host
    elif not (valid_host(host) or is_ip_literal(host)):  # received takes an IPv6 address unbracketed (25.1)
        return None
    host = host[1:-1] if host.startswith("[") else host
    rport = params.get("rport")
    # rport: digits up to 65535, checked by the Via parser; a sent-by port 0 is not 5060 but nowhere
    port = int(rport) if rport else (5060 if via.port is None else via.port)
    if port == 0:
        return None
    return host, port
