"""What both UDP shells (server and phone) share: the handler's signature, socket buffers, and sending a datagram
to a destination that may be a name.

``sendto`` with a host name resolves it synchronously, stalling every other message while DNS answers or times
out; destinations that are not IP literals are therefore resolved in the loop's resolver thread first. Kept
interpreted (an ``async`` helper, rarely used); the server's compiled socket (:mod:`leansip.io.udpserver`) calls
it only for such destinations.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from leansip.logevent import log_event
from leansip.sip.send import Send
from leansip.sip.uri import is_ip_literal

log = logging.getLogger("leansip.io.udp")

#: the core's receive: (datagram, source, transport, now, connection id) -> what to send
Handler = Callable[[bytes, tuple[str, int], str, float, "str | None"], list[Send]]

#: name lookups for destinations in flight at once; past it such sends are dropped (UDP may drop)
MAX_LOOKUPS = 64
LOOKUP_TIMEOUT = 5.0
_lookups = 0
_pending: set[asyncio.Task[None]] = set()  # strong references while a lookup runs


def is_address(host: str) -> bool:
    """An IP literal, which ``sendto`` uses as is. Anything else (a name from a peer's Via ``maddr``,
    ``received`` or sent-by, or a bogus "999.999.999.999") would make ``sendto`` resolve it synchronously,
    stalling every other message while DNS answers or times out. The core's remembered check (every reply goes
    to one of a few peers)."""
    return is_ip_literal(host)


def send_after_lookup(send: Callable[[bytes, tuple[str, int]], None], data: bytes, dest: tuple[str, int],
                       family: int) -> None:
    """Resolve ``dest`` in the loop's resolver thread, then ``send``; bounded by :data:`MAX_LOOKUPS`."""
    global _lookups
    if _lookups >= MAX_LOOKUPS:
        log_event(log, "send_dropped", reason="too_many_lookups", dest=dest[0][:80])
        return
    _lookups += 1

    async def lookup() -> None:
        global _lookups
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(dest[0], dest[1], family=family, type=socket.SOCK_DGRAM), LOOKUP_TIMEOUT)
        except (TimeoutError, OSError, ValueError) as exc:  # ValueError: NUL or bad IDNA in the name
            log_event(log, "send_failed", level=logging.DEBUG, dest=dest[0][:80], error=repr(exc))
            return
        finally:
            _lookups -= 1
        if infos:
            host, port = str(infos[0][4][0]), int(infos[0][4][1])  # (AF_INET/AF_INET6: address, port, ...)
            if is_address(host):
                send(data, (host, port))

    task = asyncio.get_running_loop().create_task(lookup())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def big_buffers(sock: socket.socket) -> None:
    """4 MiB socket buffers (the kernel may cap them): a burst waits in the kernel instead of being dropped."""
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:  # pragma: no cover - the kernel may cap it; fine
            pass
