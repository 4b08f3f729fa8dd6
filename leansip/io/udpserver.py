"""The server's UDP socket and its one transaction timer: the per-datagram half of the shell, compiled with the core.

A datagram's whole life outside the core is here: ``_readable`` reads it, hands it to the core, writes the
replies with ``sendto`` and re-arms the loop timer on the grid (:class:`TimerGrid`), all before the next
datagram is read. This module is in ``leansip._build.COMPILED``: interpreted, those few lines were about a
fifth of the shell's instructions per datagram (bench/analysis.md). What stays interpreted is what does not run
per datagram: name lookups for a destination that is not an IP literal (:mod:`leansip.io.udpbase`), stream
transports, and the Runtime's dispatch of anything that is not a small UDP datagram.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Final, Protocol

from leansip.io.udpbase import Handler, big_buffers, send_after_lookup
from leansip.logevent import log_event
from leansip.server.timing import StepTimer
from leansip.sip.send import Send
from leansip.sip.txstate import on_grid
from leansip.sip.uri import is_ip_literal

log: Final = logging.getLogger("leansip.io.udp")

#: RFC 3261 18.1.1: a request over the path MTU (less 200 bytes) goes over a congestion-controlled transport when
#: one is configured; such datagrams take the Runtime's dispatch, which knows the stream transports
UDP_SMALL: Final = 1300


class Deadlines(Protocol):
    """What :class:`TimerGrid` needs from the core: its earliest timer deadline (absolute, seconds)."""

    def next_deadline(self) -> float | None: ...


class TimerGrid:
    """The server's one transaction timer: a ``loop.call_later`` at the core's earliest deadline, rounded up
    to a grid of ``step`` seconds.

    Every wake-up costs about what a datagram does, and a stateful proxy at 200 calls/s has ~800 timers a second
    to end, one wake-up each when spread out; on the grid all timers due within a step share one. RFC 3261
    timers are waits, not deadlines, and none fires early (Kamailio's tm ticks at 62.5 ms; our step is T1/25,
    at most 20 ms). ``fire`` is called at the deadline; it must call :meth:`fired` first, then the core.

    A polling loop that never sleeps (``serve --bare``, :mod:`leansip.io.bareloop`) sets :attr:`polled`: then
    :meth:`arm` only records the deadline in :attr:`at` and the polling loop calls ``fire`` when it is due; no
    event-loop timer is made per change of the earliest deadline.
    """

    def __init__(self, core: Deadlines, fire: Callable[[], None], step: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.core = core
        self.fire = fire
        self.step = step
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None
        #: the armed deadline (on the grid); -1: none armed
        self.at = -1.0
        #: True while a polling loop reads :attr:`at` itself (no event-loop timer is armed then)
        self.polled = False

    def arm(self) -> None:
        """Make sure the timer fires by the core's next deadline (called after every output)."""
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        deadline = on_grid(deadline, self.step)  # every timer due by then fires in the same wake-up
        if self.at >= 0.0 and self.at <= deadline:
            return
        self.at = deadline
        if not self.polled:
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, self.at - self.clock()), self.fire)

    def set_polled(self, polled: bool) -> None:
        """A polling loop takes over the deadline (True), or hands it back to the event loop's timer (False)."""
        self.polled = polled
        if polled:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        elif self.at >= 0.0:
            self._schedule()

    def fired(self) -> None:
        """The timer went off: nothing is armed any more."""
        self._timer = None
        self.at = -1.0


