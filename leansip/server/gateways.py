"""Gateway sets: named groups of SIP destinations a call is spread over, with health probes and failover.

Theory of operation
-------------------
A *gateway set* (Kamailio's dispatcher set) is a list of destinations (address, transport, weight, priority) and
a selection policy. For each request sent to the set, :meth:`GatewaySet.candidates` gives the destinations to
try, in order: the first by the policy, the rest the failover order. The stateful proxy relays to the first; a
408, a 503 (``failover_on``), a transport error, or no response at all within ``timeout`` seconds makes it try
the next, within the same server transaction, until one answers otherwise or the list is exhausted.

Policies (``policy``):

``round-robin``     each request starts one further along the list of live destinations
``hash-call-id``    the Call-ID picks the first (a dialog's requests, and retransmissions, go to the same place)
``hash-caller``     the caller (From user@host) picks it: one caller's calls stick to one gateway
``weight``          smooth weighted round-robin (nginx's): over any window, each gets its share by weight
``priority``        the lowest ``priority`` value first, the next one only when it fails (then weight, then order)

Hashes index the whole list (live or not) and step to the next live one, so one gateway going down moves only
its own share of callers.

Health: every destination is probed with OPTIONS every ``probe_interval`` seconds (0: never) by
:class:`GatewayProber`, a sans-I/O component the shell drives with ``now`` like the core (``next_deadline`` /
``handle_timers`` return datagrams to send; ``on_response`` / ``on_transport_error`` take what came back). Any
answer below 500 other than 408 means alive, as does a 6xx; a 408, a 5xx, a transport error or silence for
``probe_timeout`` seconds is a failure. The up/down state changes with hysteresis (:data:`HEALTH`): ``down_after``
failures in a row take a destination out of selection, ``up_after`` successes in a row bring it back, so one
lost probe does not flap it. A destination starts up (it has not failed yet). When every destination of a set is
down, :meth:`GatewaySet.candidates` is empty and the proxy answers 503 at once instead of waiting for timeouts.

:class:`GatewayRoutes` is the configuration-only way in: ``[[gateway_routes]]`` entries send every request for a
domain, or whose Request-URI user starts with a number prefix, to a set (the longest matching prefix wins; a
rule naming the domain beats one that does not), optionally stripping digits and adding a prefix first.

Parsing the TOML tables is here too (:func:`parse_gateways`), sans-I/O: it takes the decoded dicts and raises
:class:`GatewayConfigError` naming the key; ``leansip.app.config`` adds the file and line.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any, Final

from leansip.sip.errors import SipParseError
from leansip.sip.message import KIND_CALL_ID, KIND_FROM, Request, Response
from leansip.sip.send import Send
from leansip.sip.uri import SipURI, is_ip_literal, parse_name_addr, parse_uri

__all__ = [
    "DOWN",
    "Gateway",
    "GatewayConfigError",
    "GatewayProber",
    "GatewayRoute",
    "GatewayRoutes",
    "GatewaySet",
    "Gateways",
    "HEALTH",
    "POLICIES",
    "UP",
    "caller_of",
    "parse_gateways",
]

POLICIES: Final = ("round-robin", "hash-call-id", "hash-caller", "weight", "priority")
TRANSPORTS: Final = ("udp", "tcp", "tls")
_DEFAULT_PORTS: Final = {"udp": 5060, "tcp": 5060, "tls": 5061}

UP: Final = "up"
DOWN: Final = "down"
PROBE_OK: Final = "ok"
PROBE_FAILED: Final = "failed"
#: The health state machine: (state, probe result) -> (counter to advance, next state once it reaches its
#: threshold). UP counts failures towards ``down_after``, DOWN successes towards ``up_after``; the opposite
#: result resets the count. Nothing else moves the state.
HEALTH: Final = {
    (UP, PROBE_OK): ("reset", UP),
    (UP, PROBE_FAILED): ("count", DOWN),
    (DOWN, PROBE_FAILED): ("reset", DOWN),
    (DOWN, PROBE_OK): ("count", UP),
}

#: RFC 3261 17.1.2.2: a probe over UDP is sent again after T1, doubling up to T2, until ``probe_timeout``
_T1: Final = 0.5
_T2: Final = 4.0
#: the Call-ID of our probes starts with this (and the process's random token): how their answers are told apart
PROBE_PREFIX: Final = "gwprobe-"


class GatewayConfigError(ValueError):
    """A gateway set or route is wrong; ``key`` is its dotted place in the config (``gateways.pstn.policy``)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.reason = message
        self.key = key


