"""WebRTC media for one call (browsers: ICE, DTLS-SRTP, ``UDP/TLS/RTP/SAVPF``, rtcp-mux, Opus), through aiortc.

Theory of operation
-------------------
A browser's SDP asks for what our own RTP stack does not do (ICE connectivity checks, a DTLS handshake whose
fingerprint is in the SDP, SRTP keys from it, RTP and RTCP on one port). Rather than writing our own DTLS,
:class:`WebRtcMedia` hands the call's media to aiortc's ``RTCPeerConnection`` (aioice for ICE, pylibsrtp for SRTP,
libopus through PyAV): the phone passes the remote SDP in and sends the SDP aiortc writes, and audio goes through
the same pieces as a plain RTP call -- a :class:`~leansip.media.clips.ClipQueue` feeds the outgoing track 20 ms at a
time, and the incoming track is resampled to 8 kHz mono frames for the recorder and ``PhoneCall.frames()``.

aiortc gathers all its candidates before it returns the SDP (no trickle ICE), so the SDP we send is complete.
Two choices keep the traffic where the phone is told to be: no STUN server unless one is configured (aiortc would
otherwise ask a public one), and host candidates only on the phone's ``local_host`` (:func:`restrict_host`).

DTMF is not sent in-band here (aiortc has no RFC 4733 sender); the phone falls back to SIP INFO. aiortc is an
optional dependency (``pip install 'leansip[webrtc]'``); :func:`available` says whether it is importable.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from array import array
from collections.abc import Callable
from typing import Any

from leansip.media.clips import ClipQueue

__all__ = ["WebRtcMedia", "WebRtcError", "available", "is_webrtc_sdp", "restrict_host"]

log = logging.getLogger("leansip.io.webrtc")

RATE = 8000
FRAME = 160  # 20 ms
_restricted: str | None = None


class WebRtcError(Exception):
    """aiortc is missing, or it refused the remote SDP."""


def available() -> bool:
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return False
    return True


def is_webrtc_sdp(sdp: bytes) -> bool:
    """Does this SDP's audio stream ask for the WebRTC profile (DTLS-SRTP: UDP/TLS/RTP/SAVP or SAVPF)?"""
    for line in sdp.decode("utf-8", "replace").splitlines():
        if line.startswith("m=audio "):
            parts = line.split()
            return len(parts) > 2 and "TLS" in parts[2].upper()
    return False


def restrict_host(address: str) -> None:
    """Gather ICE host candidates on ``address`` only (the phone's --local-host) instead of every interface.

    aioice takes its host addresses from one module-level function; it is replaced here, for the whole process
    (a process runs one phone). Without it a loopback test would offer and check the machine's other addresses."""
    global _restricted
    import aioice.ice

    _restricted = address
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [address]


class WebRtcMedia:
    """One call's WebRTC media. ``answer(offer)`` or ``offer()`` then ``accept(answer)``; ``close()`` at the end.

    ``on_frame`` gets each received 20 ms frame (8 kHz mono int16); ``on_played`` the ids of clips sent to the end.
    """

    def __init__(self, *, local_host: str, on_frame: Callable[[array], None],
                 on_played: Callable[[list[int]], None], stun: tuple[str, int] | None = None) -> None:
        try:
            from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
        except ImportError:
            raise WebRtcError("WebRTC media needs aiortc: pip install 'leansip[webrtc]'") from None
        if _restricted != local_host:
            restrict_host(local_host)
        servers = [RTCIceServer(f"stun:{stun[0]}:{stun[1]}")] if stun is not None else []
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))  # [] : no default public STUN
        self.clips = ClipQueue()
        self.on_frame = on_frame
        self.on_played = on_played
        self.received_frames = 0
        self._readers: list[asyncio.Task[None]] = []
        self.pc.addTrack(_clip_track(self))
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def offer(self) -> bytes:
        """Our offer (all candidates gathered)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp.encode()

    async def answer(self, remote_offer: bytes) -> bytes:
        """Take the peer's offer and return our answer. Raises :class:`WebRtcError` for an offer aiortc refuses."""
        from aiortc import RTCSessionDescription

        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=remote_offer.decode(), type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, KeyError, AttributeError) as exc:
            raise WebRtcError(f"WebRTC offer refused: {exc}") from None
        return self.pc.localDescription.sdp.encode()

    async def accept(self, remote_answer: bytes) -> None:
        """Take the answer to our offer; ICE and DTLS start."""
        from aiortc import RTCSessionDescription

        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=remote_answer.decode(), type="answer"))
        except (ValueError, KeyError, AttributeError) as exc:
            raise WebRtcError(f"WebRTC answer refused: {exc}") from None

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await self.pc.close()

    def _on_state(self) -> None:
        log.info("event=webrtc_state state=%s", self.pc.connectionState)

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            self._readers.append(asyncio.get_running_loop().create_task(self._read(track)))

    async def _read(self, track: Any) -> None:
        """The peer's audio (Opus at 48 kHz, or G.711) -> 8 kHz mono int16, 160 samples at a time."""
        import av
        from aiortc.mediastreams import MediaStreamError

        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        pending = array("h")
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                pending.frombytes(out.to_ndarray().tobytes())
            while len(pending) >= FRAME:
                self.received_frames += 1
                self.on_frame(pending[:FRAME])
                del pending[:FRAME]


_TRACK_CLASS: type | None = None


def _clip_track(media: WebRtcMedia) -> Any:
    """The outgoing audio track (a subclass of aiortc's MediaStreamTrack, made on first use so that importing
    this module does not import aiortc): the media's :class:`ClipQueue`, one 20 ms frame per ``recv``, paced by
    the clock."""
    global _TRACK_CLASS
    if _TRACK_CLASS is None:
        import av
        from aiortc import MediaStreamTrack

        class ClipTrack(MediaStreamTrack):  # type: ignore[misc]
            kind = "audio"

            def __init__(self, media: WebRtcMedia) -> None:
                super().__init__()
                self.media = media
                self._start: float | None = None
                self._pts = 0

            async def recv(self) -> Any:
                if self._start is None:
                    self._start = time.monotonic()
                else:
                    self._pts += FRAME
                    wait = self._start + self._pts / RATE - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                samples = self.media.clips.next_frame()
                done = self.media.clips.take_finished()
                if done:
                    self.media.on_played(done)
                frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
                frame.planes[0].update(samples.tobytes())
                frame.sample_rate = RATE
                frame.pts = self._pts
                frame.time_base = fractions.Fraction(1, RATE)
                return frame

        _TRACK_CLASS = ClipTrack
    return _TRACK_CLASS(media)
