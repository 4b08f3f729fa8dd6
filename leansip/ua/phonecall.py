"""One call of a :class:`~leansip.ua.phone.Phone`: the :class:`PhoneCall` API and the call's media.

Theory of operation
-------------------
A :class:`PhoneCall` is what an application holds for one call: ``answer``, ``reject``, ``hangup``, ``hold``,
``play`` a file or PCM, ``play_frames``, ``start_recording``, ``frames`` (the received audio), ``send_dtmf`` /
``read_digits``, ``transfer`` / ``transfer_to``, and the call's own ``events``. Its SIP commands go through its
phone to the one :class:`~leansip.ua.useragent.UserAgent` (``phone._command``); what it owns is the call's
media: the RTP pair, the negotiated SDP, the :class:`~leansip.ua.session.MediaSession` and its runner (or the
WebRTC media), the recorder, the frame readers and the digits queue, started and stopped as the phone's event
dispatch says.

Here too are the phone's errors and the one event it adds to the UA's (:class:`MediaFailed`), which both the
call and the phone raise or report.

Why a module of its own: the phone (:mod:`leansip.ua.phone`) is the shell around one SIP identity and one flow
(transport, timers, keep-alives, reconnection, STUN, event dispatch); a call's audio, DTMF and transfer API are
another responsibility. The phone is named here only for typing (no import cycle). Users import these names
from :mod:`leansip.ua` (or :mod:`leansip.ua.phone`).
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from leansip.io.rtp import MediaRunner, RtpPorts
from leansip.io.webrtc import WebRtcError, WebRtcMedia, is_webrtc_sdp
from leansip.media.audiofile import AudioWriter, load_audio
from leansip.media.clips import ClipQueue
from leansip.media.dtmf import DTMF_RELAY, DtmfDigit, DtmfError, check_digits, info_body
from leansip.ua.callstate import CallState, UaError
from leansip.ua.events import CallEnded, DtmfReceived, TransferProgress, TransferRequested, UaEvent
from leansip.ua.sdp import LocalSession, NegotiatedMedia, SdpError, SessionDescription, parse_sdp
from leansip.ua.session import MediaSession

if TYPE_CHECKING:
    from leansip.ua.phone import Phone

__all__ = ["PhoneCall", "PhoneEvent", "PhoneError", "CallFailed", "MediaFailed"]

log = logging.getLogger("leansip.phone")


#: events kept for an application that does not read them (per queue); the oldest are dropped past this
EVENT_QUEUE_MAX = 1000
#: received 20 ms frames kept per :meth:`PhoneCall.frames` reader that falls behind (1 s)
FRAME_QUEUE_MAX = 50
#: :meth:`PhoneCall.play_frames` keeps at most this much audio queued ahead of the wire (samples, 0.5 s)
STREAM_AHEAD = 4000


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