class Gateway:
    """One destination of a set, and its health."""

    def __init__(self, set_name: str, host: str, port: int, transport: str = "udp", weight: int = 1,
                 priority: int = 0) -> None:
        self.set_name = set_name
        self.host = host
        self.port = port
        self.transport = transport
        self.weight = weight
        self.priority = priority
        shown = f"[{host}]" if ":" in host else host
        #: ``host:port`` (how the page and the metrics name it) and the URI probes and rewritten requests use
        self.address = f"{shown}:{port}"
        self.uri = f"sip:{shown}:{port}" + ("" if transport == "udp" else f";transport={transport}")
        self.state = UP
        self.streak = 0  # consecutive results counting towards the next state (failures when up, successes when down)
        self.changed_at = 0.0
        self.last_probe = 0.0
        self.last_result = ""  # "" before the first probe, else "200", "timeout", "transport error", ...
        self.selected = 0  # requests that went to it first or after a failover
        self.failed = 0  # of those, how many failed over to the next (408/503/transport error/no answer)
        self.current_weight = 0  # smooth weighted round-robin state

    @property
    def up(self) -> bool:
        return self.state == UP

    @property
    def dest(self) -> tuple[str, int]:
        return (self.host, self.port)

    def probe_result(self, ok: bool, now: float, result: str, down_after: int, up_after: int) -> bool:
        """Apply one probe result (:data:`HEALTH`); True when the state changed."""
        self.last_probe = now
        self.last_result = result
        action, target = HEALTH[(self.state, PROBE_OK if ok else PROBE_FAILED)]
        if action == "reset":
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (down_after if target == DOWN else up_after):
            return False
        self.state = target
        self.streak = 0
        self.changed_at = now
        return True

    def as_dict(self) -> dict[str, object]:
        return {"address": self.address, "transport": self.transport, "weight": self.weight,
                "priority": self.priority, "state": self.state, "since": self.changed_at or None,
                "last_probe": self.last_probe or None, "last_result": self.last_result, "selected": self.selected,
                "failed_over": self.failed}

    def __repr__(self) -> str:
        return f"<Gateway {self.set_name} {self.transport}:{self.address} {self.state}>"


class GatewaySet:
    """A named list of :class:`Gateway` and how to choose among them (see the module docstring)."""

    def __init__(self, name: str, gateways: list[Gateway], *, policy: str = "round-robin",
                 probe_interval: float = 10.0, probe_timeout: float = 2.0, down_after: int = 2, up_after: int = 2,
                 timeout: float = 2.0, failover_on: tuple[int, ...] = (408, 503), rewrite_host: bool = False) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        if not gateways:
            raise ValueError("a gateway set needs at least one destination")
        self.name = name
        self.gateways = gateways
        self.policy = policy
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.down_after = down_after
        self.up_after = up_after
        #: seconds without any response from a destination before the next one is tried
        self.timeout = timeout
        self.failover_on = failover_on
        #: put the gateway's host:port into the Request-URI (else only the next hop is the gateway)
        self.rewrite_host = rewrite_host
        self._next = 0  # round-robin position
        #: requests the set could not place (every destination down)
        self.unavailable = 0

    def live(self) -> list[Gateway]:
        return [g for g in self.gateways if g.state == UP]

    def candidates(self, call_id: str = "", caller: str = "") -> list[Gateway]:
        """The destinations to try for one request, in order (empty when all are down)."""
        live = self.live()
        if not live:
            self.unavailable += 1
            return []
        policy = self.policy
        if policy == "round-robin":
            start = self._next % len(live)
            self._next = start + 1
            return live[start:] + live[:start]
        if policy == "hash-call-id" or policy == "hash-caller":
            key = call_id if policy == "hash-call-id" else caller
            everyone = self.gateways
            start = zlib.crc32(key.encode("utf-8", "surrogateescape")) % len(everyone)
            rotated = everyone[start:] + everyone[:start]
            return [g for g in rotated if g.state == UP]
        if policy == "weight":
            first = self._smooth_weighted(live)
            rest = sorted((g for g in live if g is not first), key=_by_weight)
            return [first, *rest]
        return sorted(live, key=_by_priority)  # priority: stable, so equal keys keep the configured order

    def _smooth_weighted(self, live: list[Gateway]) -> Gateway:
        """nginx's smooth weighted round-robin: add each weight to its current value, pick the largest, take the
        total off it. Deterministic, and spreads a heavy destination's turns evenly instead of in runs."""
        total = 0
        best: Gateway | None = None
        for g in live:
            g.current_weight += g.weight
            total += g.weight
            if best is None or g.current_weight > best.current_weight:
                best = g
        assert best is not None
        best.current_weight -= total
        return best

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "policy": self.policy, "probe_interval": self.probe_interval,
                "timeout": self.timeout, "failover_on": list(self.failover_on),
                "up": sum(1 for g in self.gateways if g.state == UP), "unavailable": self.unavailable,
                "gateways": [g.as_dict() for g in self.gateways]}


