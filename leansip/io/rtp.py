"""RTP/RTCP sockets for one call: the asyncio shell around :class:`leansip.ua.session.MediaSession`.

One UDP socket for RTP (an even port) and one for RTCP (port + 1, RFC 3550 11). A single paced loop runs
the session's 20 ms tick against absolute deadlines of the event loop clock, so a late wake-up does not
stretch the stream: when the loop falls behind it catches up by sending the missed frames at once (the
receiver's jitter buffer absorbs that) rather than drifting. Received audio goes to ``sink`` (a WAV writer, a
sound card), one 160-sample frame per tick; the digits the peer sent (RFC 4733) and the clips played to the end
are reported after each tick.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from array import array
from collections.abc import Callable

from leansip.media.dtmf import DtmfDigit
from leansip.media.stun import is_stun
from leansip.ua.session import FRAME_SECONDS, MediaSession

__all__ = ["RtpPorts", "MediaRunner", "open_rtp_ports"]

log = logging.getLogger("leansip.io.rtp")

Address = tuple[str, int]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, Address], None]) -> None:
        self.on_packet = on_packet
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override, type-arg]
        self.on_packet(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("event=rtp_socket_error error=%r", exc)  # ICMP unreachable before the peer listens

    def sendto(self, data: bytes, dest: Address) -> None:
        if self.transport is not None:
            try:
                self.transport.sendto(data, dest)
            except OSError as exc:
                log.debug("event=rtp_send_failed dest=%s error=%r", dest, exc)


class RtpPorts:
    """The RTP and RTCP sockets; packets go to whatever session is attached (none: dropped)."""

    def __init__(self, host: str, port: int, rtp: _Datagrams, rtcp: _Datagrams) -> None:
        self.host = host
        self.port = port
        self.rtp = rtp
        self.rtcp = rtcp
        self.session: MediaSession | None = None
        self.clock: Callable[[], float] = asyncio.get_running_loop().time
        #: STUN answers arrive on the RTP socket (we ask from it to learn its public mapping): this hook sees
        #: STUN-looking datagrams first and returns True for the ones it consumed (RFC 7983 demultiplexing)
        self.stun: Callable[[bytes, Address, float], bool] | None = None
        rtp.on_packet = self._on_rtp
        rtcp.on_packet = self._on_rtcp

    def _on_rtp(self, data: bytes, source: Address) -> None:
        if self.stun is not None and is_stun(data) and self.stun(data, source, self.clock()):
            return
        if self.session is not None:
            self.session.receive_rtp(data, source, self.clock())

    def _on_rtcp(self, data: bytes, source: Address) -> None:
        if self.session is not None:
            self.session.receive_rtcp(data, source, self.clock())

    def close(self) -> None:
        for proto in (self.rtp, self.rtcp):
            if proto.transport is not None:
                proto.transport.close()


async def open_rtp_ports(host: str, port: int = 0, *, attempts: int = 50) -> RtpPorts:
    """Bind an even RTP port and the next odd one for RTCP. ``port`` 0 picks a free pair at random in
    20000-59998. Raises OSError when the requested pair (or ``attempts`` random pairs) is taken."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port else [random.randrange(20000, 59998, 2) for _ in range(attempts)]
    last: OSError | None = None
    for p in candidates:
        try:
            _t1, rtp = await loop.create_datagram_endpoint(
                lambda: _Datagrams(lambda d, a: None), local_addr=(host, p), family=family)
        except OSError as exc:
            last = exc
            continue
        try:
            _t2, rtcp = await loop.create_datagram_endpoint(
                lambda: _Datagrams(lambda d, a: None), local_addr=(host, p + 1), family=family)
        except OSError as exc:
            last = exc
            if rtp.transport is not None:
                rtp.transport.close()
            continue
        return RtpPorts(host, p, rtp, rtcp)
    raise last or OSError("no free RTP port pair")


class MediaRunner:
    """Runs a :class:`MediaSession` on :class:`RtpPorts`: 20 ms ticks, RTCP when due, audio to ``sink``; after
    each tick the digits the peer sent go to ``on_digits`` and the ids of clips played out to ``on_played``."""

    def __init__(self, ports: RtpPorts, session: MediaSession, sink: Callable[[array], None] | None = None, *,
                 on_digits: Callable[[list[DtmfDigit]], None] | None = None,
                 on_played: Callable[[list[int]], None] | None = None) -> None:
        self.ports = ports
        self.session = session
        self.sink = sink
        self.on_digits = on_digits
        self.on_played = on_played
        self._task: asyncio.Task[None] | None = None
        self.frames = 0

    def start(self) -> None:
        self.ports.session = self.session
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        session = self.session
        while True:
            now = loop.time()
            # catch up at most 5 frames after a stall; beyond that, skip ahead (the peer would drop them)
            if now - due > 5 * FRAME_SECONDS:
                due = now
            while due <= now:
                packets, samples = session.tick(due)
                for data, dest in packets:
                    self.ports.rtp.sendto(data, dest)
                if self.sink is not None:
                    self.sink(samples)
                self.frames += 1
                due += FRAME_SECONDS
            digits = session.take_digits()
            if digits and self.on_digits is not None:
                self.on_digits(digits)
            played = session.take_finished()
            if played and self.on_played is not None:
                self.on_played(played)
            if session.rtcp_due(now):
                data, dest = session.rtcp_report(now)
                self.ports.rtcp.sendto(data, dest)
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def stop(self) -> None:
        """Stop ticking (the sockets stay open: a re-INVITE may bring the stream back)."""
        self.ports.session = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
