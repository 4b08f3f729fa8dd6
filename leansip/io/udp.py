"""The phone's UDP transport: the thin asyncio shell around the sans-I/O user agent (the server's socket is
:mod:`leansip.io.udpserver`).

``datagram_received`` is the whole receive path: it hands the bytes to the core and writes whatever comes back
before returning, so a packet is handled from socket to reply in one callback, with no queue and no task per
packet (the research's "one thread from the wire to the reply").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from leansip.io.udpbase import Handler, big_buffers, is_address, send_after_lookup
from leansip.sip.send import Send

log = logging.getLogger("leansip.io.udp")


class UdpEndpoint(asyncio.DatagramProtocol):
    """A UDP socket as an asyncio protocol, for the phone's SIP socket (the server uses :class:`UdpServerSocket`).
    ``dispatch`` writes the handler's output."""

    def __init__(self, handler: Handler, dispatch: Callable[[list[Send]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.handler = handler
        self.dispatch = dispatch
        self.clock = clock
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[str, int] = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            big_buffers(sock)
        self.address = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            out = self.handler(data, addr[:2], "udp", self.clock(), None)
        except Exception:  # noqa: BLE001 - a bug must not stop the program; it is logged with its traceback
            log.exception("event=handler_error src=%s:%s", addr[0], addr[1])
            return
        if out:
            self.dispatch(out)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for an earlier send: nothing to do for a datagram server
        log.debug("event=udp_error error=%r", exc)

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if self.transport is not None and not is_address(dest[0]):
            sock = self.transport.get_extra_info("socket")
            send_after_lookup(self.sendto, data, dest, sock.family if sock is not None else socket.AF_INET)
            return
        if self.transport is not None:
            try:
                self.transport.sendto(data, dest)
            except OSError as exc:  # pragma: no cover - e.g. unroutable address from a peer's Via
                log.debug("event=send_failed dest=%s error=%r", dest, exc)


async def open_udp(host: str, port: int, handler: Handler, dispatch: Callable[[list[Send]], None],
                   *, port_fallback: bool = False) -> UdpEndpoint:
    """Bind a UDP endpoint; with ``port_fallback`` an address in use falls back to a free port."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        _t, proto = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(handler, dispatch), local_addr=(host, port), family=family)
    except OSError:
        if not port_fallback:
            raise
        _t, proto = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(handler, dispatch), local_addr=(host, 0), family=family)
    return proto
