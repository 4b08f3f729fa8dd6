"""The admin endpoint of ``leansip serve``: web page, JSON API, server-sent events and Prometheus metrics.

Theory of operation
-------------------
One aiohttp application runs on the server's own event loop, next to the SIP sockets, and only *reads* the
core's state (``ServerCore.settings``, ``location``, ``stats``, ``timing``, ``users``, ``proxy``) between two
datagrams: there is one thread, so no lock and no copy is needed, and nothing here is on the SIP hot path.  The
only writes are user additions/removals, which go through ``UserStore.add/remove`` (file first, then memory).

Routes::

    GET  /                     the live page (static/index.html, app.js, style.css; no build step)
    GET  /api/status           mode, transports, counts, counters
    GET  /api/users            user names            POST /api/users {username, password}
    DELETE /api/users/{name}
    GET  /api/bindings         registered contacts (?user=NAME, ?limit=N)
    GET  /api/calls            calls in progress (caller, callee, state, legs); says why when none are tracked
    GET  /api/cdrs             call detail records (?user=, ?since=, ?until=, ?limit=, ?offset=; ?format=csv)
    GET  /api/gateways         gateway sets: each destination's state, probes, selections, failovers
    GET  /api/stats            the core's counters
    GET  /api/timings          per-step REGISTER / INVITE latency summary (leansip.server.timing)
    GET  /api/events           server-sent events: a fresh snapshot each second and right after a change
    GET  /api/openapi.json     OpenAPI 3 description of the above
    GET  /metrics              Prometheus text format

Access (the admin endpoint can add users, so it must not be an open door):

* Binding a non-loopback address without ``admin_token`` is refused at startup (:class:`AdminError`).
* With a token on a non-loopback address, every request needs it; on loopback, reads are open and writes
  (POST/DELETE) need it.  Without a token (loopback only) everything is open to local processes.
* The token is accepted as ``Authorization: Bearer T``, ``?token=T`` (which also sets a SameSite=Strict
  cookie, so the page's own scripts, images and event stream work from a link) or that cookie.
* Writes also refuse a foreign ``Origin`` and non-JSON bodies: a web page from elsewhere open in the admin's
  browser cannot make the browser post to 127.0.0.1 (cross-site request forgery).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from leansip.app.calls import CallsCollector, CallsRuntime
from leansip.app.config import Config
from leansip.logevent import log_event

log = logging.getLogger("leansip.admin")

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "leansip_admin"
#: Rows of bindings / users put into one page snapshot; the API takes ?limit= for more.
SNAPSHOT_ROWS = 200
#: Seconds between two server-sent snapshots when nothing changed.
EVENT_INTERVAL = 1.0


class AdminError(OSError):
    """The admin endpoint cannot start (non-loopback without token, address in use).

    An OSError so that ``leansip serve`` reports it like any other socket it cannot open: one
    ``leansip: error: cannot start: admin endpoint HOST:PORT (--admin): ...`` line and exit status 1.
    """


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name or address counts as reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------- snapshots
def _user_part(aor: str) -> str:
    user, at, _host = aor.rpartition("@")
    return user if at else aor


def binding_json(b: Any, now: float) -> dict[str, Any]:
    """One registered contact as the API and page show it."""
    return {
        "user": _user_part(b.aor),
        "aor": b.aor,
        "contact": b.contact,
        "source": f"{b.source[0]}:{b.source[1]}" if b.source and b.source[0] else "",
        "transport": b.transport,
        "user_agent": b.user_agent,
        "expires_in": b.expires_in(now),
        "q": b.q,
        "registered_at": b.registered_at,
    }


def _length(obj: Any) -> int | None:
    try:
        return len(obj)
    except TypeError:
        return None


def _number(value: Any) -> int | None:
    """An int attribute or the result of an int-returning method; None when absent or of another kind."""
    if callable(value):
        try:
            value = value()
        except TypeError:
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _jsonable(item: Any) -> Any:
    if isinstance(item, dict):
        return {str(k): _jsonable(v) for k, v in item.items()}
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: _jsonable(getattr(item, f.name)) for f in dataclasses.fields(item)}
    if isinstance(item, list | tuple):
        return [_jsonable(v) for v in item]
    if item is None or isinstance(item, str | int | float | bool):
        return item
    return str(item)


class AdminView:
    """Reads a running server's state into JSON-ready dicts (the API, the page and the metrics share it).

    ``runtime`` is :class:`leansip.app.serve.Runtime` (its ``core`` and ``store_state()``);
    ``clock`` gives wall-clock seconds, the time base of binding expiry.
    """

    def __init__(self, runtime: Any, config: Config | None = None, clock: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.core = runtime.core
        #: call tracking, CDRs and gateways (leansip.app.calls.CallsRuntime)
        self.calls_rt: CallsRuntime = runtime.calls
        self.config = config
        self.clock = clock
        self.started_at = clock()

    # counts ------------------------------------------------------------------------------------
    @property
    def users(self) -> Any:
        return getattr(self.core, "users", None)

    def user_count(self) -> int:
        users = self.users
        return 0 if users is None else len(users)

    def binding_count(self) -> int:
        return int(self.core.location.count())

    def transaction_count(self) -> int:
        """Open transactions of a stateful proxy; 0 when the proxy keeps none (stateless) or exposes none."""
        proxy = self.core.proxy
        n = _number(getattr(proxy, "live_transactions", None))
        if n is not None:
            return n
        for name in ("transactions", "table"):
            n = _length(getattr(proxy, name, None))
            if n is not None:
                return n
        return 0

    def call_count(self) -> int:
        """Calls being set up or talked (0 when calls are not tracked: see ``calls_doc``)."""
        return self.calls_rt.call_count()

    def calls(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Calls in progress, oldest first."""
        return list(self.calls_rt.calls_doc(self.clock(), limit)["calls"])

    def connection_count(self) -> int:
        for owner in (self.runtime, getattr(self.runtime, "streams", None)):
            n = _length(getattr(owner, "connections", None))
            if n is not None:
                return n
        return 0

    # documents ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        settings = self.core.settings
        proxy = self.core.proxy
        stateful = bool(settings.stateful and proxy is not None)
        transports = [{"transport": t, "host": h, "port": p} for t, h, p in self.core.local_addresses]
        location = self.config.location if self.config is not None else type(self.core.location.store).__name__
        return {
            "server": settings.server_name,
            "mode": settings.mode,
            "stateful": stateful if settings.mode == "proxy" else None,
            "auth": settings.auth,
            "realm": settings.realm,
            "record_route": settings.record_route,
            "location": location,
            "store": self.store(),
            "transports": transports,
            "users": self.user_count(),
            "bindings": self.binding_count(),
            "transactions": self.transaction_count(),
            "calls": self.call_count(),
            "calls_tracked": self.calls_rt.tracking,
            "calls_note": self.calls_rt.why_not,
            "connections": self.connection_count(),
            "uptime": round(self.clock() - self.started_at, 1),
            "stats": self.stats(),
        }

    def stats(self) -> dict[str, Any]:
        return dict(self.core.stats.as_dict())

    def store(self) -> dict[str, Any]:
        """The location store's writer: durable commits (held replies) or the Redis link (connected, queue)."""
        return dict(self.runtime.store_state())

    def bindings(self, user: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Unexpired bindings, by AOR; stops reading the store once ``limit`` rows are found."""
        now = self.clock()
        location = self.core.location
        out: list[dict[str, Any]] = []
        for aor in location.aors():
            if user is not None and _user_part(aor) != user:
                continue
            for b in location.lookup(aor, now):
                out.append(binding_json(b, now))
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def user_list(self, limit: int | None = None) -> list[dict[str, Any]]:
        users = self.users
        if users is None:
            return []
        names = users.usernames()
        if limit is not None:
            names = names[:limit]
        out = []
        for name in names:
            record = users.get(name)
            kind = "password" if record is not None and record.password is not None else "ha1"
            out.append({"username": name, "kind": kind})
        return out

    def timings(self) -> dict[str, Any]:
        timing = getattr(self.core, "timing", None)
        loop = self.runtime.loop_snapshot()
        if timing is None:
            return {"enabled": False, "loop": loop}
        return {"enabled": True, "unit": "microseconds", "flows": timing.snapshot(), "loop": loop}

    def snapshot(self) -> dict[str, Any]:
        """Everything the page shows, in one document (one server-sent event)."""
        return {
            "time": self.clock(),
            "status": self.status(),
            "users": self.user_list(SNAPSHOT_ROWS),
            "bindings": self.bindings(limit=SNAPSHOT_ROWS),
            "calls": self.calls(SNAPSHOT_ROWS),
            "gateways": self.calls_rt.gateways_doc()["sets"],
            "cdr": self.calls_rt.cdr_path is not None,
            "timings": self.timings(),
        }


# --------------------------------------------------------------------------------------- metrics
#: the location store writer's state (Runtime.store_state) -> (kind, metric name, help); absent keys are skipped
STORE_METRICS: dict[str, tuple[str, str, str]] = {
    "pending": ("gauge", "leansip_location_queue", "binding changes not yet written to the store's backend"),
    "queue_limit": ("gauge", "leansip_location_queue_limit", "bound of the queue of changes for Redis"),
    "dropped": ("counter", "leansip_location_queue_dropped",
                "changes dropped from a full queue (durable: held replies dropped past their bound)"),
    "batches": ("counter", "leansip_location_batches", "batches written to the store's backend"),
    "changes": ("counter", "leansip_location_batch_changes", "binding changes written in those batches"),
    "failures": ("counter", "leansip_location_batch_failures", "batches the backend refused (retried)"),
    "held": ("gauge", "leansip_location_held_replies", "REGISTER replies waiting for their commit"),
    "absorbed": ("counter", "leansip_location_absorbed_retransmissions",
                 "retransmissions of a REGISTER whose reply waits for its commit"),
    "connected": ("gauge", "leansip_redis_connected", "1 when the node is in step with Redis"),
    "outages": ("counter", "leansip_redis_outages", "times Redis became unreachable"),
    "syncs": ("counter", "leansip_redis_syncs", "full resyncs with Redis (each connection and reconnection)"),
    "pushed": ("counter", "leansip_redis_pushed", "bindings pushed to Redis by resyncs (refills)"),
    "remote_changes": ("counter", "leansip_redis_remote_changes", "binding changes applied from other nodes"),
}

class CoreCollector:
    """Prometheus collector that reads the core's counters at each scrape (nothing is updated per packet)."""

    def __init__(self, view: AdminView) -> None:
        self.view = view

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        view = self.view
        stats = view.core.stats
        requests = CounterMetricFamily("leansip_requests", "SIP requests received, by method", labels=["method"])
        for method, n in sorted(stats.requests.items()):
            requests.add_metric([method], n)
        yield requests
        responses = CounterMetricFamily("leansip_responses", "SIP responses sent or forwarded, by class",
                                        labels=["class"])
        for cls, n in sorted(stats.responses.items()):
            responses.add_metric([cls], n)
        yield responses
        yield CounterMetricFamily("leansip_auth_failures", "digest authentications that failed",
                                  value=stats.auth_failures)
        yield CounterMetricFamily("leansip_blocked", "requests refused because their source is blocked",
                                  value=stats.blocked)
        yield CounterMetricFamily("leansip_retransmissions", "retransmissions answered from the reply cache",
                                  value=stats.retransmissions)
        yield CounterMetricFamily("leansip_forwarded_requests", "requests forwarded by the proxy",
                                  value=stats.forwarded_requests)
        yield CounterMetricFamily("leansip_forwarded_responses", "responses forwarded by the proxy",
                                  value=stats.forwarded_responses)
        yield CounterMetricFamily("leansip_script_errors", "exceptions raised by the route script's handlers",
                                  value=stats.script_errors)
        drops = CounterMetricFamily("leansip_dropped", "messages dropped without a reply, by reason",
                                    labels=["reason"])
        for reason, n in sorted(stats.drops.items()):
            drops.add_metric([reason], n)
        yield drops
        for name, help_text, value in (
            ("leansip_users", "users that may register", view.user_count()),
            ("leansip_bindings", "stored registrations (contacts)", view.binding_count()),
            ("leansip_transactions", "open proxy transactions", view.transaction_count()),
            ("leansip_connections", "open TCP/TLS/WebSocket connections", view.connection_count()),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        store = view.store()
        for key, (kind, metric, about) in STORE_METRICS.items():
            number = store.get(key)
            if isinstance(number, bool | int | float):
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(metric, about, value=float(number))
        loop = view.runtime.loop_snapshot()
        if loop.get("mode") == "bare":  # rate(busy) / rate(wall): the share of the polling core doing requests
            yield CounterMetricFamily("leansip_bare_busy_seconds", "seconds the polling loop of --bare spent "
                                      "serving datagrams and timers", value=float(loop["busy_seconds"]))
            yield CounterMetricFamily("leansip_bare_wall_seconds", "seconds the polling loop of --bare has run",
                                      value=float(loop["wall_seconds"]))
        timing = getattr(view.core, "timing", None)
        if timing is not None:
            from leansip.server.timing import FLOWS, STEPS

            hist = HistogramMetricFamily("leansip_step_seconds",
                                         "time of each step of REGISTER and initial INVITE handling",
                                         labels=["flow", "step"])
            for f, flow in enumerate(FLOWS):
                for s, step in enumerate(STEPS):
                    buckets, total, count = timing.histogram(f, s)
                    rows = [(repr(bound), n) for bound, n in buckets] + [("+Inf", count)]
                    hist.add_metric([flow, step], rows, total)
            yield hist


# --------------------------------------------------------------------------------------- HTTP
def _openapi() -> dict[str, Any]:
    """OpenAPI 3 document for /api/* (built here so it cannot drift from the routes: a test compares)."""
    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    err = {"description": "error", "content": {"application/json": {"schema": ref("Error")}}}
    unauthorized = {"description": "token missing or wrong", "content": {"application/json": {"schema": ref("Error")}}}
    counters = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "leansip admin API", "version": "1",
                 "description": "Status, users, registrations, counters and timings of a running leansip server. "
                                "Reads are open on loopback unless a token is configured for a non-loopback "
                                "address; writes need the token when one is configured."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "query": {"type": "apiKey", "in": "query", "name": "token"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Stats": {"type": "object", "properties": {
                    "requests": counters, "responses": counters, "drops": counters,
                    "retransmissions": {"type": "integer"}, "auth_failures": {"type": "integer"},
                    "blocked": {"type": "integer"}, "delayed": {"type": "integer"},
                    "expired_bindings": {"type": "integer"}, "lost_bindings": {"type": "integer"},
                    "forwarded_requests": {"type": "integer"},
                    "forwarded_responses": {"type": "integer"}, "script_errors": {"type": "integer"}}},
                "Status": {"type": "object", "properties": {
                    "server": {"type": "string"},
                    "mode": {"type": "string", "enum": ["proxy", "redirect", "registrar"]},
                    "stateful": {"type": "boolean", "nullable": True},
                    "auth": {"type": "boolean"}, "realm": {"type": "string"},
                    "record_route": {"type": "boolean"}, "location": {"type": "string"},
                    "store": {"type": "object", "description": "the location store's writer: durable SQLite "
                              "(pending, batches, held, absorbed, failing) or the Redis link (redis, connected, "
                              "pending, queue_limit, dropped, outages, syncs, remote_changes, last_error)",
                              "additionalProperties": True},
                    "transports": {"type": "array", "items": {"type": "object", "properties": {
                        "transport": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"}}}},
                    "users": {"type": "integer"}, "bindings": {"type": "integer"},
                    "transactions": {"type": "integer"}, "calls": {"type": "integer"},
                    "calls_tracked": {"type": "boolean"}, "calls_note": {"type": "string"},
                    "connections": {"type": "integer"}, "uptime": {"type": "number"},
                    "stats": ref("Stats")}},
                "User": {"type": "object", "properties": {
                    "username": {"type": "string"}, "kind": {"type": "string", "enum": ["password", "ha1"]}}},
                "NewUser": {"type": "object", "required": ["username", "password"], "properties": {
                    "username": {"type": "string"}, "password": {"type": "string"}}},
                "Binding": {"type": "object", "properties": {
                    "user": {"type": "string"}, "aor": {"type": "string"}, "contact": {"type": "string"},
                    "source": {"type": "string", "description": "IP:port the REGISTER came from"},
                    "transport": {"type": "string"}, "user_agent": {"type": "string"},
                    "expires_in": {"type": "integer", "description": "seconds"}, "q": {"type": "number"},
                    "registered_at": {"type": "number", "description": "Unix time"}}},
                "Call": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "caller": {"type": "string"}, "callee": {"type": "string"},
                    "state": {"type": "string", "enum": ["trying", "ringing", "answered"]},
                    "start": {"type": "number", "description": "Unix time"},
                    "answer": {"type": "number", "nullable": True}, "duration": {"type": "number"},
                    "age": {"type": "number"}, "call_id": {"type": "string"}, "caller_addr": {"type": "string"},
                    "caller_transport": {"type": "string"}, "callee_addr": {"type": "string"},
                    "callee_transport": {"type": "string"},
                    "session_expires": {"type": "integer", "nullable": True},
                    "extra": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "Cdr": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "start": {"type": "number"},
                    "answer": {"type": "number", "nullable": True}, "end": {"type": "number", "nullable": True},
                    "duration": {"type": "number"}, "caller": {"type": "string"}, "callee": {"type": "string"},
                    "status": {"type": "integer"}, "reason": {"type": "string"},
                    "end_reason": {"type": "string", "description": "bye, cancel, rejected, timeout, "
                                   "session-expired, shutdown, or 'in progress'"},
                    "hangup": {"type": "string", "enum": ["caller", "callee", "proxy", ""]},
                    "call_id": {"type": "string"}, "caller_addr": {"type": "string"},
                    "caller_transport": {"type": "string"}, "callee_addr": {"type": "string"},
                    "callee_transport": {"type": "string"}, "ring": {"type": "number", "nullable": True},
                    "setup": {"type": "number", "nullable": True},
                    "extra": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "StepSummary": {"type": "object", "properties": {
                    "count": {"type": "integer"}, "mean_us": {"type": "number"}, "p50_us": {"type": "number"},
                    "p90_us": {"type": "number"}, "p99_us": {"type": "number"}, "max_us": {"type": "number"}}},
                "Timings": {"type": "object", "properties": {
                    "enabled": {"type": "boolean"}, "unit": {"type": "string"},
                    "flows": {"type": "object", "description": "flow (register, invite) -> step (parse, auth, "
                              "location, build, send, total) -> summary",
                              "additionalProperties": {"type": "object",
                                                       "additionalProperties": ref("StepSummary")}},
                    "loop": {"type": "object", "description": "how UDP is served: mode `event loop`, or `bare` "
                             "(serve --bare) with the polling loop's wall_seconds, busy_seconds (serving datagrams "
                             "and timers), busy_fraction, datagrams, passes, turns given to the event loop, sleeps",
                             "properties": {"mode": {"type": "string"}}}}},
            },
        },
        "security": [{}, {"bearer": []}, {"query": []}],
        "paths": {
            "/api/reload": {"post": {"summary": "load the route script again (as SIGHUP); refused with the reason "
                                             "when the new one cannot be loaded (the running one stays)",
                                  "responses": {"200": ok({"type": "object"}), "401": unauthorized, "409": err,
                                                "422": err}}},
            "/api/status": {"get": {"summary": "server mode, transports, counts and counters",
                                    "responses": {"200": ok(ref("Status")), "401": unauthorized}}},
            "/api/users": {
                "get": {"summary": "users that may register",
                        "responses": {"200": ok({"type": "array", "items": ref("User")}), "401": unauthorized}},
                "post": {"summary": "add a user (written to the users file)",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": ref("NewUser")}}},
                         "responses": {"201": ok(ref("User"), "created"), "400": err, "401": unauthorized,
                                       "403": err, "409": err, "503": err}}},
            "/api/users/{name}": {"delete": {
                "summary": "remove a user (from the users file too)",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": ok({"type": "object", "properties": {"removed": {"type": "string"}}}),
                              "401": unauthorized, "403": err, "404": err, "503": err}}},
            "/api/bindings": {"get": {
                "summary": "registered contacts",
                "parameters": [
                    {"name": "user", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": {"200": ok({"type": "array", "items": ref("Binding")}), "400": err,
                              "401": unauthorized}}},
            "/api/calls": {"get": {"summary": "calls in progress through the stateful proxy; `tracking` false "
                                              "and a `reason` when this server does not track calls",
                                   "responses": {"200": ok({"type": "object", "properties": {
                                       "tracking": {"type": "boolean"}, "reason": {"type": "string"},
                                       "transactions": {"type": "integer"},
                                       "calls_in_progress": {"type": "integer"},
                                       "ringing": {"type": "integer"}, "answered": {"type": "integer"},
                                       "limit": {"type": "integer"},
                                       "calls": {"type": "array", "items": ref("Call")}}}),
                                       "401": unauthorized}}},
            "/api/cdrs": {"get": {
                "summary": "call detail records, newest first; ?format=csv downloads them as CSV",
                "parameters": [
                    {"name": "user", "in": "query", "schema": {"type": "string"},
                     "description": "caller or callee: alice, or alice@host"},
                    {"name": "since", "in": "query", "schema": {"type": "string"},
                     "description": "start at or after: epoch seconds, ISO date/time, or an age (30m, 12h, 7d)"},
                    {"name": "until", "in": "query", "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}}],
                "responses": {"200": ok({"type": "object", "properties": {
                    "recording": {"type": "boolean"}, "total": {"type": "integer"},
                    "offset": {"type": "integer"}, "limit": {"type": "integer"},
                    "next_offset": {"type": "integer", "nullable": True},
                    "cdrs": {"type": "array", "items": ref("Cdr")}}}), "400": err, "401": unauthorized}}},
            "/api/gateways": {"get": {"summary": "gateway sets, their destinations' health and counters, and the "
                                                 "routes that lead to them",
                                      "responses": {"200": ok({"type": "object", "properties": {
                                          "sets": {"type": "array", "items": {"type": "object"}},
                                          "routes": {"type": "array", "items": {"type": "object"}}}}),
                                          "401": unauthorized}}},
            "/api/stats": {"get": {"summary": "counters", "responses": {"200": ok(ref("Stats")), "401": unauthorized}}},
            "/api/timings": {"get": {"summary": "per-step REGISTER / INVITE latencies",
                                     "responses": {"200": ok(ref("Timings")), "401": unauthorized}}},
            "/api/events": {"get": {"summary": "server-sent events: `snapshot` events with status, users, "
                                               "bindings, calls and timings, each second and after a change",
                                    "responses": {"200": {"description": "event stream",
                                                          "content": {"text/event-stream": {}}},
                                                  "401": unauthorized}}},
            "/api/openapi.json": {"get": {"summary": "this document",
                                          "responses": {"200": ok({"type": "object"})}}},
        },
    }


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class AdminServer:
    """The running admin endpoint: call :meth:`start`, read :attr:`url`, then :meth:`close` on shutdown."""

    def __init__(self, runtime: Any, config: Config | None = None, *, token: str | None = None,
                 host: str = "127.0.0.1", clock: Callable[[], float] = time.time) -> None:
        self.view = AdminView(runtime, config, clock)
        self.token = token
        self.host = host
        self.loopback = is_loopback(host)
        if not self.loopback and not token:
            raise AdminError(f"refusing to serve the admin endpoint on non-loopback address {host} without a "
                             "token: set admin_token (--admin-token) or use admin = \"127.0.0.1:PORT\"")
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._change = asyncio.Event()
        self._closing = False
        self._snapshot: tuple[float, str] | None = None
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CoreCollector(self.view))  # type: ignore[arg-type]
        self.registry.register(CallsCollector(self.view.calls_rt))  # type: ignore[arg-type]
        self.app = self._build_app()

    # access -----------------------------------------------------------------------------------
    def _presented_token(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        query = request.query.get("token")
        if query is not None:
            return query
        return request.cookies.get(COOKIE)

    def _token_ok(self, request: web.Request) -> bool:
        given = self._presented_token(request)
        return self.token is not None and given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def _access(self, request: web.Request, handler: Any) -> web.StreamResponse:
        write = request.method not in ("GET", "HEAD", "OPTIONS")
        if self.token is not None and (write or not self.loopback):
            if not self._token_ok(request):
                return _error(401, "admin token required (Authorization: Bearer TOKEN or ?token=TOKEN)",
                              **{"WWW-Authenticate": 'Bearer realm="leansip-admin"'})
        if write:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in (f"http://{request.host}", f"https://{request.host}"):
                return _error(403, f"cross-origin write refused (Origin {origin})")
        response = await handler(request)
        if self.token is not None and request.query.get("token") is not None and self._token_ok(request):
            # a link with ?token= opens the page; the cookie lets its scripts and event stream in
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._access], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/{name}", self._static),
            web.get("/api/status", self._status),
            web.get("/api/users", self._users),
            web.post("/api/users", self._add_user),
            web.delete("/api/users/{name}", self._remove_user),
            web.get("/api/bindings", self._bindings),
            web.get("/api/calls", self._calls),
            web.get("/api/cdrs", self._cdrs),
            web.get("/api/gateways", self._gateways),
            web.get("/api/stats", self._stats),
            web.get("/api/timings", self._timings),
            web.get("/api/events", self._events),
            web.post("/api/reload", self._reload),
            web.get("/api/openapi.json", self._openapi),
            web.get("/metrics", self._metrics),
        ])
        return app

    # handlers ---------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.status())

    async def _users(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.user_list())

    async def _add_user(self, request: web.Request) -> web.Response:
        users = self.view.users
        if users is None:
            return _error(503, "this server has no user store")
        if request.content_type != "application/json":
            return _error(400, "send JSON: {\"username\": ..., \"password\": ...}")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return _error(400, "username and password must be strings")
        from leansip.server.users import UserRecord

        try:
            record = UserRecord(username, password=password)
            record.to_line()  # the text file cannot hold ':' or newlines: fail before touching anything
        except ValueError as exc:
            return _error(400, str(exc))
        if users.get(username) is not None:
            return _error(409, f"user {username!r} already exists")
        try:
            users.add(record)
        except ValueError as exc:
            return _error(409, str(exc))
        except OSError as exc:
            return _error(500, f"could not write the users file: {exc.strerror or exc}")
        log_event(log, "admin_user_added", level=logging.WARNING, user=username)
        self.changed()
        return web.json_response({"username": username, "kind": "password"}, status=201)

    async def _remove_user(self, request: web.Request) -> web.Response:
        users = self.view.users
        if users is None:
            return _error(503, "this server has no user store")
        name = request.match_info["name"]
        try:
            removed = users.remove(name)
        except (OSError, ValueError) as exc:
            return _error(500, f"could not update the users file: {exc}")
        if not removed:
            return _error(404, f"no user {name!r}")
        log_event(log, "admin_user_removed", level=logging.WARNING, user=name)
        self.changed()
        return web.json_response({"removed": name})

    async def _bindings(self, request: web.Request) -> web.Response:
        limit_text = request.query.get("limit")
        limit = None
        if limit_text is not None:
            if not limit_text.isdigit() or int(limit_text) < 1:
                return _error(400, "limit must be a positive integer")
            limit = int(limit_text)
        return web.json_response(self.view.bindings(request.query.get("user"), limit))

    async def _calls(self, request: web.Request) -> web.Response:
        view = self.view
        doc = view.calls_rt.calls_doc(view.clock())
        return web.json_response({"transactions": view.transaction_count(), **doc})

    async def _cdrs(self, request: web.Request) -> web.StreamResponse:
        """Call detail records, newest first; the SQLite read runs in a thread, never on the event loop."""
        from leansip.app import cdr

        path = self.view.calls_rt.cdr_path
        q = request.query
        csv_format = q.get("format", "json") == "csv"
        try:
            now = self.view.clock()
            since = cdr.parse_since(q["since"], now) if q.get("since") else None
            until = cdr.parse_since(q["until"], now) if q.get("until") else None
            most = cdr.MAX_CSV if csv_format else cdr.MAX_LIMIT
            limit = int(q.get("limit", most if csv_format else 100))
            offset = int(q.get("offset", 0))
            if not 1 <= limit <= most or offset < 0:
                raise ValueError(f"limit must be 1-{most} and offset >= 0")
        except ValueError as exc:
            return _error(400, str(exc))
        if q.get("format", "json") not in ("json", "csv"):
            return _error(400, "format must be json or csv")
        if path is None:
            if csv_format:
                return web.Response(text=cdr.to_csv([]), content_type="text/csv")
            return web.json_response({"recording": False, "reason": self.view.calls_rt.why_not or
                                      "call detail records are off (cdr = false)", "total": 0, "cdrs": []})
        flt = cdr.CdrFilter(q.get("user") or None, since, until, limit, offset)
        records, total = await asyncio.to_thread(cdr.query, path, flt)
        if csv_format:
            name = f"leansip-cdrs-{time.strftime('%Y%m%d-%H%M%S')}.csv"
            return web.Response(text=cdr.to_csv(records), content_type="text/csv",
                                headers={"Content-Disposition": f'attachment; filename="{name}"'})
        nxt = offset + len(records) if offset + len(records) < total else None
        return web.json_response({"recording": True, "total": total, "offset": offset, "limit": limit,
                                  "next_offset": nxt, "cdrs": records})

    async def _gateways(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.calls_rt.gateways_doc())

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.stats())

    async def _timings(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.timings())

    async def _reload(self, request: web.Request) -> web.Response:
        """Load the route script again (SIGHUP does the same): 200 with its methods, or 422 with the reason it
        was refused (the running script stays), 409 when the server runs without a script."""
        from leansip.routes import RouteScriptError

        config = self.view.config
        if config is None or config.routes is None:
            return _error(409, "no route script to reload: the server was started without --routes")
        try:
            routes = self.view.runtime.reload_routes()
        except RouteScriptError as exc:
            return _error(422, f"route script refused, the running one stays: {exc}")
        self.changed()
        return web.json_response({"reloaded": str(config.routes), "methods": routes.methods})

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(_openapi())

    async def _metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _snapshot_text(self) -> str:
        """The current snapshot as JSON, shared by every open event stream for a fraction of a second."""
        now = time.monotonic()
        cached = self._snapshot
        if cached is not None and now - cached[0] < 0.25:
            return cached[1]
        text = json.dumps(self.view.snapshot(), separators=(",", ":"))
        self._snapshot = (now, text)
        return text

    def changed(self) -> None:
        """Something the page shows changed: wake every event stream now instead of at its next tick."""
        self._snapshot = None
        event, self._change = self._change, asyncio.Event()
        event.set()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        try:
            while not self._closing:
                change = self._change
                await response.write(f"event: snapshot\ndata: {self._snapshot_text()}\n\n".encode())
                try:
                    await asyncio.wait_for(change.wait(), EVENT_INTERVAL)
                except TimeoutError:
                    pass
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away, or we are shutting down
        return response

    # lifecycle --------------------------------------------------------------------------------
    async def start(self, port: int, *, port_fallback: bool = False) -> str:
        """Listen on (host, port); returns the URL.  Raises AdminError when the address cannot be used."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            try:
                site = web.TCPSite(runner, self.host, port, shutdown_timeout=1.0)
                await site.start()
            except OSError as exc:
                if not port_fallback:
                    # aiohttp's own text repeats the address; the errno's words say it once
                    why = os.strerror(exc.errno) if exc.errno else str(exc)
                    raise AdminError(f"admin endpoint {self.host}:{port} (--admin): {why}") from None
                site = web.TCPSite(runner, self.host, 0, shutdown_timeout=1.0)
                await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown}:{self.port}/"
        return self.url

    async def close(self) -> None:
        """Stop serving: event streams end, open requests get a second to finish."""
        self._closing = True
        self.changed()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def start_admin(runtime: Any, config: Config) -> AdminServer:
    """Start the admin endpoint of ``leansip serve`` on ``config.admin`` (see the module docstring)."""
    address = config.admin_address
    if address is None:
        raise AdminError("the admin endpoint is off (admin = false)")
    host, port = address
    try:
        socket.getaddrinfo(host, port)
    except OSError as exc:
        raise AdminError(f"admin endpoint {host}:{port} (--admin): {exc}") from None
    server = AdminServer(runtime, config, token=config.admin_token, host=host)
    await server.start(port, port_fallback=config.port_fallback)
    return server


__all__ = ["AdminError", "AdminServer", "AdminView", "CoreCollector", "binding_json", "is_loopback",
           "start_admin"]