def _by_weight(g: Gateway) -> int:
    return -g.weight


def _by_priority(g: Gateway) -> tuple[int, int]:
    return (g.priority, -g.weight)


class GatewayRoute:
    """``[[gateway_routes]]``: requests for ``domain`` and/or whose user starts with ``prefix`` go to ``set``."""

    def __init__(self, set_name: str, prefix: str = "", domain: str = "", strip: int = 0, add: str = "") -> None:
        self.set_name = set_name
        self.prefix = prefix
        self.domain = domain.lower()
        self.strip = strip
        self.add = add

    def matches(self, user: str, host: str) -> bool:
        if self.domain and host.lower() != self.domain:
            return False
        return user.startswith(self.prefix)

    def rewrite(self, user: str) -> str:
        return self.add + user[self.strip:]


class GatewayRoutes:
    """The configured routes, checked before the location service (see the module docstring)."""

    def __init__(self, routes: list[GatewayRoute]) -> None:
        # longest prefix first, then a named domain before none; the stable sort keeps file order among equals
        self.routes = sorted(routes, key=_route_order)

    def __len__(self) -> int:
        return len(self.routes)

    def match(self, ruri: SipURI) -> GatewayRoute | None:
        user = ruri.user_unescaped or ""
        host = ruri.host
        for route in self.routes:
            if route.matches(user, host):
                return route
        return None


def _route_order(r: GatewayRoute) -> tuple[int, int]:
    return (-len(r.prefix), 0 if r.domain else 1)


class Gateways:
    """The configured sets by name and the routes to them: what the proxy asks when it relays a request."""

    def __init__(self, sets: dict[str, GatewaySet], routes: GatewayRoutes) -> None:
        self.sets = sets
        self.routes = routes

    def __len__(self) -> int:
        return len(self.sets)

    def get(self, name: str) -> GatewaySet | None:
        return self.sets.get(name)

    def route(self, req: Request) -> tuple[GatewaySet, str] | None:
        """The set the configuration sends an initial request to (by its Request-URI's domain or user prefix)
        and the Request-URI to send (the user rewritten by the route's strip/add), or None."""
        ruri = req.ruri
        if not isinstance(ruri, SipURI) or not self.routes.routes:
            return None
        route = self.routes.match(ruri)
        if route is None:
            return None
        gset = self.sets[route.set_name]
        if not route.strip and not route.add:
            return gset, req.uri
        user = route.rewrite(ruri.user_unescaped or "")
        return gset, SipURI(ruri.scheme, user, ruri.password, ruri.host, ruri.port, ruri.params,
                            ruri.headers).build()

    @staticmethod
    def request_uri(gset: GatewaySet, g: Gateway, ruri: str) -> str:
        """The Request-URI for gateway ``g``: ``ruri`` itself, or with the gateway's host and port when the set
        says ``rewrite_host``."""
        if not gset.rewrite_host:
            return ruri
        try:
            uri = parse_uri(ruri)
        except SipParseError:
            return ruri
        if not isinstance(uri, SipURI):
            return ruri
        params = dict(uri.params)
        if g.transport != "udp":
            params["transport"] = g.transport
        else:
            params.pop("transport", None)
        host = f"[{g.host}]" if ":" in g.host else g.host
        return SipURI(uri.scheme, uri.user, uri.password, host, g.port, params, uri.headers).build()


