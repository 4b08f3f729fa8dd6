"""``leansip serve``: build the core from a Config, open the sockets, run until a signal.

The runtime owns the only clock reads and the only timer of the server: one ``loop.call_at`` re-armed to the
earliest deadline the core reports (transactions), plus a 1 s housekeeping tick (binding expiry, reply cache)
and the location store's flush tick (SQLite write-behind under ``--durability relaxed``). Under the default
``--durability durable`` the SQLite store's batches go through the group committer
(:mod:`leansip.io.commit`), which holds each REGISTER's 200 OK until its binding is committed.

With ``bare = true`` (``--bare``) the UDP sockets and that timer are served by a polling loop instead
(:mod:`leansip.io.bareloop`), on the same thread as everything else: the event loop gets a turn between its
slices of polling, so streams, the admin endpoint, housekeeping, the flushers and the group committer run as
they always do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gc
import logging
import math
import os
import signal
import socket
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from leansip.app.calls import CallsRuntime
from leansip.app.config import Config, ListenSpec
from leansip.app.logging import log_event, setup_logging
from leansip.app.memtrim import MemoryTrimmer
from leansip.io import affinity, diskflush
from leansip.io.bareloop import BareLoop
from leansip.io.commit import GroupCommitter, PolledCommitter
from leansip.io.netif import interface_addresses
from leansip.io.udpserver import TimerGrid, UdpServerSocket, open_udp_server
from leansip.routes import Routes, RouteScriptError, load_routes
from leansip.server.calls import CallTracker
from leansip.server.core import CoreSettings, ServerCore
from leansip.server.gateways import Gateways
from leansip.server.handler import Handler
from leansip.server.location import LocationService
from leansip.server.registrar import RegistrarPolicy, contact_key
from leansip.server.routing import WILDCARD_HOSTS
from leansip.server.stores import LocationStore, open_store
from leansip.server.stores.replica import ReplicaStore
from leansip.server.stores.sqlite import SqliteStore
from leansip.server.timing import StepTimer
from leansip.server.users import UserStore, load_users
from leansip.sip.digest_auth import DigestAuthenticator
from leansip.sip.ratelimit import FailureLimiter
from leansip.sip.send import Send

if TYPE_CHECKING:
    from leansip.io.redislink import RedisLink

log = logging.getLogger("leansip.serve")


def _secret(config: Config) -> bytes:
    """The nonce secret: persistent next to the database so nonces survive a restart and are shared by the
    worker processes of one node (and, copied, by the nodes of a cluster)."""
    env = os.environ.get("LEANSIP_SECRET")
    if env:
        return env.encode()
    path = Path(config.db).with_suffix(".secret")
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except OSError:
        pass
    data = os.urandom(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError:
        pass
    return data


class DatabaseError(ValueError):
    """``--db`` cannot be used: the message names the option, the file and what to do."""


def open_sqlite(db: Path, now: float, durability: str = "durable") -> LocationStore:
    """The SQLite location store at ``db`` (its directory made if missing). Raises :class:`DatabaseError`; a file
    that is not a SQLite database is left exactly as it was (not opened, no files made beside it)."""
    import sqlite3

    from leansip.server.stores.sqlite import NotADatabase

    what = f"--db {db}"
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"{what}: cannot create its directory {db.parent} ({exc.strerror or exc}); give a "
                            "path in a directory that exists or can be made, e.g. --db var/leansip.db") from None
    try:
        return open_store("sqlite", now=now, path=db, durability=durability)
    except NotADatabase as exc:
        raise DatabaseError(f"{what}: {exc}; it was left untouched. Give --db the path of leansip's own database "
                            "(created when missing), e.g. --db var/leansip.db") from None
    except (OSError, sqlite3.OperationalError) as exc:
        raise DatabaseError(f"{what}: cannot open it ({exc}); check that the file and its directory are "
                            "writable by this user") from None
    except sqlite3.Error as exc:
        raise DatabaseError(f"{what}: SQLite cannot use it ({exc}); if it is leansip's database it is damaged: "
                            "move it aside and leansip starts a new one (registrations are refreshed by the "
                            "phones)") from None


def build_core(config: Config, users: UserStore, now: float, handler: Handler | None = None,
               calls: CallTracker | None = None, gateways: Gateways | None = None) -> ServerCore:
    """The sans-I/O server for a configuration (used by the runtime and by in-process tests); ``handler``: a
    route script's :class:`~leansip.routes.Routes` instead of the mode's built-in handler; ``calls``: the
    tracker the stateful relay feeds (None: calls are not tracked); ``gateways``: the gateway sets."""
    if config.location == "sqlite":
        store = open_sqlite(Path(config.db), now, config.durability)
    elif config.location == "redis":
        store = open_store("redis", url=config.redis_url)
    else:
        store = open_store("memory")
    location = LocationService(store, key=contact_key)
    settings = CoreSettings(
        mode=config.mode,
        stateful=config.stateful,
        auth=config.auth,
        realm=config.realm,
        record_route=config.record_route,
        server_name=config.server_name,
        policy=RegistrarPolicy(config.default_expires, config.min_expires, config.max_expires),
        t1=config.t1,
        t2=config.t2,
        t4=config.t4,
        # transactions end on whole seconds (2*T1 when T1 is short, for tests and LANs): see Timers.end_grid
        end_grid=min(1.0, 2 * config.t1),
        max_transactions=config.max_transactions,
        max_transaction_bytes=config.max_transaction_memory << 20,
    )
    secret = _secret(config)

    authenticator = None
    if config.auth or config.routes is not None:  # a route script may authenticate() whatever --auth says
        authenticator = DigestAuthenticator(secret, config.realm, config.nonce_ttl, config.auth_algorithms)
    never = 2**31  # 0 in the config means "never slow down" / "never block"
    limiter = FailureLimiter(threshold_slow=config.fail_slow_after or never,
                             threshold_block=config.fail_block_after or never,
                             block_for=config.block_seconds)
    core = ServerCore(
        settings,
        location,
        ha1_lookup=users.ha1_lookup,  # compiled methods: no interpreted frame per authentication
        user_exists=users.exists,
        authenticator=authenticator,
        limiter=limiter,
        local_addresses=[(spec.transport, spec.host, spec.port) for spec in config.listen],
        secret=secret,
        handler=handler,
        calls=calls,
        gateways=gateways,
    )
    core.users = users
    core.timing = StepTimer(clock=time.perf_counter_ns)  # always on: see leansip.server.timing
    return core


class Runtime:
    """Sockets, timers and signal handling around one :class:`ServerCore`."""

    def __init__(self, config: Config, core: ServerCore, calls: CallsRuntime | None = None) -> None:
        self.config = config
        self.core = core
        #: call tracking, CDRs and gateway probes (off when not given: a runtime built for a test)
        self.calls = calls if calls is not None else CallsRuntime(
            dataclasses.replace(config, calls=False, gateways={}, gateway_routes=[]), time.time())
        self.udp: list[UdpServerSocket] = []
        #: transaction timers fire on a grid of T1/25, at most 20 ms (see TimerGrid)
        self.timers = TimerGrid(core, self._fire, min(0.02, config.t1 / 25))
        #: writes a durable store's batches and holds the replies waiting for them (made by start())
        self.committer: GroupCommitter | None = None
        #: keeps a Redis store's replica in step with Redis (made by start())
        self.redis: RedisLink | None = None
        #: the polling loop over the UDP sockets with ``bare = true`` (started by :meth:`start`)
        self.bare: BareLoop | None = None
        self._stop = asyncio.Event()
        #: the signal that asked us to stop (for the shutdown line)
        self.stop_reason = "stopped"

    def stop(self, reason: str = "stopped") -> None:
        """Ask :meth:`run` to shut down (the signal handlers call this)."""
        self.stop_reason = reason
        self._stop.set()

    # output ---------------------------------------------------------------
    def dispatch(self, out: list[Send]) -> None:
        udp = self.udp[0] if self.udp else None
        committer = self.committer
        for item in out:
            if item.after_commit and committer is not None and committer.hold(item):
                continue  # sent by the committer once its binding is committed
            if item.transport == "udp" and udp is not None:
                if len(self.udp) > 1:
                    udp = self._udp_for(item.dest)
                # RFC 3261 18.1.1: a forwarded request over the MTU goes over TCP when streams are configured
                if len(item.data) > 1300:
                    large = getattr(self, "stream_send_large", None)
                    if large is not None and large(item.data, item.dest):
                        continue
                udp.sendto(item.data, item.dest)
            else:
                sender = getattr(self, "stream_send", None)
                if sender is not None:
                    sender(item)
        self._arm()

    def _udp_for(self, dest: tuple[str, int]) -> UdpServerSocket:
        """The UDP socket of ``dest``'s address family (an IPv4 socket cannot send to an IPv6 address)."""
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        for ep in self.udp:
            if ep.sock.family == family:
                return ep
        return self.udp[0]

    def send_failed(self, data: bytes, dest: tuple[str, int], reason: str) -> None:
        """A stream transport could not deliver ``data``: let the core react (RFC 3261 16.9, 17.1.4)."""
        now = time.time()
        if self.calls.on_transport_error(data, now):
            return  # a gateway probe: the gateway is down
        out = self.core.transport_error(data, now, reason)
        if out:
            self.dispatch(out)

    def connection_opened(self, conn_id: str, transport: str, peer: tuple[str, int]) -> None:
        self.core.connection_opened(conn_id, transport, peer)

    def connection_closed(self, conn_id: str) -> None:
        """A connection closed: the bindings only it reached go now (RFC 5626; Kamailio's handle_lost_tcp)."""
        for b in self.core.connection_closed(conn_id):
            log_event(log, "binding_lost", aor=b.aor, contact=b.contact, conn=conn_id)

    def handle(self, data: bytes, source: tuple[str, int], transport: str, now: float,
               conn_id: str | None) -> list[Send]:
        return self.core.receive(data, source, transport, now, conn_id)

    # timers ---------------------------------------------------------------
    def _arm(self) -> None:
        self.timers.arm()

    def _fire(self) -> None:
        self.timers.fired()
        out = self.core.handle_timers(time.time())
        if out:
            self.dispatch(out)
        else:
            self._arm()

    async def _housekeeping(self) -> None:
        ticks = 0
        trimmer = MemoryTrimmer()
        trimmer.trim()  # what reading the users and the stored bindings freed
        while True:
            await asyncio.sleep(1.0)
            try:
                self.core.housekeeping(time.time())
            except Exception:  # noqa: BLE001 - keep serving; the traceback is logged
                log_event(log, "housekeeping_error", level=logging.ERROR, exc_info=True)
            ticks += 1
            age_gc(ticks)
            trimmer.tick(self.core.held_bytes())  # after a flood's state is freed: give the pages back

    async def _flusher(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.core.location.flush()
            except Exception:  # noqa: BLE001
                log_event(log, "flush_error", level=logging.ERROR, exc_info=True)

    # lifecycle --------------------------------------------------------------
    def store_state(self) -> dict[str, object]:
        """The location store's writer, for the admin page and /metrics."""
        if self.committer is not None:
            return self.committer.state()
        if self.redis is not None:
            return self.redis.state()
        store = self.core.location.store
        if isinstance(store, ReplicaStore):
            return {"durability": "relaxed", "pending": store.pending}
        return {}

    async def start(self) -> list[str]:
        """Open every listener; raises :class:`ListenError` naming the one that cannot be opened."""
        store = self.core.location.store
        if isinstance(store, ReplicaStore) and store.durable and self.committer is None:
            self.committer = self._committer(store)
        if self.config.location == "redis" and self.redis is None:
            # imported here: the redis client library is 10 MB of a server's memory that uses no Redis
            from leansip.io.redislink import RedisLink
            from leansip.server.stores.redis import RedisStore

            assert isinstance(store, RedisStore)
            self.redis = RedisLink(store)
            self.redis.start()
        addresses: list[str] = []
        for spec in self.config.listen:
            try:
                addresses.extend(await self._listen(spec))
            except OSError as exc:
                raise ListenError(spec, exc) from None
        for ep in self.udp:
            ep.siblings = [other for other in self.udp if other is not ep]
        if any(spec.host in WILDCARD_HOSTS for spec in self.config.listen):
            self.core.local_ips |= interface_addresses()  # what a wildcard listener answers on (is_local)
        self.core.set_local(self.core.local_addresses)
        if self.config.bare and self.udp:
            polled = self.committer if isinstance(self.committer, PolledCommitter) else None
            self.bare = BareLoop(self.udp, self.timers, self.config.bare_spin, commit=polled)
            if polled is not None:
                polled.wake = self.bare.wake_soon
            self.bare.start()
        return addresses

    def _committer(self, store: ReplicaStore) -> GroupCommitter:
        """A durable store's committer: with ``bare`` (and UDP to poll) the polling loop commits, with a disk
        sync that needs no Python thread (:class:`PolledCommitter`); otherwise a writer thread does."""
        polls = self.config.bare and any(spec.transport == "udp" for spec in self.config.listen)
        if polls and isinstance(store, SqliteStore) and diskflush.available():
            try:
                return PolledCommitter(store, self.dispatch)
            except (OSError, ValueError) as exc:  # not a WAL file (":memory:"): the writer thread will do
                log_event(log, "polled_commit_unavailable", level=logging.INFO, reason=str(exc))
        return GroupCommitter(store, self.dispatch)

    async def _listen(self, spec: ListenSpec) -> list[str]:
        if spec.transport != "udp":
            from leansip.io import streams  # TCP/TLS/WS (loaded only when configured)

            return await streams.start(self, spec)
        # the core's receive itself, not self.handle: one interpreted frame less per datagram
        ep = await open_udp_server(spec.host, spec.port, self.core.receive, self.dispatch,
                                   port_fallback=self.config.port_fallback)
        ep.timing = self.core.timing
        ep.timers = self.timers  # re-armed after each datagram's replies, without calling dispatch
        self.udp.append(ep)
        host, port = ep.address
        self.core.local_addresses = [a for a in self.core.local_addresses
                                     if not (a[0] == "udp" and a[1] == spec.host and a[2] == spec.port)]
        self.core.local_addresses.append(("udp", host, port))
        return [f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"]

    def loop_snapshot(self) -> dict[str, float | int | str]:
        """How the UDP sockets are served, for the admin endpoint: the polling loop's counters with ``bare``
        (busy seconds against wall seconds: the share of its core that went into request work)."""
        if self.bare is None:
            return {"mode": "event loop"}
        return dict(self.bare.snapshot())

    async def run(self) -> int:
        started = time.monotonic()
        addresses = await self.start()
        tasks = [asyncio.create_task(self._housekeeping())]
        # a write-behind store (SQLite) needs its batches flushed; memory, Redis and synchronous SQLite have
        # nothing to flush, and a 50 ms tick for nothing was most of the server's idle CPU (BENCHMARKS.md)
        interval = float(getattr(self.core.location.store, "flush_interval", 0.0) or 0.0)
        if interval > 0:
            tasks.append(asyncio.create_task(self._flusher(interval)))
        tasks.extend(self.calls.start(self.core.local_addresses, self.dispatch, self.config.server_name))
        self.core.prober = self.calls.prober
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop, sig.name)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        if self.config.routes is not None:
            try:
                loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass
        admin = None
        if self.config.admin_address is not None:
            try:
                from leansip.app import admin as admin_mod
            except ImportError:
                admin_mod = None  # type: ignore[assignment]
            if admin_mod is not None and hasattr(admin_mod, "start_admin"):
                admin = await admin_mod.start_admin(self, self.config)
        affinity.release_helpers()  # threads a library started while we opened the listeners (--cpu)
        _announce(self.config, addresses, admin, self.calls)
        await self._stop.wait()
        log_event(log, "stopping", level=logging.INFO, reason=self.stop_reason)
        for t in tasks:
            t.cancel()
        if self.bare is not None:
            # first: no REGISTER read after the committer's last batch (its reply would be held for good); a
            # polled committer's running sync is waited for by close() below
            self.bare.close()
        if self.committer is not None:
            await self.committer.close()  # the last batch, and the replies that waited for it
        if self.redis is not None:
            await self.redis.close()
        for ep in self.udp:
            ep.close()
        self.calls.close(time.time())
        self.core.location.close()
        if admin is not None and hasattr(admin, "close"):
            await admin.close()
        uptime = round(time.monotonic() - started, 1)
        print(f"leansip stopped ({self.stop_reason}) after {uptime} s", flush=True)
        log_event(log, "stopped", level=logging.INFO, reason=self.stop_reason, uptime_s=uptime)
        return 0


    # route script -------------------------------------------------------------
    def reload_routes(self) -> Routes:
        """Load the route script again and make it the handler of new requests; relayed requests already
        running finish with the old one. Raises :class:`RouteScriptError` (one line, file:line) and keeps the
        old script when the new one cannot be loaded."""
        path = self.config.routes
        if path is None:
            raise RouteScriptError("no route script to reload: the server was started without --routes")
        try:
            routes = load_routes(path)
        except RouteScriptError as exc:
            log_event(log, "routes_reload_refused", level=logging.ERROR, error=str(exc))
            raise
        self.core.handler = routes
        log_event(log, "routes_reloaded", level=logging.WARNING, routes=str(path), methods=",".join(routes.methods))
        return routes

    def _reload_on_signal(self) -> None:
        try:
            self.reload_routes()
        except RouteScriptError:
            pass  # logged; the old script stays


class ListenError(OSError):
    """A listener cannot be opened: the message names it (as given to ``--listen``) and says why in words."""

    def __init__(self, spec: ListenSpec, exc: OSError) -> None:
        super().__init__(exc.errno, f"cannot listen on {spec} (--listen): {_listen_reason(spec, exc)}")
        self.spec = spec

    def __str__(self) -> str:
        return str(self.strerror)


def _listen_reason(spec: ListenSpec, exc: OSError) -> str:
    detail = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return f"{spec.host!r} is not an address of this machine nor a name that resolves ({detail})"
    if exc.errno == errno.EADDRINUSE:
        return "another program already uses this address and port; stop it or pick another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"no interface of this machine has the address {spec.host} ({detail})"
    if exc.errno == errno.EACCES:
        return f"permission denied ({detail}); ports below 1024 need root or CAP_NET_BIND_SERVICE"
    return detail

def tune_gc() -> None:
    """The per-packet path allocates many short-lived objects and no cycles (tests/unit/test_gc.py): move
    everything built at start-up out of the collector's sight and let the young generation grow before a
    collection runs (with the default thresholds a stateful call cost 20 % more CPU at 800 calls/s,
    bench/analysis.md). :func:`age_gc` then keeps what survives each second out of sight too."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


#: seconds between the full collections that catch any cyclic garbage the frozen objects hold
FULL_COLLECT_EVERY = 600


def age_gc(ticks: int) -> None:
    """Called once a second: freeze what survived the last second, and now and then collect everything.

    A stateful proxy keeps every transaction for 32 s after its end (RFC 3261 Timers J and L): at 750 calls/s
    that is ~1.7 million tracked objects, and a collection of the older generations walked them all (one took
    834 ms, and SIPp retransmitted; bench/analysis.md). Live transactions and bindings are freed by reference
    counting when they end (the core makes no cycles: tests/unit/test_gc.py checks it), so the collector only
    needs to look at young objects; freezing once a second keeps every collection small. A full collection of
    everything every :data:`FULL_COLLECT_EVERY` seconds still frees cycles made elsewhere (asyncio, TLS)."""
    if ticks % FULL_COLLECT_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def _announce(config: Config, addresses: list[str], admin: object, calls: CallsRuntime) -> None:
    mode = config.mode + ("" if config.mode != "proxy" else (" (stateful)" if config.stateful else " (stateless)"))
    lines = [f"leansip listening on {', '.join(addresses)}",
             f"  mode: {mode}, auth: {'on' if config.auth else 'off'}, realm: {config.realm}"]
    if config.location == "sqlite":
        lines.append(f"  location: sqlite {config.db} ({config.durability})")
    else:
        lines.append(f"  location: {config.location}")
    if calls.tracking:
        records = f"records in {calls.cdr_path}" if calls.cdr_path is not None else "no records (cdr = false)"
        restored = f", {calls.restored} still up from before" if calls.restored else ""
        lines.append(f"  calls: tracked, {records}{restored}")
    elif config.mode == "proxy":
        lines.append(f"  calls: not tracked ({calls.why_not})")
    for s in calls.sets.values():
        probes = f"probed every {s.probe_interval:g} s" if s.probe_interval else "not probed"
        lines.append(f"  gateways {s.name}: {len(s.gateways)} ({s.policy}, {probes})")
    url = getattr(admin, "url", None)
    if url:
        lines.append(f"  admin: {url}")
    if config.bare:
        spin = "never sleeps" if math.isinf(config.bare_spin) else f"sleeps after {config.bare_spin:g} s idle"
        lines.append(f"  bare: UDP served by a polling loop ({spin})"
                     + (f", pinned to CPU {config.cpu}" if config.cpu is not None else ""))
    elif config.cpu is not None:
        lines.append(f"  pinned to CPU {config.cpu}")
    if config.users is not None and Path(config.users).name == "users.txt" and "data" in str(config.users):
        lines.append("  demo users: alice/alice, bob/bob, carol/carol")
    print("\n".join(lines), flush=True)
    log_event(log, "started", level=logging.INFO, listen=",".join(addresses), mode=config.mode, auth=config.auth)


def run(config: Config) -> int:
    """Entry point of ``leansip serve``: returns the process exit status."""
    setup_logging(config.log_level, log_format=config.log_format)
    try:
        users = load_users(config.users)
    except (OSError, ValueError) as exc:
        print(f"leansip: error: {exc}", file=sys.stderr)
        return 2
    if config.cpu is not None:
        try:
            affinity.pin_serving_thread(config.cpu)  # only this thread: helpers run on the other CPUs
        except OSError as exc:
            print(f"leansip: error: --cpu {config.cpu}: {exc}", file=sys.stderr)
            return 2
    routes = None
    if config.routes is not None:
        try:
            routes = load_routes(config.routes)
        except RouteScriptError as exc:
            print(f"leansip: error: {exc}", file=sys.stderr)
            return 2
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    tune_gc()

    async def main() -> int:
        if affinity.helper_cpus() is not None:  # run_in_executor's threads, off the pinned CPU too
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(thread_name_prefix="leansip-helper", initializer=affinity.helper_thread))
        try:
            core = build_core(config, users, time.time(), routes)
        except (OSError, ValueError) as exc:
            print(f"leansip: error: {exc}", file=sys.stderr)
            return 2
        try:  # after the location store: a --db refused leaves no records file beside it either
            calls = CallsRuntime(config, time.time())
        except (OSError, sqlite3.Error) as exc:
            print(f"leansip: error: call records database {config.cdr_path} (--cdr-db): {exc}", file=sys.stderr)
            return 2
        core.services.calls = calls.tracker
        core.services.gateways = calls.gateways if len(calls.gateways) else None
        runtime = Runtime(config, core, calls)
        try:
            return await runtime.run()
        except ListenError as exc:
            print(f"leansip: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # the admin endpoint (AdminError names it)
            print(f"leansip: error: cannot start: {exc}", file=sys.stderr)
            return 1

    return asyncio.run(main())