class UdpServerSocket:
    """The server's UDP socket, read with plain ``recvfrom_into`` calls from the event loop's reader callback: one
    datagram per wake-up under light load, up to ``BATCH`` under load (see ``_readable``); replies go out with
    ``sendto`` on the same non-blocking socket.

    This is the receive path with the least machinery between the wire and the core: no transport object, no
    callback Handle per datagram (what asyncio's DatagramProtocol costs), no task, no queue. A datagram is still
    handled to its reply before the next one is read. Small UDP replies are written here; anything else (a
    stream transport, a request too large for UDP) goes to ``dispatch``. Sends that would block (a full socket
    buffer) wait in a small queue written when the socket is writable again; past its bound they are dropped
    (UDP may drop, and a SIP client retransmits).
    """

    BATCH: Final = 64
    MAX_BACKLOG: Final = 4096
    #: wake-ups closer than this (seconds) mean load: drain the socket instead of reading one datagram
    BUSY_GAP: Final = 0.0005

    def __init__(self, sock: socket.socket, handler: Handler, dispatch: Callable[[list[Send]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.sock = sock
        self.handler = handler
        self.dispatch = dispatch
        self.clock = clock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.timing: StepTimer | None = None
        #: re-armed after the replies to each datagram are written (the Runtime's grid); None in tests
        self.timers: TimerGrid | None = None
        self._backlog: list[tuple[bytes, tuple[str, int]]] = []
        #: the server's other UDP sockets: a destination of the other address family goes out on one of them
        self.siblings: list[UdpServerSocket] = []
        self._last_wake = 0.0
        #: every datagram is read into this buffer and copied out at its own size. ``recvfrom(65535)`` made a
        #: 64 KiB bytes object and shrank it: under a flood of large datagrams (issue 23's soak, 2,000/s of up to
        #: 64 kB) those 64 KiB requests among the datagrams the reply cache and the transactions keep for 32 s
        #: left holes in the heap too small for the next one, and the heap grew the whole flood long. The copy
        #: costs ~70 ns a datagram.
        self._buffer = bytearray(65535)
        self._view = memoryview(self._buffer)
        self._loop = asyncio.get_running_loop()
        self.watch()

    def _readable(self) -> None:
        # The loop's poll is level-triggered: a datagram left unread makes it call again at once. So under light
        # load one datagram is read per wake-up, and the read that would fail (a BlockingIOError: an exception
        # object and a strerror text, ~2 us on this machine, for every request) is never made. Under load (the
        # previous wake-up under BUSY_GAP ago) the socket is drained, up to BATCH, and one failing read ends it.
        now = self.clock()
        batch = self.BATCH if now - self._last_wake < self.BUSY_GAP else 1
        self._last_wake = now
        self.serve(batch, now)

    def serve(self, limit: int, now: float) -> int:
        """Read up to ``limit`` datagrams, each handled to its written replies before the next is read; stop
        early when none is left. ``now`` is the first one's arrival time (later ones read the clock).

        Returns how many datagrams were read: the event loop's reader callback and the polling loop of
        ``serve --bare`` (:mod:`leansip.io.bareloop`) both serve through here."""
        sock = self.sock
        handler = self.handler
        timing = self.timing
        buffer, view = self._buffer, self._view
        read = 0
        for i in range(limit):
            try:
                size, addr = sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return read
            except OSError as exc:  # ICMP errors surface here on some kernels: nothing to do for a server
                log_event(log, "udp_error", level=logging.DEBUG, error=repr(exc))
                continue
            read += 1
            data = view[:size].tobytes()
            if i:  # the next datagram's time (one read per call is the usual case: no clock read)
                now = self.clock()
            if timing is not None:
                timing.datagram_in()
            try:
                out = handler(data, addr[:2], "udp", now, None)
            except Exception:  # noqa: BLE001 - a bug must not stop the server; it is logged with its traceback
                log_event(log, "handler_error", level=logging.ERROR, exc_info=True, src=f"{addr[0]}:{addr[1]}")
                continue
            if out:
                self._write(out)
            if timing is not None:
                timing.sent()
        return read

    def watch(self, callback: Callable[[], None] | None = None) -> None:
        """Have the event loop call ``callback`` (default: read and serve) when a datagram waits."""
        self._loop.add_reader(self.sock.fileno(), callback if callback is not None else self._readable)

    def unwatch(self) -> None:
        """The event loop stops watching the socket: a polling loop reads it (``serve --bare``)."""
        self._loop.remove_reader(self.sock.fileno())

    def _write(self, out: list[Send]) -> None:
        """Send the core's output: small UDP datagrams here, anything else (and a reply held until its
        bindings are committed) through ``dispatch``."""
        for item in out:
            if item.transport != "udp" or len(item.data) > UDP_SMALL or item.after_commit:
                self.dispatch(out)
                return
        for item in out:
            self.sendto(item.data, item.dest)
        timers = self.timers
        if timers is not None:
            timers.arm()

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        if not is_ip_literal(dest[0]):  # a name: sendto would resolve it synchronously (udpbase.is_address)
            send_after_lookup(self.sendto, data, dest, self.sock.family)
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
            family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
            if family != self.sock.family:  # an IPv6 destination on an IPv4 socket, or the other way round
                for other in self.siblings:
                    if other.sock.family == family:
                        other.sendto(data, dest)
                        return
            log_event(log, "send_failed", level=logging.DEBUG, dest=f"{dest[0]}:{dest[1]}", error=repr(exc))

    def _queue(self, data: bytes, dest: tuple[str, int]) -> None:
        if len(self._backlog) < self.MAX_BACKLOG:
            self._backlog.append((data, dest))
        else:
            log_event(log, "send_dropped", level=logging.DEBUG, reason="backlog", dest=f"{dest[0]}:{dest[1]}")

    def _writable(self) -> None:
        backlog = self._backlog
        while backlog:
            data, dest = backlog[0]
            try:
                self.sock.sendto(data, dest)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log_event(log, "send_failed", level=logging.DEBUG, dest=f"{dest[0]}:{dest[1]}", error=repr(exc))
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
        big_buffers(sock)
    except BaseException:
        sock.close()
        raise
    return UdpServerSocket(sock, handler, dispatch)
