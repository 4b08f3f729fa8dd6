"""UDP transport: the thin asyncio shell around the sans-I/O core.

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
from typing import TYPE_CHECKING

from leansip.sip.send import Send

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.timing import StepTimer

log = logging.getLogger("leansip.io.udp")

Handler = Callable[[bytes, tuple[str, int], str, float, "str | None"], list[Send]]

#: name lookups for destinations in flight at once; past it such sends are dropped (UDP may drop)
MAX_LOOKUPS = 64
LOOKUP_TIMEOUT = 5.0
_lookups = 0
_pending: set[asyncio.Task[None]] = set()  # strong references while a lookup runs


def _is_address(host: str) -> bool:
    """An IP literal, which ``sendto`` uses as is. Anything else (a name from a peer's Via ``maddr``,
    ``received`` or sent-by, or a bogus "999.999.999.999") would make ``sendto`` resolve it synchronously,
    stalling every other message while DNS answers or times out. Addresses seen are remembered (bounded):
    every reply goes to one of a few peers, and the check is two system-library calls and an exception."""
    if host in _ADDRESSES:
        return True
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        if len(_ADDRESSES) >= 4096:
            _ADDRESSES.clear()
        _ADDRESSES.add(host)
        return True
    return False


_ADDRESSES: set[str] = set()


def _send_after_lookup(send: Callable[[bytes, tuple[str, int]], None], data: bytes, dest: tuple[str, int],
                       family: int) -> None:
    """Resolve ``dest`` in the loop's resolver thread, then ``send``; bounded by :data:`MAX_LOOKUPS`."""
    global _lookups
    if _lookups >= MAX_LOOKUPS:
        log.info("event=send_dropped reason=too_many_lookups dest=%s", dest[0][:80])
        return
    _lookups += 1

    async def lookup() -> None:
        global _lookups
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(dest[0], dest[1], family=family, type=socket.SOCK_DGRAM), LOOKUP_TIMEOUT)
        except (TimeoutError, OSError, ValueError) as exc:  # ValueError: NUL or bad IDNA in the name
            log.debug("event=send_failed dest=%s error=%r", dest[0][:80], exc)
            return
        finally:
            _lookups -= 1
        if infos and _is_address(infos[0][4][0]):  # (a scoped IPv6 address would come back here forever)
            send(data, infos[0][4][:2])

    task = asyncio.get_running_loop().create_task(lookup())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


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
            _big_buffers(sock)
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
        if self.transport is not None and not _is_address(dest[0]):
            sock = self.transport.get_extra_info("socket")
            _send_after_lookup(self.sendto, data, dest, sock.family if sock is not None else socket.AF_INET)
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


def _big_buffers(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:  # pragma: no cover - the kernel may cap it; fine
            pass


class UdpServerSocket:
    """The server's UDP socket, read with plain ``recvfrom`` calls from the event loop's reader callback: one
    datagram per wake-up under light load, up to ``BATCH`` under load (see ``_readable``); replies go out with
    ``sendto`` on the same non-blocking socket.

    This is the receive path with the least machinery between the wire and the core: no transport object, no
    callback Handle per datagram (what asyncio's DatagramProtocol costs), no task, no queue. A datagram is still
    handled to its reply before the next one is read. Sends that would block (a full socket buffer) wait in a
    small queue written when the socket is writable again; past its bound they are dropped (UDP may drop, and a
    SIP client retransmits).
    """

    BATCH = 64
    MAX_BACKLOG = 4096
    #: wake-ups closer than this (seconds) mean load: drain the socket instead of reading one datagram
    BUSY_GAP = 0.0005

    def __init__(self, sock: socket.socket, handler: Handler, dispatch: Callable[[list[Send]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.sock = sock
        self.handler = handler
        self.dispatch = dispatch
        self.clock = clock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.timing: StepTimer | None = None
        self._backlog: list[tuple[bytes, tuple[str, int]]] = []
        self._last_wake = 0.0
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        # The loop's poll is level-triggered: a datagram left unread makes it call again at once. So under light
        # load one datagram is read per wake-up, and the read that would fail (a BlockingIOError: an exception
        # object and a strerror text, ~2 us on this machine, for every request) is never made. Under load (the
        # previous wake-up under BUSY_GAP ago) the socket is drained, up to BATCH, and one failing read ends it.
        recvfrom = self.sock.recvfrom
        handler = self.handler
        timing = self.timing
        clock = self.clock
        now = clock()
        batch = self.BATCH if now - self._last_wake < self.BUSY_GAP else 1
        self._last_wake = now
        for _ in range(batch):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here on some kernels: nothing to do for a server
                log.debug("event=udp_error error=%r", exc)
                continue
            if timing is not None:
                timing.datagram_in()
            try:
                out = handler(data, addr[:2], "udp", now, None)
            except Exception:  # noqa: BLE001 - a bug must not stop the server; it is logged with its traceback
                log.exception("event=handler_error src=%s:%s", addr[0], addr[1])
                continue
            if out:
                self.dispatch(out)
            if timing is not None:
                timing.sent()
            now = clock()

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if not _is_address(dest[0]):
            _send_after_lookup(self.sendto, data, dest, self.sock.family)
            return
        if self._backlog:
            self._queue(data, dest)
            return
        try:
            self.sock.sendto(data, dest)
        except (BlockingIOError, InterruptedError):
            self._queue(data, dest)
            self._loop.add_writer(self.sock.fileno(), self._writable)
        except OSError as exc:  # e.g. an unroutable address taken from a peer's Via
            log.debug("event=send_failed dest=%s error=%r", dest, exc)

    def _queue(self, data: bytes, dest: tuple[str, int]) -> None:
        if len(self._backlog) < self.MAX_BACKLOG:
            self._backlog.append((data, dest))
        else:
            log.debug("event=send_dropped reason=backlog dest=%s", dest)

    def _writable(self) -> None:
        backlog = self._backlog
        while backlog:
            data, dest = backlog[0]
            try:
                self.sock.sendto(data, dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("event=send_failed dest=%s error=%r", dest, exc)
            backlog.pop(0)
        self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        if self._backlog:
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()


async def open_udp_server(host: str, port: int, handler: Handler, dispatch: Callable[[list[Send]], None],
                          *, port_fallback: bool = False) -> UdpServerSocket:
    """Bind the server's UDP socket; with ``port_fallback`` an address in use falls back to a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        try:
            sock.bind((host, port))
        except OSError:
            if not port_fallback:
                raise
            sock.bind((host, 0))
        sock.setblocking(False)
        _big_buffers(sock)
    except BaseException:
        sock.close()
        raise
    return UdpServerSocket(sock, handler, dispatch)
