"""The phone: asyncio shell that joins the SIP core (:class:`~leansip.ua.useragent.UserAgent`), SDP offer/answer
(:mod:`leansip.ua.sdp`) and media (:mod:`leansip.io.rtp`).

It is thin on purpose: datagrams go into ``UserAgent.receive``, the outputs come back as sends (written to the
socket) and events (acted on here -- start/stop/update media -- then queued for the application). ONE loop
timer is re-armed to ``UserAgent.next_deadline()`` after every call into the core (aioquic's ``transmit``).

Applications (the CLI, the TUI) call the coroutine-free commands (:meth:`Phone.call`, :meth:`Phone.answer`,
:meth:`Phone.hangup` ...) and await :meth:`Phone.next_event`.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from leansip.io.rtp import MediaRunner, RtpPorts, open_rtp_ports
from leansip.io.udp import UdpEndpoint, open_udp
from leansip.media.wav import WavWriter, load_wav_8k
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
from leansip.ua.useragent import (
    CallEnded,
    CallEstablished,
    CallUpdated,
    IncomingCall,
    OfferReceived,
    Output,
    UaConfig,
    UaEvent,
    UserAgent,
)

__all__ = ["PhoneOptions", "Phone", "MediaFailed"]

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


class Phone:
    """One SIP phone on one UDP socket. Create with :meth:`start`; finish with :meth:`close`."""

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
        self.recorder: WavWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._source: array | None = None
        self._pending_reoffer: SessionDescription | None = None  # our re-offer waiting for its answer
        self._loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ life cycle
    @classmethod
    async def start(cls, options: PhoneOptions) -> Phone:
        """Bind the SIP socket and the RTP pair. Raises OSError when the ports are taken."""
        self = cls(options)
        self.endpoint = await open_udp(options.local_host, options.local_port, self._on_datagram, self._dispatch)
        self.endpoint.clock = self._loop.time
        local = self.endpoint.address
        self.ua = UserAgent(UaConfig(user=options.user, local=(local[0], local[1]), password=options.password,
                                     server=options.server, domain=options.domain))
        self.rtp = await open_rtp_ports(options.local_host, options.rtp_port)
        self.media_config = MediaConfig(address=options.local_host, port=self.rtp.port, codecs=options.codecs,
                                        srtp=options.srtp)  # type: ignore[arg-type]
        if options.play is not None:
            self._source = load_wav_8k(options.play)
        return self

    async def close(self) -> None:
        await self._stop_media()
        if self._timer is not None:
            self._timer.cancel()
        if self.rtp is not None:
            self.rtp.close()
        if self.endpoint is not None and self.endpoint.transport is not None:
            self.endpoint.transport.close()

    @property
    def address(self) -> tuple[str, int]:
        assert self.endpoint is not None
        return self.endpoint.address

    # ------------------------------------------------------------------ the shell
    def _on_datagram(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                     conn_id: str | None) -> list[Send]:
        if sip_log.isEnabledFor(logging.DEBUG):
            sip_log.debug("recv from %s:%s\n%s", source[0], source[1], data.decode("latin-1", "replace"))
        assert self.ua is not None
        self._handle(self.ua.receive(data, source, now))
        return []

    def _dispatch(self, sends: list[Send]) -> None:
        assert self.endpoint is not None
        for s in sends:
            if sip_log.isEnabledFor(logging.DEBUG):
                sip_log.debug("send to %s:%s\n%s", s.dest[0], s.dest[1], s.data.decode("latin-1", "replace"))
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
        assert self.ua is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.ua.next_deadline()
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self.ua is not None
        self._handle(self.ua.handle_timers(self._now()))

    def _run(self, command: Callable[..., list[Output]], *args: object) -> None:
        self._handle(command(*args, now=self._now()))

    # ------------------------------------------------------------------ events
    def _on_event(self, event: UaEvent) -> None:
        log.info("event=%s %s", type(event).__name__, _describe(event))
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
            self.recorder = WavWriter(self.options.record)
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
        self._run(self.ua.register, expires)

    def unregister(self) -> None:
        assert self.ua is not None
        self._run(self.ua.unregister)

    def call(self, target: str) -> None:
        """Call ``target`` (a sip: URI) with our offer."""
        assert self.ua is not None
        self.sdp_session = LocalSession(username=self.options.user, address=self.options.local_host)
        self.negotiated = None
        self.offer = self.sdp_session.offer(self._config())
        self._run(self.ua.invite, target, bytes(self.offer))

    def answer(self, remote_sdp: bytes) -> bool:
        """Answer the ringing call; False (and a 488) when its offer is unacceptable."""
        assert self.ua is not None
        self.sdp_session = LocalSession(username=self.options.user, address=self.options.local_host)
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
