"""The phone: asyncio shell that joins the SIP core (:class:`~leansip.ua.useragent.UserAgent`), SDP offer/answer
(:mod:`leansip.ua.sdp`) and media (:mod:`leansip.io.rtp`).

It is thin on purpose: datagrams go into ``UserAgent.receive``, the outputs come back as sends (written to the
socket) and events (acted on here -- start/stop/update media -- then queued for the application). ONE loop
timer is re-armed to ``UserAgent.next_deadline()`` after every call into the core (aioquic's ``transmit``).

Applications (the CLI, the TUI) call the coroutine-free commands (:meth:`Phone.call`, :meth:`Phone.answer`,
:meth:`Phone.hangup` ...) and await :meth:`Phone.next_event`.

Transports: UDP (one socket), or TCP/TLS over ONE connection to the server (:class:`leansip.io.sipstream.SipStream`,
RFC 5626 flow reuse: the server sends its requests to us back on the connection we registered over). A lost
flow is opened again with backoff and the registration renewed over it.

NAT traversal: a keep-alive to the server every ``keepalive`` seconds (:class:`KeepAlive`: CRLFCRLF or OPTIONS
over UDP; over a stream a CRLFCRLF ping whose CRLF pong must come back within 10 s, else the flow has failed,
RFC 5626 4.4.1), and with ``stun`` the public RTP address learned from the RTP socket
(:class:`leansip.ua.stun_client.StunClient`) goes into our SDP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from leansip.io.rtp import MediaRunner, RtpPorts, open_rtp_ports
from leansip.io.sipstream import SipStream, tls_client_context
from leansip.io.udp import UdpEndpoint, open_udp
from leansip.media.audiofile import AudioWriter, load_audio
from leansip.sip.send import Send
from leansip.ua.sdp import (
    LocalSession,
    MediaConfig,
    NegotiatedMedia,
    SdpError,
    SessionDescription,
    parse_sdp,
    process_answer,
)
from leansip.ua.session import MediaSession
from leansip.ua.stun_client import StunClient
from leansip.ua.useragent import (
    CallEnded,
    CallEstablished,
    CallUpdated,
    IncomingCall,
    OfferReceived,
    Output,
    UaConfig,
    UaError,
    UaEvent,
    UserAgent,
)

__all__ = ["PhoneOptions", "Phone", "MediaFailed", "KeepAlive", "DEFAULT_KEEPALIVE", "PONG_TIMEOUT"]

log = logging.getLogger("leansip.phone")
sip_log = logging.getLogger("leansip.phone.sip")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFailed:
    """SDP negotiation failed (no common codec, SRTP required but not offered): the call was refused or hung up."""

    reason: str


PhoneEvent = UaEvent | MediaFailed


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneOptions:
    """Everything the phone needs besides the SIP identity."""

    user: str
    password: str | None = None
    server: tuple[str, int] | None = None
    domain: str | None = None
    local_host: str = "127.0.0.1"
    local_port: int = 0
    rtp_port: int = 0
    srtp: str = "off"
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    play: Path | None = None
    record: Path | None = None
    sound_card: bool = False
    transport: str = "udp"  # udp, tcp or tls
    #: more addresses of the server to try in order when connecting a stream (RFC 3263 failover)
    server_alternates: tuple[tuple[str, int], ...] = ()
    #: name the server's TLS certificate must carry (the domain the user gave); default: the server address
    server_name: str | None = None
    ca_file: Path | None = None
    insecure: bool = False
    #: seconds between keep-alives to the server; None: the transport's default, 0: none
    keepalive: float | None = None
    keepalive_method: str = "crlf"  # over UDP: crlf or options
    stun: tuple[str, int] | None = None
    stun_refresh: float = 30.0


#: Default keep-alive interval per transport: 25 s over UDP (shorter than the ~30 s UDP timeouts of many NATs),
#: RFC 5626 4.4.1's 95-120 s band (upper bound 120) over connections, whose NAT timeouts are much longer.
DEFAULT_KEEPALIVE = {"udp": 25.0, "tcp": 120.0, "tls": 120.0}
#: RFC 5626 4.4.1: no pong within 10 s means the flow has failed.
PONG_TIMEOUT = 10.0
#: How long :meth:`Phone.start` waits for the first STUN answer before going on with the local address.
STUN_START_WAIT = 3.0


class KeepAlive:
    """When to send keep-alives and when a missing pong means the flow failed. Pure, clock passed in.

    Each interval is drawn between 80% and 100% of ``interval`` (RFC 5626 4.4.1), so phones that started
    together do not ping in lockstep. Call :meth:`poll` at :meth:`next_deadline`; it returns ``"ping"`` (send
    one now) and/or ``"failed"`` (the pong we waited for did not come); call :meth:`pong` when it does, and
    :meth:`restart` after a new flow is up."""

    def __init__(self, interval: float, *, now: float, expect_pong: bool, pong_timeout: float = PONG_TIMEOUT,
                 rng: random.Random | None = None) -> None:
        if interval <= 0:
            raise ValueError("keep-alive interval must be positive")
        self.interval = interval
        self.expect_pong = expect_pong
        self.pong_timeout = pong_timeout
        self.rng = rng or random.Random()
        self.sent = 0
        self.failures = 0
        self.pong_due: float | None = None
        self.next_ping = now + self._draw()

    def _draw(self) -> float:
        return self.interval * self.rng.uniform(0.8, 1.0)

    def next_deadline(self) -> float:
        return self.next_ping if self.pong_due is None else min(self.next_ping, self.pong_due)

    def poll(self, now: float) -> list[str]:
        """What is due at ``now``: ``[]``, ``["ping"]``, ``["failed"]`` or both (failure first)."""
        out: list[str] = []
        if self.pong_due is not None and now >= self.pong_due:
            self.pong_due = None
            self.failures += 1
            out.append("failed")
        if now >= self.next_ping:
            self.next_ping = now + self._draw()
            self.sent += 1
            if self.expect_pong and self.pong_due is None:
                self.pong_due = now + self.pong_timeout
            out.append("ping")
        return out

    def pong(self) -> None:
        """The answer to our ping arrived: the flow is alive."""
        self.pong_due = None

    def restart(self, now: float) -> None:
        """A new flow: forget the pending pong, next ping one interval from now."""
        self.pong_due = None
        self.next_ping = now + self._draw()


class Phone:
    """One SIP phone on one UDP socket or one TCP/TLS flow. Create with :meth:`start`; finish with :meth:`close`."""

    def __init__(self, options: PhoneOptions) -> None:
        self.options = options
        self.ua: UserAgent | None = None
        self.endpoint: UdpEndpoint | None = None
        self.rtp: RtpPorts | None = None
        self.media_config: MediaConfig | None = None
        self.events: asyncio.Queue[PhoneEvent] = asyncio.Queue()
        self.sdp_session: LocalSession | None = None
        self.offer: SessionDescription | None = None
        self.negotiated: NegotiatedMedia | None = None
        self.media: MediaRunner | None = None
        self.media_session: MediaSession | None = None
        self.recorder: AudioWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._source: array | None = None
        self._pending_reoffer: SessionDescription | None = None  # our re-offer waiting for its answer
        self._loop = asyncio.get_running_loop()
        self.stream: SipStream | None = None
        self.flow_state = "udp" if options.transport == "udp" else "down"
        self.keepalive: KeepAlive | None = None
        self.stun_client: StunClient | None = None
        self._register_expires: int | None = None  # what to renew over a new flow
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._ssl: ssl.SSLContext | None = None
        self.call_peer: str | None = None  # who the current call is with (for displays)
        self.call_answered_at: float | None = None
        self._stun_answered = asyncio.Event()

    # ------------------------------------------------------------------ life cycle
    @classmethod
    async def start(cls, options: PhoneOptions) -> Phone:
        """Bind the SIP socket and the RTP pair. Raises OSError when the ports are taken, AudioFileError when
        ``play`` cannot be read."""
        self = cls(options)
        if options.transport not in DEFAULT_KEEPALIVE:
            raise ValueError(f"unknown transport {options.transport!r}")
        if options.play is not None:
            self._source = load_audio(options.play)  # AudioFileError before any socket is open
        if options.transport == "udp":
            self.endpoint = await open_udp(options.local_host, options.local_port, self._on_datagram,
                                           self._dispatch)
            self.endpoint.clock = self._loop.time
            local = self.endpoint.address
        else:
            if options.server is None:
                raise ValueError(f"{options.transport.upper()} needs --server (the phone keeps one flow to it)")
            if options.transport == "tls":
                self._ssl = tls_client_context(options.ca_file, insecure=options.insecure)
            self.stream = await self._connect(options.local_port)
            local = self.stream.local
        self.ua = UserAgent(UaConfig(user=options.user, local=(local[0], local[1]), password=options.password,
                                     server=options.server, domain=options.domain, transport=options.transport))
        self.rtp = await open_rtp_ports(options.local_host, options.rtp_port)
        self.media_config = MediaConfig(address=options.local_host, port=self.rtp.port, codecs=options.codecs,
                                        srtp=options.srtp)  # type: ignore[arg-type]
        interval = options.keepalive if options.keepalive is not None else DEFAULT_KEEPALIVE[options.transport]
        if options.server is not None and interval > 0:
            self.keepalive = KeepAlive(interval, now=self._now(), expect_pong=self.stream is not None)
        if options.stun is not None:
            await self._start_stun(options.stun)
        self._arm()
        return self

    async def _connect(self, local_port: int = 0) -> SipStream:
        """Open the flow to the server (its alternates in turn). Raises OSError / ssl.SSLError."""
        o = self.options
        assert o.server is not None
        stream = await SipStream.connect(
            o.transport, [o.server, *o.server_alternates], self._on_datagram, ssl_context=self._ssl,
            server_hostname=o.server_name or o.server[0], local_host=o.local_host, local_port=local_port,
            on_closed=self._on_flow_closed, on_pong=self._on_pong)
        self.flow_state = "up"
        return stream

    async def _start_stun(self, server: tuple[str, int]) -> None:
        """Resolve the STUN server and send the first Binding request from the RTP socket."""
        assert self.rtp is not None
        family = socket.AF_INET6 if ":" in self.options.local_host else socket.AF_INET
        infos = await self._loop.getaddrinfo(server[0], server[1], family=family, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"STUN server {server[0]} does not resolve")
        address = infos[0][4]
        client = StunClient((str(address[0]), int(address[1])), refresh=self.options.stun_refresh)
        client.on_change = self._on_stun_mapping
        self.stun_client = client
        self.rtp.stun = self._on_stun_datagram
        self._stun_answered = asyncio.Event()
        self._send_stun(client.start(self._now()))
        self._arm()
        # The first offer should already carry the mapping: wait for the first answer, but not for the whole
        # 39.5 s transaction -- a dead STUN server must not stop the phone from starting.
        try:
            await asyncio.wait_for(self._stun_answered.wait(), STUN_START_WAIT)
        except TimeoutError:
            log.info("event=stun_pending reason='no answer within %.0f s; local address until then'",
                     STUN_START_WAIT)

    async def close(self) -> None:
        self._closing = True
        await self._stop_media()
        if self._timer is not None:
            self._timer.cancel()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.rtp is not None:
            self.rtp.close()
        if self.endpoint is not None and self.endpoint.transport is not None:
            self.endpoint.transport.close()
        if self.stream is not None:
            self.stream.close()

    @property
    def address(self) -> tuple[str, int]:
        """Our SIP address: the UDP socket's, or the local end of the flow to the server."""
        if self.ua is not None:
            return self.ua.config.local
        assert self.endpoint is not None
        return self.endpoint.address

    @property
    def advertised_media(self) -> tuple[str, int]:
        """The RTP address our SDP announces: the STUN mapping when there is one, else the local socket's."""
        config = self._config()
        return config.address, config.port

    # ------------------------------------------------------------------ the shell
    def _on_datagram(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                     conn_id: str | None) -> list[Send]:
        if sip_log.isEnabledFor(logging.DEBUG):
            sip_log.debug("recv from %s:%s\n%s", source[0], source[1], data.decode("latin-1", "replace"))
        assert self.ua is not None
        self._handle(self.ua.receive(data, source, now))
        return []

    def _dispatch(self, sends: list[Send]) -> None:
        for s in sends:
            if sip_log.isEnabledFor(logging.DEBUG):
                where = f"{s.dest[0]}:{s.dest[1]}" if self.stream is None else f"{self.stream.conn_id} (flow)"
                sip_log.debug("send to %s\n%s", where, s.data.decode("latin-1", "replace"))
            if self.stream is not None:
                # every next hop of a stream phone is its server: the one flow carries everything
                if not self.stream.send(s.data):
                    log.info("event=send_failed reason='flow down'")
            else:
                assert self.endpoint is not None
                self.endpoint.sendto(s.data, s.dest)

    def _now(self) -> float:
        return self._loop.time()

    def _handle(self, outputs: list[Output]) -> None:
        """Send what the core produced, act on its events, re-arm the one timer."""
        sends = [o for o in outputs if isinstance(o, Send)]
        if sends:
            self._dispatch(sends)
        for o in outputs:
            if not isinstance(o, Send):
                self._on_event(o)
        self._arm()

    def _arm(self) -> None:
        """ONE timer for the SIP core, the keep-alive and STUN: the earliest of their deadlines."""
        assert self.ua is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [self.ua.next_deadline()]
        if self.keepalive is not None:
            deadlines.append(self.keepalive.next_deadline())
        if self.stun_client is not None:
            deadlines.append(self.stun_client.next_deadline())
        due = [d for d in deadlines if d is not None]
        if due and not self._closing:
            self._timer = self._loop.call_at(min(due), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.ua is not None
        now = self._now()
        if self.stun_client is not None:
            self._send_stun(self.stun_client.handle_timer(now))
        if self.keepalive is not None:
            for action in self.keepalive.poll(now):
                if action == "failed":
                    log.info("event=keepalive_failed reason='no pong within %.0f s'", self.keepalive.pong_timeout)
                    if self.stream is not None:
                        self.stream.close()
                        self._on_flow_closed("no pong")
                elif action == "ping":
                    self._send_keepalive()
        self._handle(self.ua.handle_timers(now))

    # ------------------------------------------------------------------ keep-alive and flow recovery
    def _send_keepalive(self) -> None:
        o = self.options
        assert o.server is not None and self.ua is not None
        if self.stream is not None:
            if self.flow_state == "up":
                self.stream.ping()
        elif o.keepalive_method == "options":
            host, port = o.server
            host = f"[{host}]" if ":" in host else host
            self._handle(self.ua.options(f"sip:{host}:{port}", now=self._now()))
        else:
            assert self.endpoint is not None
            self.endpoint.sendto(b"\r\n\r\n", o.server)  # RFC 5626 3.5.1 CRLF keep-alive

    def _on_pong(self) -> None:
        if self.keepalive is not None:
            self.keepalive.pong()

    def _on_flow_closed(self, reason: str) -> None:
        if self._closing or self.flow_state == "reconnecting":
            return
        self.flow_state = "reconnecting"
        log.info("event=flow_lost reason=%r", reason)
        self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Open a new flow with backoff (1 s doubling to 30 s, RFC 5626 4.5 in spirit), then renew the
        registration over it: the registrar reaches us through the connection we register on."""
        delay = 1.0
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                stream = await self._connect()
            except (OSError, ssl.SSLError) as exc:
                log.info("event=reconnect_failed error=%r retry_in=%.0f", exc, min(delay * 2, 30.0))
                delay = min(delay * 2, 30.0)
                continue
            self.stream = stream
            assert self.ua is not None
            self.ua.config = replace(self.ua.config, local=stream.local)
            log.info("event=flow_restored local=%s:%s", *stream.local)
            if self.keepalive is not None:
                self.keepalive.restart(self._now())
            if self._register_expires is not None:
                try:
                    self._run(self.ua.register, self._register_expires)
                except UaError as exc:  # a REGISTER is still pending on the dead flow; its refresh follows
                    log.info("event=reregister_deferred reason=%r", str(exc))
            self._arm()
            return

    # ------------------------------------------------------------------ STUN
    def _send_stun(self, datagrams: list[bytes]) -> None:
        if datagrams and self.rtp is not None and self.stun_client is not None:
            for data in datagrams:
                self.rtp.rtp.sendto(data, self.stun_client.server)

    def _on_stun_datagram(self, data: bytes, source: tuple[str, int], now: float) -> bool:
        assert self.stun_client is not None
        consumed = self.stun_client.receive(data, source, now)
        if consumed:
            if self.stun_client.state != "querying":
                self._stun_answered.set()
            self._arm()
        return consumed

    def _on_stun_mapping(self, mapped: tuple[str, int] | None) -> None:
        """A new public address: announce it in the next SDP (not mid-call: refreshes pause during calls)."""
        assert self.media_config is not None and self.rtp is not None
        address, port = mapped if mapped is not None else (self.options.local_host, self.rtp.port)
        self.media_config = replace(self.media_config, address=address, port=port)

    def _run(self, command: Callable[..., list[Output]], *args: object) -> None:
        self._handle(command(*args, now=self._now()))

    # ------------------------------------------------------------------ events
    def _on_event(self, event: UaEvent) -> None:
        log.info("event=%s %s", type(event).__name__, _describe(event))
        if isinstance(event, IncomingCall):
            self.call_peer = event.caller
            if self.stun_client is not None:
                self.stun_client.pause()
        if isinstance(event, CallEstablished) and self.call_answered_at is None:
            self.call_answered_at = self._now()
        if isinstance(event, CallEnded):
            self.call_answered_at = None
            if self.stun_client is not None:
                self._send_stun(self.stun_client.resume(self._now()))
        if isinstance(event, CallEstablished):
            if self.negotiated is None and self.offer is not None:
                # we were the caller: the 2xx carries the answer to our offer
                try:
                    self.negotiated = process_answer(self.offer, parse_sdp(event.remote_sdp), self._config())
                except SdpError as exc:
                    self._media_failed(str(exc.reason))
                    return
            self._start_media()
        elif isinstance(event, OfferReceived):
            self._answer_reoffer(event.remote_sdp)
            return  # handled inside the phone; CallUpdated follows on the ACK
        elif isinstance(event, CallUpdated):
            self._apply_update(event.remote_sdp)
        elif isinstance(event, CallEnded):
            self._loop.create_task(self._stop_media())
        self.events.put_nowait(event)

    def _media_failed(self, reason: str) -> None:
        log.info("event=media_failed reason=%r", reason)
        assert self.ua is not None
        self.events.put_nowait(MediaFailed(reason=reason))
        self._run(self.ua.hangup)

    def _config(self) -> MediaConfig:
        assert self.media_config is not None
        return self.media_config

    # ------------------------------------------------------------------ media
    def _start_media(self) -> None:
        if self.negotiated is None or self.rtp is None:
            return
        session = MediaSession(self.negotiated, source=self._source, cname=f"{self.options.user}@leansip")
        self.media_session = session
        if self.options.record is not None and self.recorder is None:
            self.recorder = AudioWriter(self.options.record)
        sink: Callable[[array], None] | None = self.recorder.write if self.recorder is not None else None
        if self.options.sound_card:
            sink = _sound_card_sink(sink)
        self.media = MediaRunner(self.rtp, session, sink)
        self.media.start()
        log.info("event=media_started codec=%s remote=%s:%s srtp=%s direction=%s", self.negotiated.codec,
                 self.negotiated.remote_address, self.negotiated.remote_port, session.srtp_active,
                 self.negotiated.direction)

    async def _stop_media(self) -> None:
        if self.media is not None:
            media, self.media = self.media, None
            await media.stop()
            s = media.session.stats
            log.info("event=media_stopped sent=%d received=%d dropped=%d srtp_failures=%d rtcp_sent=%d",
                     s.sent_packets, s.received_packets, s.dropped, s.srtp_failures, s.rtcp_sent)
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def _answer_reoffer(self, remote_sdp: bytes) -> None:
        assert self.ua is not None and self.sdp_session is not None
        try:
            answer, media = self.sdp_session.answer(parse_sdp(remote_sdp), self._config())
        except SdpError as exc:
            log.info("event=reoffer_refused reason=%r", exc.reason)
            self._run(self.ua.reject, exc.status if exc.status >= 400 else 488)
            return
        self.negotiated = media
        self._run(self.ua.answer, bytes(answer))

    def _apply_update(self, remote_sdp: bytes) -> None:
        """After a re-INVITE: the negotiated stream changes (hold/resume) without restarting the stream."""
        if self._pending_reoffer is not None:
            try:
                self.negotiated = process_answer(self._pending_reoffer, parse_sdp(remote_sdp), self._config())
            except SdpError as exc:
                self._pending_reoffer = None
                self._media_failed(str(exc.reason))
                return
            self._pending_reoffer = None
        if self.media_session is not None and self.negotiated is not None:
            self.media_session.update(self.negotiated)
            log.info("event=media_updated direction=%s remote_hold=%s", self.negotiated.direction,
                     self.negotiated.remote_hold)

    # ------------------------------------------------------------------ commands
    def register(self, expires: int) -> None:
        assert self.ua is not None
        self._register_expires = expires
        self._run(self.ua.register, expires)

    def unregister(self) -> None:
        assert self.ua is not None
        self._register_expires = None
        self._run(self.ua.unregister)

    def call(self, target: str) -> None:
        """Call ``target`` (a sip: URI) with our offer."""
        assert self.ua is not None
        if self.stun_client is not None:
            self.stun_client.pause()  # the media address must not change during the call
        self.call_peer = target
        self.call_answered_at = None
        self.sdp_session = LocalSession(username=self.options.user, address=self._config().address)
        self.negotiated = None
        self.offer = self.sdp_session.offer(self._config())
        self._run(self.ua.invite, target, bytes(self.offer))

    def answer(self, remote_sdp: bytes) -> bool:
        """Answer the ringing call; False (and a 488) when its offer is unacceptable."""
        assert self.ua is not None
        self.sdp_session = LocalSession(username=self.options.user, address=self._config().address)
        try:
            answer, media = self.sdp_session.answer(parse_sdp(remote_sdp), self._config())
        except SdpError as exc:
            status = exc.status if exc.status >= 400 else 488
            log.info("event=offer_refused status=%d reason=%r", status, exc.reason)
            self.events.put_nowait(MediaFailed(reason=exc.reason))
            self._run(self.ua.reject, status)
            return False
        self.offer = None
        self.negotiated = media
        self._run(self.ua.answer, bytes(answer))
        return True

    def reject(self, status: int = 486) -> None:
        assert self.ua is not None
        self._run(self.ua.reject, status)

    def hangup(self) -> None:
        assert self.ua is not None
        self._run(self.ua.hangup)

    def hold(self, on: bool = True) -> None:
        """Re-INVITE with a=sendonly (hold) or a=sendrecv (resume), RFC 3264 8.4."""
        assert self.ua is not None and self.sdp_session is not None
        config = replace(self._config(), direction="sendonly" if on else "sendrecv")
        self._pending_reoffer = self.sdp_session.offer(config)
        self._run(self.ua.reinvite, bytes(self._pending_reoffer))

    async def next_event(self, timeout: float | None = None) -> PhoneEvent | None:
        """The next event, or None after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None


def _describe(event: UaEvent) -> str:
    if isinstance(event, IncomingCall):
        return f"from={event.caller!r}"
    if isinstance(event, CallEnded):
        return f"reason={event.reason!r} status={event.status}"
    fields = getattr(event, "__slots__", ())
    return " ".join(f"{f}={getattr(event, f)!r}" for f in fields if f not in ("remote_sdp",))


def _sound_card_sink(inner: Callable[[array], None] | None) -> Callable[[array], None] | None:
    """Also play received audio on the default sound card when ``sounddevice`` is importable; optional."""
    try:
        import sounddevice  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - depends on the machine
        log.info("event=no_sound_card reason='sounddevice not installed'")
        return inner
    stream = sounddevice.RawOutputStream(samplerate=8000, channels=1, dtype="int16")  # pragma: no cover
    stream.start()  # pragma: no cover

    def sink(samples: array) -> None:  # pragma: no cover
        stream.write(samples.tobytes())
        if inner is not None:
            inner(samples)

    return sink  # pragma: no cover
