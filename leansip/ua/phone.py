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
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from array import array
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from leansip.io.rtp import MediaRunner, RtpPorts, open_rtp_ports
from leansip.io.sipstream import SipStream, tls_client_context
from leansip.io.udp import UdpEndpoint, open_udp
from leansip.io.webrtc import WebRtcError, WebRtcMedia, is_webrtc_sdp
from leansip.media.audiofile import AudioWriter, load_audio
from leansip.media.clips import ClipQueue
from leansip.media.dtmf import DTMF_RELAY, DtmfDigit, DtmfError, check_digits, info_body
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
    CallState,
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
    UaEvent,
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

#: events kept for an application that does not read them (per queue); the oldest are dropped past this
EVENT_QUEUE_MAX = 1000
#: received 20 ms frames kept per :meth:`PhoneCall.frames` reader that falls behind (1 s)
FRAME_QUEUE_MAX = 50
#: :meth:`PhoneCall.play_frames` keeps at most this much audio queued ahead of the wire (samples, 0.5 s)
STREAM_AHEAD = 4000
#: ended calls kept in :attr:`Phone.calls`
KEEP_ENDED = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFailed:
    """SDP negotiation failed (no common codec, SRTP required but not offered): the call was refused or hung up."""

    reason: str
    call_id: str = ""


PhoneEvent = UaEvent | MediaFailed


class PhoneError(Exception):
    """A phone operation that cannot be done (no such call, nothing to answer, a bad digit)."""


class CallFailed(PhoneError):
    """A call did not come up: ``status`` is the SIP status that ended it (None: no answer at all)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"call failed: {reason}" + (f" ({status})" if status else ""))
        self.reason = reason
        self.status = status


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


#: Default keep-alive interval per transport: 25 s over UDP (shorter than the ~30 s UDP timeouts of many NATs),
#: RFC 5626 4.4.1's 95-120 s band (upper bound 120) over connections, whose NAT timeouts are much longer.
DEFAULT_KEEPALIVE = {"udp": 25.0, "tcp": 120.0, "tls": 120.0}
#: RFC 5626 4.4.1: no pong within 10 s means the flow has failed.
PONG_TIMEOUT = 10.0
#: How long :meth:`Phone.start` waits for the first STUN answer before going on with the local address.
STUN_START_WAIT = 3.0

_T = TypeVar("_T")


def _offer(queue: asyncio.Queue[_T], item: _T) -> None:
    """Put without blocking; a full queue loses its oldest item (a reader that never reads must not grow us)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


async def _get(queue: asyncio.Queue[_T], timeout: float | None) -> _T | None:
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        return None


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