# --------------------------------------------------------------------------------------- probes
class _Probe:
    """An OPTIONS in flight."""

    def __init__(self, gateway: GatewaySet, target: Gateway, data: bytes, sent_at: float, deadline: float) -> None:
        self.gset = gateway
        self.target = target
        self.data = data
        self.sent_at = sent_at
        self.deadline = deadline
        self.interval = _T1
        self.resend_at = sent_at + _T1 if target.transport == "udp" else deadline


#: (branch, transport) -> our Via value for a request sent over that transport (``Router.via``)
ViaBuilder = Callable[[str, str], str]


class GatewayProber:
    """OPTIONS health probes for every destination of every set with ``probe_interval`` > 0 (sans-I/O).

    Drive it like the core: after each call, re-arm a timer at :meth:`next_deadline` and call
    :meth:`handle_timers` then; give it every response whose Call-ID it may own (:meth:`on_response` says
    whether it was one of ours) and every send failure (:meth:`on_transport_error`). ``on_change`` is called with
    the gateway whenever its state flips (the shell logs it).
    """

    def __init__(self, sets: list[GatewaySet], via: ViaBuilder, *, host: str = "127.0.0.1",
                 server_name: str = "leansip", now: float = 0.0, token: str | None = None) -> None:
        self.sets = [s for s in sets if s.probe_interval > 0]
        self.via = via
        self.host = host
        self.server_name = server_name
        self.token = token if token is not None else os.urandom(4).hex()
        self.on_change: Callable[[Gateway], None] | None = None
        self._seq = 0
        self._in_flight: dict[str, _Probe] = {}
        #: when each gateway is probed next (the first round right away)
        self._due: dict[Gateway, float] = {}
        for s in self.sets:
            for g in s.gateways:
                self._due[g] = now
        self.sent = 0

    def next_deadline(self) -> float | None:
        times = [p.resend_at for p in self._in_flight.values()]
        times.extend(self._due.values())
        return min(times) if times else None

    def handle_timers(self, now: float) -> list[Send]:
        out: list[Send] = []
        for call_id, probe in list(self._in_flight.items()):
            if probe.deadline <= now:
                del self._in_flight[call_id]
                self._result(probe, False, now, "timeout")
            elif probe.resend_at <= now:
                probe.interval = min(probe.interval * 2, _T2)
                probe.resend_at = min(now + probe.interval, probe.deadline)
                out.append(Send(probe.data, probe.target.dest, probe.target.transport))
        for s in self.sets:
            for g in s.gateways:
                if self._due[g] <= now:
                    self._due[g] = now + s.probe_interval
                    if not any(p.target is g for p in self._in_flight.values()):
                        out.append(self._send(s, g, now))
        return out

    def _send(self, s: GatewaySet, g: Gateway, now: float) -> Send:
        self._seq += 1
        seq = str(self._seq)
        call_id = f"{PROBE_PREFIX}{self.token}-{seq}@{self.host}"
        lines = (
            f"OPTIONS {g.uri} SIP/2.0",
            "Via: " + self.via(f"z9hG4bK{PROBE_PREFIX}{self.token}{seq}", g.transport),
            "Max-Forwards: 70",
            f"From: <sip:{self.server_name}@{self.host}>;tag={self.token}",
            f"To: <{g.uri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {seq} OPTIONS",
            f"User-Agent: {self.server_name}",
            "Accept: application/sdp",
            "Content-Length: 0",
        )
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        self._in_flight[call_id] = _Probe(s, g, data, now, now + min(s.probe_timeout, s.probe_interval))
        self.sent += 1
        return Send(data, g.dest, g.transport)

    def owns(self, call_id: str) -> bool:
        return call_id.startswith(PROBE_PREFIX)

    def on_response(self, resp: Response, now: float) -> bool:
        """True when ``resp`` answers one of our probes (the caller then drops it); a provisional one only
        stops the retransmissions."""
        call_id = resp.first_value(KIND_CALL_ID) or ""
        if not call_id.startswith(PROBE_PREFIX):
            return False
        probe = self._in_flight.get(call_id)
        if probe is None:
            return True  # a late or repeated answer to a probe already settled
        status = resp.status
        if status < 200:
            probe.resend_at = probe.deadline
            return True
        del self._in_flight[call_id]
        alive = (status < 500 and status != 408) or status >= 600
        self._result(probe, alive, now, str(status))
        return True

    def on_transport_error(self, data: bytes, now: float) -> bool:
        """A probe could not be sent (no TCP/TLS connection): a failure at once. False when ``data`` is not ours."""
        for call_id, probe in self._in_flight.items():
            if probe.data == data:
                del self._in_flight[call_id]
                self._result(probe, False, now, "transport error")
                return True
        return False

    def _result(self, probe: _Probe, ok: bool, now: float, result: str) -> None:
        s = probe.gset
        if probe.target.probe_result(ok, now, result, s.down_after, s.up_after) and self.on_change is not None:
            self.on_change(probe.target)


