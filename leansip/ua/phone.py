"""The phone: the asyncio shell that joins the SIP core (:class:`~leansip.ua.useragent.UserAgent`), SDP offer/answer
(:mod:`leansip.ua.sdp`) and media (:mod:`leansip.io.rtp`), and the public API for voice applications.

Theory of operation
-------------------
The shell is thin on purpose: datagrams go into ``UserAgent.receive``, the outputs come back as sends (written to
the socket) and events (acted on here -- start/stop/update media, answer re-offers -- then queued for the
application). ONE loop timer is re-armed to ``UserAgent.next_deadline()`` after every call into the core
(aioquic's ``transmit``).

Applications see two objects (both exported by :mod:`leansip.ua`):

* :class:`Phone` -- one SIP identity on one socket or flow: :meth:`Phone.start`, :meth:`Phone.register`,
  :meth:`Phone.call` / :meth:`Phone.dial` to call out, :meth:`Phone.next_call` for calls in, every event of every
  call through :meth:`Phone.events` (an async iterator) or :meth:`Phone.next_event`, :meth:`Phone.close`;
* :class:`PhoneCall` -- one call: ``answer``, ``reject``, ``hangup``, ``hold``, ``play`` a file or PCM,
  ``play_frames`` from an async iterator, ``start_recording``, ``frames`` (the received audio as an async
  iterator of 20 ms frames), ``send_dtmf`` / ``read_digits``, ``transfer`` (blind) and ``transfer_to`` (attended),
  and its own ``events``.

Several calls can exist at once (a transfer needs two). The first call uses the RTP port pair opened at start
(``rtp_port``, and the STUN mapping when there is one); a call made while another one is up opens its own pair.

Transports: UDP (one socket), or TCP/TLS over ONE connection to the server (:class:`leansip.io.sipstream.SipStream`,
RFC 5626 flow reuse: the server sends its requests to us back on the connection we registered over). A lost
flow is opened again with backoff and the registration renewed over it.

NAT traversal: a keep-alive to the server every ``keepalive`` seconds (:class:`KeepAlive`: CRLFCRLF or OPTIONS
over UDP; over a stream a CRLFCRLF ping whose CRLF pong must come back within 10 s, else the flow has failed,
RFC 5626 4.4.1), and with ``stun`` the public RTP address learned from the RTP socket
(:class:`leansip.ua.stun_client.StunClient`) goes into our SDP.

Layout: this module is the shell around one identity and one flow (:class:`Phone`, :class:`PhoneOptions`) and
the public home of the names it exported before; one call's API and media (:class:`PhoneCall`, the phone's
errors and :class:`MediaFailed`) are in :mod:`leansip.ua.phonecall`, the keep-alive timing in
:mod:`leansip.ua.keepalive`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from array import array
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path

from leansip.io.rtp import RtpPorts, open_rtp_ports
from leansip.io.sipstream import SipStream, tls_client_context
from leansip.io.udp import UdpEndpoint, open_udp
from leansip.io.webrtc import WebRtcError, WebRtcMedia
from leansip.media.audiofile import AudioWriter, load_audio
from leansip.sip.send import Send
from leansip.ua.keepalive import DEFAULT_KEEPALIVE, PONG_TIMEOUT, KeepAlive
from leansip.ua.phonecall import (
    EVENT_QUEUE_MAX,
    CallFailed,
    MediaFailed,
    PhoneCall,
    PhoneError,
    PhoneEvent,
    _get,
    _offer,
)
from leansip.ua.sdp import (
    LocalSession,
    MediaConfig,
    SdpError,
    parse_sdp,
    process_answer,
)
from leansip.ua.session import MediaSession
from leansip.ua.stun_client import StunClient
from leansip.ua.useragent import (
    CallEnded,
    CallEstablished,
    CallUpdated,
    DtmfReceived,
    IncomingCall,
    OfferReceived,
    OptionsResult,
    Output,
    Registered,
    RegistrationFailed,
    TransferProgress,
    TransferRequested,
    UaConfig,
    UaError,
    Unregistered,
    UserAgent,
)

__all__ = [
    "PhoneOptions",
    "Phone",
    "PhoneCall",
    "PhoneEvent",
    "PhoneError",
    "CallFailed",
    "RegistrationError",
    "MediaFailed",
    "KeepAlive",
    "DEFAULT_KEEPALIVE",
    "PONG_TIMEOUT",
]

log = logging.getLogger("leansip.phone")
sip_log = logging.getLogger("leansip.phone.sip")

#: ended calls kept in :attr:`Phone.calls`
KEEP_ENDED = 8


class RegistrationError(PhoneError):
    """The registrar refused us or did not answer: ``status`` 401/403 (credentials), 408 (no answer) ..."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"registration failed: {status} {reason}")
        self.status = status
        self.reason = reason


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
    #: how many incoming calls may exist at once (one more gets 486 Busy Here)
    max_calls: int = 1
    #: when the peer asks us to transfer (REFER), call the target at once (what a desk phone does)
    follow_transfers: bool = True
    #: how digits go: "auto" (RFC 4733 when the answer agreed on telephone-event, else SIP INFO), "rfc4733",
    #: or "info"
    dtmf_mode: str = "auto"
    #: offer WebRTC media (ICE, DTLS-SRTP, Opus; aiortc) in our calls; a WebRTC offer is answered so anyway
    webrtc: bool = False


