"""Connection transports for the server: TCP, TLS (RFC 3261 18) and WebSocket (RFC 7118).

Theory of operation. Every open connection, accepted or opened by us, is one :class:`Connection` in one
:class:`StreamTable`, under a ``conn_id`` such as ``"tcp:192.0.2.7:50122#17"`` and under its
``(transport, peer ip, peer port)`` address. The core sees a connection only as that ``conn_id`` (passed to
``ServerCore.receive`` and stored with a registration), and answers with :class:`Send` items the runtime hands
to :meth:`StreamTable.send` (``runtime.stream_send``):

* a ``conn_id`` that is still open wins: responses go back on the connection the request came on
  (RFC 3261 18.2.2), requests to a registered UA reuse the connection it registered over (RFC 5626);
* otherwise an open connection to the destination address is reused (a stateless proxy forwards responses by
  the next Via's ``received``/``rport``, which on a stream is the peer address of the connection);
* otherwise TCP and TLS open a new connection (RFC 3261 18.1.1); a WebSocket client cannot be reached
  without its own connection (RFC 7118 5), so that message is dropped and counted.

Receiving is the UDP path with a framer in front: ``data_received`` feeds :class:`StreamFramer`, hands each
complete message to the core and writes what comes back before returning. WebSocket frames are messages
already (one SIP message per frame, RFC 7118 5.2).

Protection, all enforced by one sweep per second rather than a timer per connection: connections idle for
``tcp_idle_timeout`` are closed; a message must be complete within :data:`MESSAGE_TIMEOUT` of its first byte
(a sender trickling one byte per second cannot hold a slot, "slowloris"); ``max_connections`` in total and
``max_connections_per_ip`` per source address cap what peers can open; a peer that does not read its
responses is cut off once :data:`MAX_WRITE_BUFFER` bytes are queued for it.

Requests the proxy forwards over UDP that are larger than :data:`MTU` go over TCP instead when the target
accepts a TCP connection, with the top Via rewritten to say so, and over UDP as before when it refuses
(RFC 3261 18.1.1).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leansip.logevent import log_event
from leansip.sip.framing import FramingError, StreamFramer
from leansip.sip.send import Send

if TYPE_CHECKING:  # pragma: no cover
    from leansip.app.config import ListenSpec
    from leansip.app.serve import Runtime

log = logging.getLogger("leansip.io.streams")

Handler = Callable[[bytes, tuple[str, int], str, float, "str | None"], list[Send]]
Dispatch = Callable[[list[Send]], None]

#: RFC 3261 18.1.1: a request larger than this (1500 bytes minus 200) goes over a congestion-controlled
#: transport when the target supports one.
MTU = 1300
#: Seconds from the first byte of a message to its last (header read timeout against slow senders).
MESSAGE_TIMEOUT = 10.0
#: Seconds for the TCP connect, TLS handshake and WebSocket opening handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Bytes queued towards a peer that does not read before we give up on it.
MAX_WRITE_BUFFER = 1024 * 1024
#: Messages waiting for an outgoing connection to open.
MAX_PENDING = 64
SWEEP_INTERVAL = 1.0
WS_SUBPROTOCOL = "sip"


class Connection:
    """What the table knows about one connection, whatever carries it."""

    transport: str
    conn_id: str
    peer: tuple[str, int]
    outgoing: bool
    last_activity: float
    partial_since: float | None
    closing: bool

    def send(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, reason: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class StreamProtocol(asyncio.Protocol, Connection):
    """One TCP or TLS connection (asyncio gives TLS to us already decrypted)."""

    def __init__(self, table: StreamTable, transport: str, *, outgoing: bool = False) -> None:
        self.table = table
        self.transport = transport
        self.outgoing = outgoing
        self.conn_id = ""
        self.peer = ("", 0)
        self.framer = StreamFramer()
        self.io: asyncio.Transport | None = None
        self.last_activity = table.clock()
        self.partial_since = None
        self.closing = False

    # asyncio callbacks ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.io = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        if not self.table.admit(self):
            self.closing = True
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        table = self.table
        now = table.clock()
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            table.count("framing_error")
            log_event(log, "framing_error", conn=self.conn_id, reason=exc.reason)
            self.close("framing error")
            return
        pings = self.framer.take_pings()
        if pings and self.io is not None:
            self.io.write(b"\r\n" * pings)  # RFC 5626 3.5.1: each CRLFCRLF ping gets a CRLF pong
            self.last_activity = now
        if messages:
            self.last_activity = now
            self.partial_since = now if self.framer.buffered else None
            for message in messages:
                if self.closing:
                    break
                table.deliver(message, self.peer, self.transport, now, self.conn_id)
        elif self.framer.buffered:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.table.remove(self)

    # Connection -------------------------------------------------------------
    def send(self, data: bytes) -> None:
        io = self.io
        if io is None or self.closing:
            return
        io.write(data)
        if io.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.table.count("write_overflow")
            log_event(log, "write_overflow", conn=self.conn_id)
            self.closing = True
            io.abort()

    def close(self, reason: str) -> None:
        if self.io is not None and not self.io.is_closing():
            log_event(log, "close", level=logging.DEBUG, conn=self.conn_id, reason=reason)
            self.io.close()
        self.closing = True


class WsConnection(Connection):
    """One WebSocket connection (RFC 7118): each SIP message is one text or binary frame."""

    def __init__(self, table: StreamTable, transport: str, ws: Any) -> None:
        self.table = table
        self.transport = transport
        self.ws = ws
        self.outgoing = False
        self.conn_id = ""
        addr = ws.remote_address
        self.peer = (str(addr[0]), int(addr[1])) if addr else ("", 0)
        self.last_activity = table.clock()
        self.partial_since = None
        self.closing = False
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1000)

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.table.count("write_overflow")
            self.close("write overflow")

    async def writer(self) -> None:
        """Write queued messages in order; a text frame when the message is UTF-8 (RFC 7118 5.2)."""
        while True:
            data = await self.queue.get()
            try:
                frame: str | bytes = data.decode("utf-8")
            except UnicodeDecodeError:
                frame = data
            await self.ws.send(frame)

    def close(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        log_event(log, "close", level=logging.DEBUG, conn=self.conn_id, reason=reason)
        self.table.spawn(self.ws.close(1000, reason[:60]))


class StreamTable:
    """All stream connections of one server: lookup, caps, timeouts, outgoing connections."""

    def __init__(self, handler: Handler, dispatch: Dispatch, *, idle_timeout: float = 300.0,
                 max_connections: int = 10000, max_per_ip: int = 100,
                 message_timeout: float = MESSAGE_TIMEOUT, client_ssl: ssl.SSLContext | None = None,
                 udp_send: Callable[[bytes, tuple[str, int]], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.handler = handler
        self.dispatch = dispatch
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.message_timeout = message_timeout
        self.client_ssl = client_ssl
        self.udp_send = udp_send
        self.clock = clock
        #: told about messages that could not be sent (no connection could be opened), so a stateful proxy
        #: answers at once instead of waiting for its timers (RFC 3261 16.9)
        self.on_send_error: Callable[[bytes, tuple[str, int], str], None] | None = None
        #: told of every connection admitted and of every one gone (conn_id, transport, peer) / (conn_id), so the
        #: core routes requests over open flows and drops the bindings of closed ones (RFC 5626, RFC 7118)
        self.on_open: Callable[[str, str, tuple[str, int]], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self.conns: dict[str, Connection] = {}
        self.by_addr: dict[tuple[str, str, int], str] = {}
        self.per_ip: Counter[str] = Counter()
        #: outgoing connections being opened: (transport, host, port) -> messages to send once open
        self.pending: dict[tuple[str, str, int], list[tuple[bytes, bytes | None]]] = {}
        #: our listening addresses per transport, e.g. {"tcp": ("127.0.0.1", 5060)}
        self.local: dict[str, tuple[str, int]] = {}
        self.servers: list[Any] = []
        self.counters: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # bookkeeping --------------------------------------------------------------
    def count(self, event: str) -> None:
        self.counters[event] += 1

    def spawn(self, coro: Any) -> None:
        """Run a coroutine in the background, keeping a reference so it is not garbage collected."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def admit(self, conn: Connection) -> bool:
        """Register a new connection, or refuse it when a cap is reached (the caller closes it)."""
        ip = conn.peer[0]
        if len(self.conns) >= self.max_connections:
            self.count("refused_total_cap")
            log_event(log, "connection_refused", level=logging.WARNING, reason="max_connections", src=ip)
            return False
        if not conn.outgoing and self.per_ip[ip] >= self.max_per_ip:
            self.count("refused_ip_cap")
            log_event(log, "connection_refused", reason="max_connections_per_ip", src=ip)
            return False
        host = f"[{ip}]" if ":" in ip else ip
        conn.conn_id = f"{conn.transport}:{host}:{conn.peer[1]}#{next(self._ids)}"
        self.conns[conn.conn_id] = conn
        self.by_addr[(conn.transport, ip, conn.peer[1])] = conn.conn_id
        if not conn.outgoing:
            self.per_ip[ip] += 1
        self.count("opened")
        if self.on_open is not None:
            self.on_open(conn.conn_id, conn.transport, conn.peer)
        self._flush_pending(conn)
        return True

    def remove(self, conn: Connection) -> None:
        if not conn.conn_id or self.conns.get(conn.conn_id) is not conn:
            return
        del self.conns[conn.conn_id]
        key = (conn.transport, conn.peer[0], conn.peer[1])
        if self.by_addr.get(key) == conn.conn_id:
            del self.by_addr[key]
        if not conn.outgoing:
            self.per_ip[conn.peer[0]] -= 1
            if self.per_ip[conn.peer[0]] <= 0:
                del self.per_ip[conn.peer[0]]
        self.count("closed")
        if self.on_close is not None:
            try:
                self.on_close(conn.conn_id)
            except Exception:  # noqa: BLE001 - e.g. the Redis store unreachable: the bindings then expire
                log.exception("event=close_hook_error conn=%s", conn.conn_id)

    def deliver(self, data: bytes, peer: tuple[str, int], transport: str, now: float, conn_id: str) -> None:
        """One complete message from a connection: into the core, its output out (the UDP path's shape)."""
        try:
            out = self.handler(data, peer, transport, now, conn_id)
        except Exception:  # noqa: BLE001 - a bug must not stop the server; it is logged with its traceback
            log_event(log, "handler_error", level=logging.ERROR, exc_info=True, conn=conn_id)
            return
        if out:
            self.dispatch(out)

    # sending -----------------------------------------------------------------
    def lookup(self, transport: str, dest: tuple[str, int], conn_id: str | None) -> Connection | None:
        conn = self.conns.get(conn_id) if conn_id else None
        if conn is None or conn.closing:
            cid = self.by_addr.get((transport, dest[0], dest[1]))
            conn = self.conns.get(cid) if cid else None
        if conn is None or conn.closing:
            return None
        return conn

    def send(self, item: Send) -> None:
        """``runtime.stream_send``: write one output of the core over a stream transport."""
        conn = self.lookup(item.transport, item.dest, item.conn_id)
        if conn is not None:
            conn.send(item.data)
            return
        if item.transport in ("tcp", "tls"):
            self.connect(item.transport, item.dest, item.data)
            return
        # RFC 7118 5: a WebSocket client is reachable only over the connection it opened
        self.count("unreachable")
        log_event(log, "drop", reason="no_connection", transport=item.transport, dest=f"{item.dest[0]}:{item.dest[1]}")
        if self.on_send_error is not None and not item.data.startswith(b"SIP/2.0 "):
            self.on_send_error(item.data, item.dest, "no connection")  # a stateful proxy answers at once

    def send_large_udp(self, data: bytes, dest: tuple[str, int]) -> bool:
        """RFC 3261 18.1.1: take a forwarded request over the MTU off UDP and send it over TCP instead.

        Returns False (the caller sends it over UDP) for responses, for small messages, and when no TCP
        listener exists to put in the Via. When the TCP connection fails, the UDP original is sent."""
        if len(data) <= MTU or data.startswith(b"SIP/2.0 ") or "tcp" not in self.local:
            return False
        tcp_data = retarget_top_via(data, "TCP", self.local["tcp"])
        if tcp_data is None:
            return False
        conn = self.lookup("tcp", dest, None)
        if conn is not None:
            conn.send(tcp_data)
        else:
            self.connect("tcp", dest, tcp_data, fallback=data)
        self.count("mtu_to_tcp")
        return True

    def connect(self, transport: str, dest: tuple[str, int], data: bytes, fallback: bytes | None = None) -> None:
        """Queue ``data`` for a new outgoing connection to ``dest`` (opened once for all queued messages)."""
        key = (transport, dest[0], dest[1])
        queue = self.pending.get(key)
        if queue is not None:
            if len(queue) < MAX_PENDING:
                queue.append((data, fallback))
            else:
                self.count("pending_overflow")
            return
        if len(self.conns) + len(self.pending) >= self.max_connections:
            self.count("refused_total_cap")
            self._fail([(data, fallback)], dest, "max_connections")
            return
        self.pending[key] = [(data, fallback)]
        self.spawn(self._open(transport, dest))

    async def _open(self, transport: str, dest: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if transport == "tls":
            ctx = self.client_ssl or ssl.create_default_context()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: StreamProtocol(self, transport, outgoing=True), dest[0], dest[1],
                                       ssl=ctx, server_hostname=dest[0] if ctx else None),
                HANDSHAKE_TIMEOUT)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            queued = self.pending.pop((transport, dest[0], dest[1]), [])
            self.count("connect_failed")
            self._fail(queued, dest, repr(exc))

    def _fail(self, queued: list[tuple[bytes, bytes | None]], dest: tuple[str, int], reason: str) -> None:
        """An outgoing connection could not be opened: UDP for what came from UDP (RFC 3261 18.1.1), drop
        the rest (a stateful proxy's transaction times out and answers 408)."""
        log_event(log, "connect_failed", dest=f"{dest[0]}:{dest[1]}", reason=reason)
        for data, fallback in queued:
            if fallback is not None and self.udp_send is not None:
                self.udp_send(fallback, dest)
            elif self.on_send_error is not None:
                self.on_send_error(data, dest, reason)

    def _flush_pending(self, conn: Connection) -> None:
        if not conn.outgoing:
            return
        queued = self.pending.pop((conn.transport, conn.peer[0], conn.peer[1]), None)
        if queued:
            for data, _fallback in queued:
                conn.send(data)

    # timeouts ----------------------------------------------------------------
    def sweep(self, now: float) -> int:
        """Close idle connections and those stuck in the middle of a message; returns how many."""
        closed = 0
        for conn in list(self.conns.values()):
            if conn.closing:
                continue
            if conn.partial_since is not None and now - conn.partial_since > self.message_timeout:
                self.count("message_timeout")
                log_event(log, "message_timeout", conn=conn.conn_id)
                conn.close("message timeout")
                closed += 1
            elif now - conn.last_activity > self.idle_timeout:
                self.count("idle_timeout")
                conn.close("idle")
                closed += 1
        return closed

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.sweep(self.clock())
            except Exception:  # noqa: BLE001 - keep serving; the traceback is logged
                log_event(log, "sweep_error", level=logging.ERROR, exc_info=True)

    def start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    # listeners ---------------------------------------------------------------
    async def listen_stream(self, transport: str, host: str, port: int,
                            ctx: ssl.SSLContext | None = None) -> tuple[str, int]:
        """A TCP (``ctx`` None) or TLS listener; returns the bound address."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: StreamProtocol(self, transport), host, port, ssl=ctx,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ctx else None, reuse_address=True, backlog=1024)
        self.servers.append(server)
        addr = server.sockets[0].getsockname()
        self.start_sweeper()
        return str(addr[0]), int(addr[1])

    async def listen_ws(self, transport: str, host: str, port: int,
                        ctx: ssl.SSLContext | None = None) -> tuple[str, int]:
        """A WebSocket (``ws``) or secure WebSocket (``wss``) listener speaking the "sip" subprotocol."""
        from websockets.asyncio.server import serve
        from websockets.typing import Subprotocol

        server = await serve(self._ws_session(transport), host, port, ssl=ctx,
                             subprotocols=[Subprotocol(WS_SUBPROTOCOL)],
                             process_request=self._ws_admission, open_timeout=HANDSHAKE_TIMEOUT,
                             max_size=StreamFramer().max_header + StreamFramer().max_body, compression=None)
        self.servers.append(server)
        addr = next(iter(server.sockets)).getsockname()
        self.start_sweeper()
        return str(addr[0]), int(addr[1])

    def _ws_admission(self, connection: Any, request: Any) -> Any:
        """Refuse the opening handshake with 503 when a cap is reached, before any frame is read."""
        addr = connection.remote_address
        ip = str(addr[0]) if addr else ""
        if len(self.conns) >= self.max_connections or self.per_ip[ip] >= self.max_per_ip:
            self.count("refused_ws")
            return connection.respond(503, "Too many connections\n")
        return None

    def _ws_session(self, transport: str) -> Callable[[Any], Any]:
        async def session(ws: Any) -> None:
            from websockets.exceptions import ConnectionClosed

            conn = WsConnection(self, transport, ws)
            if ws.subprotocol != WS_SUBPROTOCOL:  # RFC 7118 4.1: the "sip" subprotocol is required
                await ws.close(1002, "subprotocol sip required")
                return
            if not self.admit(conn):
                await ws.close(1013, "too many connections")
                return
            writer = asyncio.get_running_loop().create_task(conn.writer())
            try:
                async for frame in ws:
                    data = frame.encode("utf-8") if isinstance(frame, str) else bytes(frame)
                    now = self.clock()
                    conn.last_activity = now
                    if not data.strip(b"\r\n"):
                        continue  # keep-alive; WebSocket has its own pings (RFC 7118 does not use CRLF)
                    self.deliver(data, conn.peer, transport, now, conn.conn_id)
            except ConnectionClosed:
                pass
            finally:
                conn.closing = True
                self.remove(conn)
                writer.cancel()

        return session

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.conns.values()):
            conn.close("shutdown")


_ANY_VIA = re.compile(rb"\r\n(?:via|v)[ \t]*:", re.IGNORECASE)
_UDP_VIA = re.compile(rb"\r\n(?:via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*(UDP)[ \t]+([^;,\r\n]+)",
                      re.IGNORECASE)


def retarget_top_via(data: bytes, transport: str, sent_by: tuple[str, int]) -> bytes | None:
    """``data`` with the top Via's transport and sent-by replaced (RFC 3261 18.1.1: when the transport changes
    because of the message size, the top Via must say so); None when the top Via is not a UDP one."""
    end = data.find(b"\r\n\r\n")
    first = _ANY_VIA.search(data, 0, end + 2 if end >= 0 else len(data))
    if first is None:
        return None
    match = _UDP_VIA.match(data, first.start())
    if match is None:
        return None
    host = f"[{sent_by[0]}]" if ":" in sent_by[0] else sent_by[0]
    new_by = f"{host}:{sent_by[1]}".encode()
    return data[: match.start(1)] + transport.encode() + b" " + new_by + data[match.end(2):]


async def start(runtime: Runtime, spec: ListenSpec) -> list[str]:
    """Open the listener for ``spec`` on the runtime's stream table (created on first use) and register
    ``runtime.stream_send``; returns ``["transport:host:port"]`` with the bound port."""
    config = runtime.config
    table: StreamTable | None = getattr(runtime, "streams", None)
    if table is None:
        client_ssl = None
        if config.tls_ca is not None:
            from leansip.io.tls import client_context

            client_ssl = client_context(config.tls_ca, config.tls_cert, config.tls_key)

        def udp_send(data: bytes, dest: tuple[str, int]) -> None:
            if runtime.udp:
                runtime.udp[0].sendto(data, dest)

        table = StreamTable(runtime.handle, runtime.dispatch, idle_timeout=config.tcp_idle_timeout,
                            max_connections=config.max_connections, max_per_ip=config.max_connections_per_ip,
                            client_ssl=client_ssl, udp_send=udp_send)
        runtime.streams = table  # type: ignore[attr-defined]
        table.on_send_error = runtime.send_failed
        table.on_open = runtime.connection_opened
        table.on_close = runtime.connection_closed
    runtime.stream_send = table.send  # type: ignore[attr-defined]
    runtime.stream_send_large = table.send_large_udp  # type: ignore[attr-defined]
    ctx: ssl.SSLContext | None = None
    if spec.transport in ("tls", "wss"):
        from leansip.io.tls import ensure_dev_certificate, server_context

        cert, key = config.tls_cert, config.tls_key
        if cert is None or key is None:
            cert, key = ensure_dev_certificate(Path(config.db).parent)
            log_event(log, "dev_certificate", level=logging.WARNING, cert=str(cert), note="self-signed, for testing only")
        ctx = server_context(cert, key, config.tls_ca)
    listen = table.listen_stream if spec.transport in ("tcp", "tls") else table.listen_ws
    try:
        host, port = await listen(spec.transport, spec.host, spec.port, ctx)
    except OSError:
        if not config.port_fallback:
            raise
        host, port = await listen(spec.transport, spec.host, 0, ctx)  # the demo takes any free port
    table.local.setdefault(spec.transport, (host, port))
    core = runtime.core
    core.local_addresses = [a for a in core.local_addresses
                            if not (a[0] == spec.transport and a[1] == spec.host and a[2] == spec.port)]
    core.local_addresses.append((spec.transport, host, port))
    shown = f"[{host}]" if ":" in host else host
    return [f"{spec.transport}:{shown}:{port}"]