# --------------------------------------------------------------------------------------- configuration
def _split_address(text: str, transport: str, key: str) -> tuple[str, int]:
    text = text.strip()
    if text.lower().startswith(("sip:", "sips:")):
        raise GatewayConfigError("give host:port here and the transport apart (transport = \"tcp\")", key)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise GatewayConfigError(f"bad address {text!r}: expected host[:port] or [IPv6]:port", key)
        port_text = rest[1:]
    elif text.count(":") > 1:
        raise GatewayConfigError(f"bad address {text!r}: put IPv6 addresses in brackets", key)
    else:
        host, _, port_text = text.partition(":")
    if not host or not all(c.isalnum() or c in ".-_:" for c in host):
        raise GatewayConfigError(f"bad address {text!r}: missing or invalid host", key)
    if ":" in host and not is_ip_literal(host):
        raise GatewayConfigError(f"bad address {text!r}: {host!r} is not an IPv6 address", key)
    if not port_text:
        return host, _DEFAULT_PORTS[transport]
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise GatewayConfigError(f"bad address {text!r}: port must be 1-65535", key)
    return host, int(port_text)


def _get(table: dict[str, Any], name: str, kind: type, default: Any, key: str) -> Any:
    if name not in table:
        return default
    value = table[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
        raise GatewayConfigError(f"must be {names.get(kind, kind.__name__)}, got {value!r}", f"{key}.{name}")
    return value


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], key: str) -> None:
    for name in table:
        if name not in allowed:
            raise GatewayConfigError(f"unknown setting (known: {', '.join(allowed)})", f"{key}.{name}")


_SET_KEYS: Final = ("policy", "probe_interval", "probe_timeout", "down_after", "up_after", "timeout", "failover_on",
                    "rewrite_host", "destinations")
_DEST_KEYS: Final = ("address", "transport", "weight", "priority")
_ROUTE_KEYS: Final = ("set", "prefix", "domain", "strip", "add")