#: How long :meth:`Phone.start` waits for the first STUN answer before going on with the local address.
STUN_START_WAIT = 3.0



class Phone:
    """One SIP phone on one UDP socket or one TCP/TLS flow. Create with :meth:`start` (or ``async with
    await Phone.start(...)``); finish with :meth:`close`. See the module docstring."""

    def __init__(self, options: PhoneOptions) -> None:
        self.options = options
        self.ua: UserAgent | None = None
        self.endpoint: UdpEndpoint | None = None
        self.rtp: RtpPorts | None = None  # the pair opened at start (first call; the STUN mapping's)
        self._rtp_user: PhoneCall | None = None
        self.media_config: MediaConfig | None = None
        self._event_queue: asyncio.Queue[PhoneEvent] = asyncio.Queue(EVENT_QUEUE_MAX)
        self.calls: dict[str, PhoneCall] = {}
        self.current: PhoneCall | None = None  # the call made or received last
        self._incoming: asyncio.Queue[PhoneCall] = asyncio.Queue(EVENT_QUEUE_MAX)
        self.source: array | None = None  # options.play, loaded once, played at the start of every call
        self.recorder: AudioWriter | None = None  # options.record: what the current call's peer says
        self._sound_sink: Callable[[array], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.stream: SipStream | None = None
        self.flow_state = "udp" if options.transport == "udp" else "down"
        self.keepalive: KeepAlive | None = None
        self.stun_client: StunClient | None = None
        self._register_expires: int | None = None  # what to renew over a new flow
        self._reconnect_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._closing = False
        self._ssl: ssl.SSLContext | None = None
        self._stun_answered = asyncio.Event()

    # ------------------------------------------------------------------ life cycle
    @classmethod
    async def start(cls, options: PhoneOptions) -> Phone:
        """Bind the SIP socket (or connect the flow) and the RTP pair. Raises OSError when the ports are taken,
        :class:`~leansip.media.audiofile.AudioFileError` when ``play`` cannot be read or ``record`` written."""
        self = cls(options)
        if options.transport not in DEFAULT_KEEPALIVE:
            raise ValueError(f"unknown transport {options.transport!r}")
        if options.dtmf_mode not in ("auto", "rfc4733", "info"):
            raise ValueError(f"unknown DTMF mode {options.dtmf_mode!r}")
        if options.play is not None:
            self.source = load_audio(options.play)  # AudioFileError before any socket is open
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
                                     server=options.server, domain=options.domain, transport=options.transport,
                                     max_calls=options.max_calls))
        self.rtp = await open_rtp_ports(options.local_host, options.rtp_port)
        self.media_config = MediaConfig(address=options.local_host, port=self.rtp.port, codecs=options.codecs,
                                        srtp=options.srtp)  # type: ignore[arg-type]
        if options.record is not None:
            self.recorder = AudioWriter(options.record)
        if options.sound_card:
            self._sound_sink = _sound_card_sink()
        interval = options.keepalive if options.keepalive is not None else DEFAULT_KEEPALIVE[options.transport]
        if options.server is not None and interval > 0:
            self.keepalive = KeepAlive(interval, now=self._now(), expect_pong=self.stream is not None)
        if options.stun is not None:
            await self._start_stun(options.stun)
        self._arm()
        return self

    async def __aenter__(self) -> Phone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        """Stop every call's media and close the sockets (hang up and unregister first if that matters)."""
        self._closing = True
        for call in list(self.calls.values()):
            await call._stop_media()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self._timer is not None:
            self._timer.cancel()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        for task in list(self._tasks):
            task.cancel()
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
        config = self._media_config(self.rtp)
        return config.address, config.port

    @property
    def media_session(self) -> MediaSession | None:
        """The current call's media session (None without media)."""
        return self.current.session if self.current is not None else None

    @property
    def call_peer(self) -> str | None:
        return self.current.peer if self.current is not None else None

    @property
    def call_answered_at(self) -> float | None:
        return self.current.answered_at if self.current is not None else None

    def _ua(self) -> UserAgent:
        assert self.ua is not None, "Phone.start() first"
        return self.ua

    # ------------------------------------------------------------------ the shell
    def _on_datagram(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                     conn_id: str | None) -> list[Send]:
        if sip_log.isEnabledFor(logging.DEBUG):
            sip_log.debug("recv from %s:%s\n%s", source[0], source[1], data.decode("latin-1", "replace"))
        self._handle(self._ua().receive(data, source, now))
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadlines = [self._ua().next_deadline()]
        if self.keepalive is not None:
            deadlines.append(self.keepalive.next_deadline())
        if self.stun_client is not None:
            deadlines.append(self.stun_client.next_deadline())
        due = [d for d in deadlines if d is not None]
        if due and not self._closing:
            self._timer = self._loop.call_at(min(due), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
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
        self._handle(self._ua().handle_timers(now))

    def _run(self, command: Callable[..., list[Output]], *args: object, **kwargs: object) -> None:
        self._handle(command(*args, now=self._now(), **kwargs))

    def _command(self, call: PhoneCall, command: Callable[..., list[Output]], *args: object,
                 **kwargs: object) -> None:
        self._run(command, *args, call_id=call.id, **kwargs)

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[object] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ keep-alive and flow recovery
    def _send_keepalive(self) -> None:
        o = self.options
        assert o.server is not None
        if self.stream is not None:
            if self.flow_state == "up":
                self.stream.ping()
        elif o.keepalive_method == "options":
            host, port = o.server
            host = f"[{host}]" if ":" in host else host
            self._handle(self._ua().options(f"sip:{host}:{port}", now=self._now()))
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
            ua = self._ua()
            ua.config = replace(ua.config, local=stream.local)
            log.info("event=flow_restored local=%s:%s", *stream.local)
            if self.keepalive is not None:
                self.keepalive.restart(self._now())
            if self._register_expires is not None:
                try:
                    self._run(ua.register, self._register_expires)
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

    # ------------------------------------------------------------------ RTP pairs
    async def _rtp_for_call(self) -> tuple[RtpPorts, bool]:
        """The start pair when no other call holds it, else a new pair (True: opened for the call)."""
        holder = self._rtp_user
        if holder is None or holder.ended is not None:
            assert self.rtp is not None
            return self.rtp, False
        return await open_rtp_ports(self.options.local_host, 0), True

    def _claim_rtp(self, call: PhoneCall) -> None:
        if call.rtp is self.rtp:
            self._rtp_user = call
            if self.stun_client is not None:
                self.stun_client.pause()  # the media address must not change during the call

    def _release_rtp(self, call: PhoneCall) -> None:
        if self._rtp_user is call:
            self._rtp_user = None
            if self.stun_client is not None:
                self._send_stun(self.stun_client.resume(self._now()))

    def _media_config(self, rtp: RtpPorts | None) -> MediaConfig:
        """Our SDP's media: the start pair's (with its STUN mapping) or another pair's local address."""
        assert self.media_config is not None
        if rtp is None or rtp is self.rtp:
            return self.media_config
        return replace(self.media_config, address=self.options.local_host, port=rtp.port)

    # ------------------------------------------------------------------ events
    def _emit(self, event: PhoneEvent) -> None:
        """Queue an event for the application: the phone's stream and the call's own."""
        _offer(self._event_queue, event)
        call = self.calls.get(_call_of(event))
        if call is not None:
            _offer(call._events, event)

    def _deliver(self, event: PhoneEvent) -> None:
        """An event from the media side (digits): logged and queued like the core's."""
        self._on_event(event)

    def _on_event(self, event: PhoneEvent) -> None:
        log.info("event=%s %s", type(event).__name__, _describe(event))
        call = self.calls.get(_call_of(event))
        if isinstance(event, IncomingCall):
            call = PhoneCall(self, event.call_id, direction="incoming", peer=event.caller,
                             remote_offer=event.remote_sdp, replaces=event.replaces)
            self.calls[call.id] = call
            self.current = call
            if event.replaces is not None:
                # an attended transfer's INVITE with Replaces: the user already talks in the replaced call
                self._spawn(self._answer_replacing(call))
            else:
                _offer(self._incoming, call)
        elif call is None:
            pass  # registration events, OPTIONS results
        elif isinstance(event, CallEstablished) and call.webrtc is not None:
            if call.answered_at is None:
                call.answered_at = self._now()
            if call.direction == "outgoing":
                self._spawn(self._accept_webrtc(call, event.remote_sdp))
            log.info("event=media_started profile=webrtc call=%s", call.id)
            call._established.set()
        elif isinstance(event, CallEstablished):
            if call.answered_at is None:
                call.answered_at = self._now()
            if call.negotiated is None and call.offer is not None:
                # we were the caller: the 2xx carries the answer to our offer
                try:
                    call.negotiated = process_answer(call.offer, parse_sdp(event.remote_sdp),
                                                     self._media_config(call.rtp))
                except SdpError as exc:
                    self._media_failed(call, str(exc.reason))
                    return
            call._start_media()
            call._established.set()
        elif isinstance(event, OfferReceived) and call.webrtc is not None:
            log.info("event=reoffer_refused call=%s reason='re-INVITE on a WebRTC call'", call.id)
            self._command(call, self._ua().reject, 488)
            return
        elif isinstance(event, OfferReceived):
            self._answer_reoffer(call, event.remote_sdp)
            return  # handled inside the phone; CallUpdated follows on the ACK
        elif isinstance(event, CallUpdated):
            self._apply_update(call, event.remote_sdp)
        elif isinstance(event, CallEnded):
            call.ended = event
            call._ended.set()
            self._spawn(call._stop_media())
            self._forget_ended()
        elif isinstance(event, DtmfReceived):
            _offer(call._digits, event.digit)
        elif isinstance(event, TransferRequested):
            call.pending_transfer = event
            if self.options.follow_transfers:
                self._spawn(self._follow(call))
        elif isinstance(event, TransferProgress):
            done = call._transfer_done
            if event.final and done is not None and not done.done():
                done.set_result(event)
        self._emit(event)

    def _forget_ended(self) -> None:
        """Keep the last :data:`KEEP_ENDED` ended calls in :attr:`calls` (a long-running application makes calls
        without end; the objects it still holds stay usable)."""
        ended = [key for key, c in self.calls.items() if c.ended is not None and c is not self.current]
        for key in ended[:max(0, len(ended) - KEEP_ENDED)]:
            del self.calls[key]

    async def _accept_webrtc(self, call: PhoneCall, remote_sdp: bytes) -> None:
        assert call.webrtc is not None
        try:
            await call.webrtc.accept(remote_sdp)
        except WebRtcError as exc:
            self._media_failed(call, str(exc))

    def _webrtc_media(self, call: PhoneCall) -> WebRtcMedia:
        """WebRTC media for ``call`` on our address (raises :class:`WebRtcError` without aiortc)."""
        media = WebRtcMedia(local_host=self.options.local_host, on_frame=call._on_frame,
                            on_played=call._on_played, stun=self.options.stun)
        if self.source is not None:
            media.clips.play(self.source)
        return media

    async def _answer_replacing(self, call: PhoneCall) -> None:
        try:
            await call.answer()
        except PhoneError as exc:
            log.info("event=replace_failed call=%s reason=%r", call.id, str(exc))

    async def _follow(self, call: PhoneCall) -> None:
        try:
            new = await call.follow_transfer()
        except (PhoneError, UaError, OSError) as exc:
            log.info("event=transfer_not_followed call=%s reason=%r", call.id, str(exc))
            return
        log.info("event=transfer_followed call=%s new_call=%s target=%s", call.id, new.id, new.peer)

    def _media_failed(self, call: PhoneCall, reason: str) -> None:
        log.info("event=media_failed call=%s reason=%r", call.id, reason)
        call.media_failure = reason
        self._emit(MediaFailed(reason=reason, call_id=call.id))
        self._command(call, self._ua().hangup)

    def _answer_reoffer(self, call: PhoneCall, remote_sdp: bytes) -> None:
        ua = self._ua()
        if call.sdp_session is None:
            call.sdp_session = LocalSession(username=self.options.user, address=self._media_config(call.rtp).address)
        try:
            answer, media = call.sdp_session.answer(parse_sdp(remote_sdp), self._media_config(call.rtp))
        except SdpError as exc:
            log.info("event=reoffer_refused call=%s reason=%r", call.id, exc.reason)
            self._command(call, ua.reject, exc.status if exc.status >= 400 else 488)
            return
        call.negotiated = media
        self._command(call, ua.answer, bytes(answer))

    def _apply_update(self, call: PhoneCall, remote_sdp: bytes) -> None:
        """After a re-INVITE: the negotiated stream changes (hold/resume) without restarting the stream."""
        if call._pending_reoffer is not None:
            try:
                call.negotiated = process_answer(call._pending_reoffer, parse_sdp(remote_sdp),
                                                 self._media_config(call.rtp))
            except SdpError as exc:
                call._pending_reoffer = None
                self._media_failed(call, str(exc.reason))
                return
            call._pending_reoffer = None
        if call.session is not None and call.negotiated is not None:
            call.session.update(call.negotiated)
            log.info("event=media_updated direction=%s remote_hold=%s call=%s", call.negotiated.direction,
                     call.negotiated.remote_hold, call.id)

    # ------------------------------------------------------------------ commands
    def register(self, expires: int = 3600) -> None:
        """Send REGISTER (refreshed at half the granted time); :class:`Registered` or
        :class:`RegistrationFailed` follows. See :meth:`registered` to wait for it."""
        self._register_expires = expires
        self._run(self._ua().register, expires)

    async def registered(self, expires: int = 3600, *, timeout: float = 40.0) -> Registered:
        """Register and wait for the answer; raises :class:`RegistrationError`."""
        self.register(expires)
        deadline = self._now() + timeout
        while (left := deadline - self._now()) > 0:
            event = await self.next_event(left)
            if isinstance(event, Registered):
                return event
            if isinstance(event, RegistrationFailed):
                raise RegistrationError(event.status, event.reason)
        raise RegistrationError(408, "no answer from the registrar")

    def unregister(self) -> None:
        self._register_expires = None
        self._run(self._ua().unregister)

    async def dial(self, target: str, *, transfer_of: str | None = None) -> PhoneCall:
        """Call ``target`` (a sip: URI) with our offer and return the call at once; await
        :meth:`PhoneCall.wait_established` or read its events. Raises :class:`PhoneError` for a bad URI."""
        ua = self._ua()
        call = PhoneCall(self, "", direction="outgoing", peer=target, transferred_from=transfer_of)
        if self.options.webrtc:
            try:
                call.webrtc = self._webrtc_media(call)
                offer = await call.webrtc.offer()
            except WebRtcError as exc:
                raise PhoneError(str(exc)) from None
        else:
            await call._ensure_rtp()
            config = self._media_config(call.rtp)
            call.sdp_session = LocalSession(username=self.options.user, address=config.address)
            call.offer = call.sdp_session.offer(config)
            offer = bytes(call.offer)
        try:
            outputs = ua.invite(target, offer, now=self._now(), transfer_of=transfer_of)
        except UaError as exc:
            if call._own_rtp and call.rtp is not None:
                call.rtp.close()
            if call.webrtc is not None:
                await call.webrtc.close()
            raise PhoneError(str(exc)) from None
        assert ua.call is not None
        call.id = ua.call.call_id
        self.calls[call.id] = call
        self.current = call
        self._handle(outputs)
        return call

    async def call(self, target: str, *, timeout: float = 60.0) -> PhoneCall:
        """Call ``target`` and wait until it is answered. Raises :class:`CallFailed` (busy, declined, not found,
        no answer within ``timeout`` -- the call is cancelled then)."""
        call = await self.dial(target)
        if await call.wait_established(timeout):
            return call
        if call.ended is None:
            call.hangup()
            await call.wait_ended(40.0)
            raise CallFailed("no answer", None)
        ended = call.ended
        raise CallFailed(call.media_failure or ended.reason, ended.status)

    async def next_call(self, timeout: float | None = None) -> PhoneCall | None:
        """The next incoming call (ringing: answer or reject it), or None after ``timeout`` seconds."""
        while True:
            call = await _get(self._incoming, timeout)
            if call is None or call.ended is None:
                return call

    async def next_event(self, timeout: float | None = None) -> PhoneEvent | None:
        """The next event of the phone or any call, or None after ``timeout`` seconds."""
        return await _get(self._event_queue, timeout)

    async def events(self) -> AsyncIterator[PhoneEvent]:
        """Every event of the phone and its calls, as an async iterator (forever: break out of it). Share the
        stream with :meth:`next_event`: each event goes to one reader."""
        while True:
            yield await self._event_queue.get()

    # ------------------------------------------------------------------ the current call (CLI, TUI)
    def hangup(self) -> None:
        """Hang up the current call (see :meth:`PhoneCall.hangup`)."""
        if self.current is not None:
            self.current.hangup()

    def hold(self, on: bool = True) -> None:
        if self.current is None:
            raise PhoneError("no call")
        self.current.hold(on)


def _call_of(event: PhoneEvent) -> str:
    """The Call-ID an event belongs to; "" for the phone's own (registration, OPTIONS)."""
    if isinstance(event, Registered | RegistrationFailed | Unregistered | OptionsResult):
        return ""
    return event.call_id


def _describe(event: PhoneEvent) -> str:
    call_id = _call_of(event)
    call = f" call={call_id}" if call_id else ""
    if isinstance(event, IncomingCall):
        return f"from={event.caller!r}" + (f" replaces={event.replaces}" if event.replaces else "") + call
    if isinstance(event, CallEnded):
        return f"reason={event.reason!r} status={event.status}{call}"
    if isinstance(event, DtmfReceived):
        return f"digit={event.digit} duration_ms={event.duration_ms} via={event.via}{call}"
    fields = getattr(event, "__slots__", ())
    return " ".join(f"{f}={getattr(event, f)!r}" for f in fields if f not in ("remote_sdp", "call_id")) + call


def _sound_card_sink() -> Callable[[array], None] | None:
    """Play received audio on the default sound card when ``sounddevice`` is importable; optional."""
    try:
        import sounddevice  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - depends on the machine
        log.info("event=no_sound_card reason='sounddevice not installed'")
        return None
    stream = sounddevice.RawOutputStream(samplerate=8000, channels=1, dtype="int16")  # pragma: no cover
    stream.start()  # pragma: no cover

    def sink(samples: array) -> None:  # pragma: no cover
        stream.write(samples.tobytes())

    return sink  # pragma: no cover