class PhoneCall:
    """One call of a :class:`Phone`, made by :meth:`Phone.dial` or received (:meth:`Phone.next_call`).

    Commands that only send (``hangup``, ``reject``, ``hold``, ``send_dtmf``) return at once; the ones that wait
    for the peer are coroutines with a ``timeout``. ``id`` is the SIP Call-ID, the ``call_id`` of its events."""

    def __init__(self, phone: Phone, call_id: str, *, direction: str, peer: str, remote_offer: bytes = b"",
                 replaces: str | None = None, transferred_from: str | None = None) -> None:
        self.phone = phone
        self.id = call_id
        self.direction = direction  # "outgoing" or "incoming"
        self.peer = peer
        self.remote_offer = remote_offer
        self.replaces = replaces
        self.transferred_from = transferred_from
        self.rtp: RtpPorts | None = None
        self._own_rtp = False  # the pair was opened for this call (closed at its end)
        self.sdp_session: LocalSession | None = None
        self.offer: SessionDescription | None = None
        self.negotiated: NegotiatedMedia | None = None
        self.session: MediaSession | None = None
        self.media: MediaRunner | None = None
        self.webrtc: WebRtcMedia | None = None  # the call's media is WebRTC (aiortc) instead of our RTP
        self.recorder: AudioWriter | None = None
        self.answered_at: float | None = None
        self.ended: CallEnded | None = None
        self.media_failure: str | None = None
        self.pending_transfer: TransferRequested | None = None
        self._pending_reoffer: SessionDescription | None = None
        self._events: asyncio.Queue[PhoneEvent] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._established = asyncio.Event()
        self._ended = asyncio.Event()
        self._digits: asyncio.Queue[str] = asyncio.Queue(EVENT_QUEUE_MAX)
        self._played: dict[int, asyncio.Future[None]] = {}
        self._readers: list[asyncio.Queue[array | None]] = []
        self._transfer_done: asyncio.Future[TransferProgress] | None = None

    def __repr__(self) -> str:
        return f"<PhoneCall {self.id} {self.direction} {self.peer!r} {self.state}>"

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """idle, calling, ringing, incoming, connecting, in call, hanging up or ended."""
        ua = self.phone.ua
        call = ua.calls.get(self.id) if ua is not None else None
        if call is None or self.ended is not None:
            return "ended"
        return _STATE_NAMES.get(call.state, call.state.value)

    @property
    def established(self) -> bool:
        return self._established.is_set() and self.ended is None

    @property
    def srtp(self) -> bool:
        return self.webrtc is not None or (self.session is not None and self.session.srtp_active)

    # ------------------------------------------------------------------ answering and ending
    async def answer(self) -> None:
        """Answer this ringing call with our SDP. Raises :class:`CallFailed` (488) when its offer is unacceptable
        (the call is refused then) and :class:`PhoneError` when it is not ringing."""
        phone = self.phone
        if is_webrtc_sdp(self.remote_offer):
            await self._answer_webrtc()
            return
        await self._ensure_rtp()
        config = phone._media_config(self.rtp)
        self.sdp_session = LocalSession(username=phone.options.user, address=config.address)
        try:
            answer, media = self.sdp_session.answer(parse_sdp(self.remote_offer), config)
        except SdpError as exc:
            status = exc.status if exc.status >= 400 else 488
            log.info("event=offer_refused call=%s status=%d reason=%r", self.id, status, exc.reason)
            self.media_failure = exc.reason
            phone._emit(MediaFailed(reason=exc.reason, call_id=self.id))
            phone._command(self, phone._ua().reject, status)
            raise CallFailed(exc.reason, status) from None
        self.negotiated = media
        try:
            phone._command(self, phone._ua().answer, bytes(answer))
        except UaError as exc:
            raise PhoneError(str(exc)) from None

    async def _answer_webrtc(self) -> None:
        """A browser's offer (UDP/TLS/RTP/SAVPF): the media goes through aiortc."""
        phone = self.phone
        try:
            self.webrtc = phone._webrtc_media(self)
            answer = await self.webrtc.answer(self.remote_offer)
        except WebRtcError as exc:
            log.info("event=offer_refused call=%s status=488 reason=%r", self.id, str(exc))
            self.media_failure = str(exc)
            phone._emit(MediaFailed(reason=str(exc), call_id=self.id))
            phone._command(self, phone._ua().reject, 488)
            raise CallFailed(str(exc), 488) from None
        try:
            phone._command(self, phone._ua().answer, answer)
        except UaError as exc:
            raise PhoneError(str(exc)) from None

    def reject(self, status: int = 486) -> None:
        """Refuse this ringing call (486 Busy Here, 603 Decline ...)."""
        try:
            self.phone._command(self, self.phone._ua().reject, status)
        except UaError as exc:
            raise PhoneError(str(exc)) from None

    def hangup(self) -> None:
        """End the call whatever its state (CANCEL, 603 or BYE); nothing when it is over already."""
        self.phone._command(self, self.phone._ua().hangup)

    def hold(self, on: bool = True) -> None:
        """Re-INVITE with a=sendonly (hold) or a=sendrecv (resume), RFC 3264 8.4."""
        if self.webrtc is not None:
            raise PhoneError("hold is not offered on WebRTC calls")
        if self.sdp_session is None:
            raise PhoneError("the call has no media yet")
        config = replace(self.phone._media_config(self.rtp), direction="sendonly" if on else "sendrecv")
        self._pending_reoffer = self.sdp_session.offer(config)
        try:
            self.phone._command(self, self.phone._ua().reinvite, bytes(self._pending_reoffer))
        except UaError as exc:
            self._pending_reoffer = None
            raise PhoneError(str(exc)) from None

    async def wait_established(self, timeout: float | None = None) -> bool:
        """True once the call is up; False when it ended first or ``timeout`` passed."""
        waiters = [asyncio.ensure_future(self._established.wait()), asyncio.ensure_future(self._ended.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return self.established

    async def wait_ended(self, timeout: float | None = None) -> CallEnded | None:
        """The :class:`CallEnded` event once the call is over; None after ``timeout``."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            return None
        return self.ended

    # ------------------------------------------------------------------ events
    async def next_event(self, timeout: float | None = None) -> PhoneEvent | None:
        """This call's next event, or None after ``timeout`` seconds."""
        return await _get(self._events, timeout)

    async def events(self) -> AsyncIterator[PhoneEvent]:
        """This call's events until (and including) its :class:`CallEnded`."""
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, CallEnded):
                return

    # ------------------------------------------------------------------ audio
    async def play(self, source: str | Path | array, *, wait: bool = True, interrupt: bool = False) -> None:
        """Send an audio file (any format :func:`~leansip.media.audiofile.load_audio` reads) or 8 kHz mono int16
        samples after what is already playing (``interrupt``: instead of it). With ``wait`` return when it has
        been sent (or the call ended). Raises :class:`~leansip.media.audiofile.AudioFileError` for a bad file and
        :class:`PhoneError` when the call has no media."""
        samples = source if isinstance(source, array) else await asyncio.to_thread(load_audio, source)
        clip = self._clips().play(samples, interrupt=interrupt)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._played[clip] = done
        if wait:
            await self._until(done)

    async def play_frames(self, frames: AsyncIterable[array]) -> None:
        """Send a stream of 8 kHz mono int16 frames (any length) as it comes, keeping at most half a second
        queued ahead of the wire; returns when the stream ends and its audio has been sent."""
        clips = self._clips()
        last: asyncio.Future[None] | None = None
        async for frame in frames:
            if self.ended is not None:
                return
            while clips.queued_samples > STREAM_AHEAD and self.ended is None:
                await asyncio.sleep(0.02)
            clip = clips.play(frame)
            last = asyncio.get_running_loop().create_future()
            self._played[clip] = last
        if last is not None:
            await self._until(last)

    def stop_playing(self) -> None:
        """Drop what is queued to play; silence follows."""
        if self.session is not None or self.webrtc is not None:
            self._clips().stop_playing()

    def start_recording(self, path: str | Path) -> None:
        """Write what the peer says to ``path`` (.wav or .flac) from now until :meth:`stop_recording` or the end
        of the call. Raises :class:`~leansip.media.audiofile.AudioFileError`."""
        self.stop_recording()
        self.recorder = AudioWriter(path)

    def stop_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    async def frames(self) -> AsyncIterator[array]:
        """The received audio, one 160-sample (20 ms, 8 kHz mono int16) frame at a time, until the call ends.
        A reader that falls more than a second behind loses the oldest frames."""
        queue: asyncio.Queue[array | None] = asyncio.Queue(FRAME_QUEUE_MAX)
        self._readers.append(queue)
        try:
            while self.ended is None:
                frame = await queue.get()
                if frame is None:
                    return
                yield frame
        finally:
            self._readers.remove(queue)

    # ------------------------------------------------------------------ DTMF
    def send_dtmf(self, digits: str, *, duration_ms: int = 100) -> str:
        """Send ``digits`` (0-9 * # A-D): as RFC 4733 telephone-events when the call agreed on them (and the
        phone's ``dtmf_mode`` allows), else one SIP INFO (application/dtmf-relay) per digit. Returns the way used,
        ``"rfc4733"`` or ``"info"``. Raises :class:`PhoneError` for a bad digit or a call that is not up."""
        try:
            digits = check_digits(digits)
        except DtmfError as exc:
            raise PhoneError(str(exc)) from None
        if not self.established:
            raise PhoneError("the call is not established")
        mode = self.phone.options.dtmf_mode
        session = self.session
        if mode != "info" and session is not None and session.can_send_dtmf:
            try:
                session.send_dtmf(digits, duration_ms)
            except DtmfError as exc:
                raise PhoneError(str(exc)) from None
            return "rfc4733"
        if mode == "rfc4733":
            raise PhoneError("the peer did not agree on telephone-event (RFC 4733)")
        for d in digits:
            self.phone._command(self, self.phone._ua().info, info_body(d, duration_ms), DTMF_RELAY)
        return "info"

    async def read_digits(self, count: int = 1, *, timeout: float | None = None, first_timeout: float | None = None,
                          terminator: str = "") -> str:
        """Digits the peer sends: up to ``count`` of them, or until one of ``terminator`` (not included), or until
        ``timeout`` seconds pass between two digits (``first_timeout`` for the first one), or the call ends. Returns
        what arrived (maybe "")."""
        got = ""
        wait = first_timeout if first_timeout is not None else timeout
        while len(got) < count:
            if self.ended is not None and self._digits.empty():
                break
            getter = asyncio.ensure_future(self._digits.get())
            ended = asyncio.ensure_future(self._ended.wait())
            done, _ = await asyncio.wait({getter, ended}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            if getter not in done:
                getter.cancel()
                break
            digit = getter.result()
            if digit in terminator:
                break
            got += digit
            wait = timeout
        return got

    # ------------------------------------------------------------------ transfer
    async def transfer(self, target: str, *, timeout: float = 30.0) -> TransferProgress:
        """Blind transfer (RFC 3515, RFC 5589 6): ask the peer to call ``target`` (a sip: URI), wait for the
        outcome and, when it succeeded, hang up (the peer now talks to the target). Returns the final
        :class:`TransferProgress` (``succeeded`` tells); one with status 408 when nothing final came in
        ``timeout``."""
        return await self._refer(target, None, timeout)

    async def transfer_to(self, other: PhoneCall, *, timeout: float = 30.0) -> TransferProgress:
        """Attended transfer (RFC 5589 7): ``other`` is our established call with the target (this call is
        usually on hold meanwhile). The peer calls the target with Replaces; on success the target drops
        ``other`` and we hang up this call."""
        target = other._peer_uri()
        return await self._refer(target, other, timeout)

    async def _refer(self, target: str, other: PhoneCall | None, timeout: float) -> TransferProgress:
        phone = self.phone
        done: asyncio.Future[TransferProgress] = asyncio.get_running_loop().create_future()
        self._transfer_done = done
        try:
            phone._command(self, phone._ua().refer, target, replaces_call=other.id if other is not None else None)
        except UaError as exc:
            raise PhoneError(str(exc)) from None
        try:
            result = await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            result = TransferProgress(call_id=self.id, status=408, reason="no final NOTIFY", final=True)
        finally:
            self._transfer_done = None
        if result.succeeded:
            self.hangup()  # RFC 5589: the transferor ends its call with the transferee
        return result

    async def follow_transfer(self) -> PhoneCall:
        """Carry out the transfer the peer asked for (:class:`TransferRequested`): call its target (with the
        Replaces of an attended transfer); the transferor hears how it goes. Returns the new call."""
        asked = self.pending_transfer
        if asked is None:
            raise PhoneError("no transfer was asked for in this call")
        self.pending_transfer = None
        return await self.phone.dial(asked.target, transfer_of=self.id)

    def decline_transfer(self, status: int = 603) -> None:
        """Refuse the transfer the peer asked for; the transferor gets ``status``."""
        self.pending_transfer = None
        try:
            self.phone._command(self, self.phone._ua().decline_transfer, status)
        except UaError as exc:
            raise PhoneError(str(exc)) from None

    # ------------------------------------------------------------------ internals
    def _peer_uri(self) -> str:
        ua = self.phone._ua()
        call = ua.calls.get(self.id)
        if call is None or call.dialog is None:
            raise PhoneError("the call has no dialog")
        text = call.dialog.remote_uri
        return text[text.index("<") + 1:text.index(">")] if "<" in text else text.split(";", 1)[0]

    def _clips(self) -> ClipQueue:
        """Where what we send is queued: the RTP session's or the WebRTC media's."""
        if self.webrtc is not None:
            return self.webrtc.clips
        if self.session is None:
            raise PhoneError("the call has no media (not established, or already over)")
        return self.session.clips

    async def _until(self, fut: asyncio.Future[None]) -> None:
        ended: asyncio.Future[object] = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({fut, ended}, return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        finally:
            ended.cancel()

    async def _ensure_rtp(self) -> None:
        if self.rtp is None:
            self.rtp, self._own_rtp = await self.phone._rtp_for_call()
            self.phone._claim_rtp(self)

    def _on_frame(self, samples: array) -> None:
        if self.recorder is not None:
            self.recorder.write(samples)
        phone_recorder = self.phone.recorder
        if phone_recorder is not None and self.phone.current is self:
            phone_recorder.write(samples)
        for queue in self._readers:
            _offer(queue, samples)
        if self.phone._sound_sink is not None and self.phone.current is self:
            self.phone._sound_sink(samples)

    def _on_digits(self, digits: list[DtmfDigit]) -> None:
        for d in digits:
            self.phone._deliver(DtmfReceived(call_id=self.id, digit=d.digit, duration_ms=d.duration_ms, via=d.via))

    def _on_played(self, clips: list[int]) -> None:
        for clip in clips:
            fut = self._played.pop(clip, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _start_media(self) -> None:
        if self.negotiated is None or self.rtp is None or self.media is not None:
            return
        phone = self.phone
        session = MediaSession(self.negotiated, cname=f"{phone.options.user}@leansip")
        if phone.source is not None:
            session.play(phone.source)
        self.session = session
        self.media = MediaRunner(self.rtp, session, self._on_frame, on_digits=self._on_digits,
                                 on_played=self._on_played)
        self.media.start()
        log.info("event=media_started codec=%s remote=%s:%s srtp=%s direction=%s dtmf=%s call=%s",
                 self.negotiated.codec, self.negotiated.remote_address, self.negotiated.remote_port,
                 session.srtp_active, self.negotiated.direction, "rfc4733" if session.can_send_dtmf else "info",
                 self.id)

    async def _stop_media(self) -> None:
        if self.webrtc is not None:
            webrtc, self.webrtc = self.webrtc, None
            await webrtc.close()
            log.info("event=media_stopped profile=webrtc received_frames=%d call=%s", webrtc.received_frames,
                     self.id)
        if self.media is not None:
            media, self.media = self.media, None
            await media.stop()
            s = media.session.stats
            log.info("event=media_stopped sent=%d received=%d dropped=%d srtp_failures=%d rtcp_sent=%d "
                     "dtmf_received=%d call=%s", s.sent_packets, s.received_packets, s.dropped, s.srtp_failures,
                     s.rtcp_sent, s.dtmf_packets, self.id)
        self.stop_recording()
        for fut in self._played.values():
            if not fut.done():
                fut.set_result(None)
        self._played.clear()
        for queue in self._readers:
            _offer(queue, None)
        if self.rtp is not None and self._own_rtp:
            self.rtp.close()
        self.phone._release_rtp(self)


_STATE_NAMES = {
    CallState.IDLE: "idle",
    CallState.CALLING: "calling",
    CallState.EARLY: "ringing",
    CallState.CANCELLING: "cancelling",
    CallState.INCOMING: "incoming",
    CallState.ANSWERED: "connecting",
    CallState.CONFIRMED: "in call",
    CallState.TERMINATING: "hanging up",
    CallState.ENDED: "ended",
}


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