def _parse_set(name: str, table: Any) -> GatewaySet:
    key = f"gateways.{name}"
    if not isinstance(table, dict):
        raise GatewayConfigError("must be a table ([gateways.NAME])", key)
    _check_keys(table, _SET_KEYS, key)
    policy = _get(table, "policy", str, "round-robin", key)
    if policy not in POLICIES:
        raise GatewayConfigError(f"must be one of {', '.join(POLICIES)}, got {policy!r}", f"{key}.policy")
    interval = _get(table, "probe_interval", float, 10.0, key)
    probe_timeout = _get(table, "probe_timeout", float, 2.0, key)
    timeout = _get(table, "timeout", float, 2.0, key)
    down_after = _get(table, "down_after", int, 2, key)
    up_after = _get(table, "up_after", int, 2, key)
    for field, value in (("probe_interval", interval), ("probe_timeout", probe_timeout), ("timeout", timeout)):
        if value < 0 or (field != "probe_interval" and value == 0):
            raise GatewayConfigError(f"must be {'>= 0' if field == 'probe_interval' else '> 0'} seconds, got "
                                     f"{value}", f"{key}.{field}")
    for field, count in (("down_after", down_after), ("up_after", up_after)):
        if count < 1:
            raise GatewayConfigError(f"must be >= 1, got {count}", f"{key}.{field}")
    failover = _get(table, "failover_on", list, [408, 503], key)
    if not all(isinstance(s, int) and not isinstance(s, bool) and 300 <= s <= 699 for s in failover):
        raise GatewayConfigError(f"must be a list of final statuses (300-699), got {failover!r}",
                                 f"{key}.failover_on")
    rewrite = _get(table, "rewrite_host", bool, False, key)
    dests = table.get("destinations")
    if not isinstance(dests, list) or not dests:
        raise GatewayConfigError("needs at least one destination ([[gateways.NAME.destinations]] with address)",
                                 f"{key}.destinations")
    gateways = []
    for i, d in enumerate(dests):
        dkey = f"{key}.destinations[{i}]"
        if isinstance(d, str):
            d = {"address": d}
        if not isinstance(d, dict):
            raise GatewayConfigError("must be a table with address (or an address string)", dkey)
        _check_keys(d, _DEST_KEYS, dkey)
        transport = _get(d, "transport", str, "udp", dkey).lower()
        if transport not in TRANSPORTS:
            raise GatewayConfigError(f"must be one of {', '.join(TRANSPORTS)}, got {transport!r}",
                                     f"{dkey}.transport")
        address = _get(d, "address", str, "", dkey)
        if not address:
            raise GatewayConfigError("missing address (host[:port])", f"{dkey}.address")
        host, port = _split_address(address, transport, f"{dkey}.address")
        weight = _get(d, "weight", int, 1, dkey)
        if weight < 1:
            raise GatewayConfigError(f"must be >= 1, got {weight}", f"{dkey}.weight")
        priority = _get(d, "priority", int, 0, dkey)
        gateways.append(Gateway(name, host, port, transport, weight, priority))
    return GatewaySet(name, gateways, policy=policy, probe_interval=interval, probe_timeout=probe_timeout,
                      down_after=down_after, up_after=up_after, timeout=timeout,
                      failover_on=tuple(int(s) for s in failover), rewrite_host=rewrite)


def parse_gateways(sets: Any, routes: Any) -> Gateways:
    """The ``[gateways.NAME]`` tables and ``[[gateway_routes]]`` entries of a TOML config (decoded), checked.
    Raises GatewayConfigError naming the first wrong key."""
    if sets is None:
        sets = {}
    if not isinstance(sets, dict):
        raise GatewayConfigError("must be a table of sets ([gateways.NAME])", "gateways")
    parsed: dict[str, GatewaySet] = {}
    for name, table in sets.items():
        if not name or not all(c.isalnum() or c in "-_." for c in name):
            raise GatewayConfigError("a set's name is letters, digits, '-', '_' or '.'", f"gateways.{name}")
        parsed[name] = _parse_set(name, table)
    if routes is None:
        routes = []
    if not isinstance(routes, list):
        raise GatewayConfigError("must be a list of tables ([[gateway_routes]])", "gateway_routes")
    out = []
    for i, r in enumerate(routes):
        key = f"gateway_routes[{i}]"
        if not isinstance(r, dict):
            raise GatewayConfigError("must be a table", key)
        _check_keys(r, _ROUTE_KEYS, key)
        set_name = _get(r, "set", str, "", key)
        if set_name not in parsed:
            known = ", ".join(parsed) or "none defined"
            raise GatewayConfigError(f"no gateway set {set_name!r} (sets: {known})", f"{key}.set")
        prefix = _get(r, "prefix", str, "", key)
        domain = _get(r, "domain", str, "", key)
        if not prefix and not domain:
            raise GatewayConfigError("needs a prefix, a domain or both", key)
        strip = _get(r, "strip", int, 0, key)
        if strip < 0:
            raise GatewayConfigError(f"must be >= 0, got {strip}", f"{key}.strip")
        out.append(GatewayRoute(set_name, prefix, domain, strip, _get(r, "add", str, "", key)))
    return Gateways(parsed, GatewayRoutes(out))


def caller_of(req: Request) -> str:
    """``user@host`` of the From URI, the key of the ``hash-caller`` policy ("" when it does not parse)."""
    try:
        uri = parse_name_addr(req.first_value(KIND_FROM) or "").uri
    except SipParseError:
        return ""
    if isinstance(uri, SipURI):
        return f"{uri.user or ''}@{uri.host.lower()}"
    return ""
