"""The phone's SIP transport over TCP or TLS: one persistent connection (a flow, RFC 5626) to its server.

Theory of operation. The phone opens ONE connection to its registrar/outbound proxy and sends everything over
it: its requests, its responses, and the server's requests to the phone come back on it too (RFC 5626 flow
reuse: the registrar stores the connection with the binding, so a phone behind NAT or a firewall is reachable
without listening). So unlike the server's :mod:`leansip.io.streams` there is no table of connections and no
listener: :meth:`SipStream.send` ignores the destination the core computed, because every next hop of the phone
is the server.

Reading is the server's receive path in miniature: :class:`~leansip.sip.framing.StreamFramer` cuts the stream
into messages, each handed to ``handler(data, peer, transport, now, conn_id)``; a double-CRLF ping from the
server is answered with a single CRLF pong (RFC 5626 3.5.1) and the single-CRLF pongs to our own pings are
counted and reported to ``on_pong`` (the phone's keep-alive checks them). A framing error closes the connection:
the next message boundary is unknown (RFC 3261 18.3). Loss of the connection is reported once to ``on_closed``;
reconnecting (and registering again) is the phone's decision.

For TLS the server's certificate is verified against ``--ca-file`` (else the system store) and the name the user
gave (RFC 5922 7.2), unless the context was made with ``insecure=True``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from leansip.sip.framing import FramingError, StreamFramer
from leansip.sip.send import Send

__all__ = ["SipStream", "tls_client_context", "PING", "PONG", "CONNECT_TIMEOUT"]

log = logging.getLogger("leansip.io.sipstream")

PING = b"\r\n\r\n"  # RFC 5626 3.5.1
PONG = b"\r\n"
CONNECT_TIMEOUT = 10.0

Handler = Callable[[bytes, tuple[str, int], str, float, "str | None"], list[Send]]


def tls_client_context(ca_file: Path | None = None, *, insecure: bool = False) -> ssl.SSLContext:
    """Client context for the phone: verify the server against ``ca_file`` (else the system CAs); with
    ``insecure`` accept any certificate (a development server's self-signed one without pinning it)."""
    from leansip.io.tls import client_context

    ctx = client_context(ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: SipStream) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_lost(exc)


class SipStream:
    """One TCP/TLS flow to the server. Open with :meth:`connect`; write with :meth:`send` and :meth:`ping`."""

    def __init__(self, transport_name: str, handler: Handler, *, on_closed: Callable[[str], None] | None = None,
                 on_pong: Callable[[], None] | None = None) -> None:
        self.transport_name = transport_name
        self.handler = handler
        self.on_closed = on_closed
        self.on_pong = on_pong
        self.framer = StreamFramer()
        self.io: asyncio.Transport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.peer: tuple[str, int] = ("", 0)
        self.conn_id = ""
        self.closed = False
        self.pings_sent = 0
        self.pongs_received = 0
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, transport_name: str, targets: Sequence[tuple[str, int]], handler: Handler, *,
                      ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                      local_host: str | None = None, local_port: int = 0,
                      on_closed: Callable[[str], None] | None = None, on_pong: Callable[[], None] | None = None,
                      timeout: float = CONNECT_TIMEOUT) -> SipStream:
        """Connect to the first of ``targets`` that accepts (RFC 3263: try the next on failure). Raises
        OSError (ssl.SSLError for a rejected certificate) with the last failure."""
        if transport_name not in ("tcp", "tls"):
            raise ValueError(f"not a stream transport: {transport_name!r}")
        if transport_name == "tls" and ssl_context is None:
            ssl_context = tls_client_context()
        self = cls(transport_name, handler, on_closed=on_closed, on_pong=on_pong)
        last: OSError | None = None
        for host, port in targets:
            kwargs: dict[str, object] = {}
            if transport_name == "tls":
                kwargs["ssl"] = ssl_context
                kwargs["server_hostname"] = server_hostname or host
            if local_host is not None:
                kwargs["local_addr"] = (local_host, local_port)
            try:
                io, _proto = await asyncio.wait_for(
                    self._loop.create_connection(lambda: _Protocol(self), host, port, **kwargs), timeout)  # type: ignore[call-overload]
            except (OSError, TimeoutError) as exc:
                log.info("event=connect_failed transport=%s dest=%s:%s error=%r", transport_name, host, port, exc)
                last = exc if isinstance(exc, OSError) else OSError(f"connect to {host}:{port} timed out")
                continue
            self.io = io
            self.local = io.get_extra_info("sockname")[:2]
            self.peer = io.get_extra_info("peername")[:2]
            self.conn_id = f"{transport_name}:{self.peer[0]}:{self.peer[1]}"
            log.info("event=connected transport=%s local=%s:%s server=%s:%s", transport_name, *self.local,
                     *self.peer)
            return self
        raise last or OSError("no server address to connect to")

    # ------------------------------------------------------------------ writing
    def send(self, data: bytes) -> bool:
        """Write one message on the flow; False when the connection is gone (the caller reconnects)."""
        if self.io is None or self.closed or self.io.is_closing():
            return False
        self.io.write(data)
        return True

    def send_all(self, sends: Sequence[Send]) -> bool:
        """Write the core's outputs; their destinations are all the server (see the module docstring)."""
        ok = True
        for s in sends:
            ok = self.send(s.data) and ok
        return ok

    def ping(self) -> bool:
        """Send a double-CRLF keep-alive (RFC 5626 3.5.1); the server answers with one CRLF."""
        if self.send(PING):
            self.pings_sent += 1
            log.debug("event=keepalive_ping server=%s:%s pings=%d", *self.peer, self.pings_sent)
            return True
        return False

    def close(self) -> None:
        """Close without reporting to ``on_closed`` (we chose to)."""
        self.on_closed = None
        if self.io is not None and not self.io.is_closing():
            self.io.close()
        self.closed = True

    # ------------------------------------------------------------------ reading
    def _on_data(self, data: bytes) -> None:
        framer = self.framer
        pongs_before = framer.pongs
        if (data.startswith(PONG) and not data.startswith(PING) and framer.buffered == 0
                and framer.pongs < self.pings_sent):
            # A lone CRLF between messages while our ping is unanswered is its pong. The framer alone would
            # hold it back, waiting to see whether a second CRLF (a ping) follows in the next read.
            framer.pongs += 1
            data = data[len(PONG):]
        try:
            messages = framer.feed(data)
        except FramingError as exc:
            log.warning("event=framing_error server=%s:%s reason=%r", *self.peer, exc.reason)
            self._fail(f"framing error: {exc.reason}")
            return
        for _ in range(framer.take_pings()):
            self.send(PONG)
        if framer.pongs != pongs_before:
            self.pongs_received = framer.pongs
            log.debug("event=keepalive_pong server=%s:%s pongs=%d", *self.peer, self.pongs_received)
            if self.on_pong is not None:
                self.on_pong()
        now = self._loop.time()
        for message in messages:
            try:
                out = self.handler(message, self.peer, self.transport_name, now, self.conn_id)
            except Exception:  # noqa: BLE001 - a bug in the core must not kill the flow; logged with traceback
                log.exception("event=handler_error server=%s:%s", *self.peer)
                continue
            if out:
                self.send_all(out)

    def _on_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc!r}" if exc is not None else "closed by the server")

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.io is not None and not self.io.is_closing():
            self.io.abort()
        log.info("event=flow_closed transport=%s server=%s:%s reason=%r", self.transport_name, *self.peer, reason)
        callback, self.on_closed = self.on_closed, None
        if callback is not None:
            callback(reason)
