"""The media session of one call: G.711 RTP out and in, RTCP reports, SRTP -- pure state, no sockets.

Theory of operation
-------------------
:class:`MediaSession` is built from the :class:`~leansip.ua.sdp.NegotiatedMedia` the offer/answer produced and
is driven by its I/O shell (:mod:`leansip.io.rtp`) like the SIP core:

* :meth:`MediaSession.tick` once per 20 ms frame: returns the datagrams to send (one RTP packet while we are
  sending) and the 160 samples to play/record (the jitter buffer's frame, decoded, or silence);
* :meth:`MediaSession.receive_rtp` / :meth:`MediaSession.receive_rtcp` for every datagram on the two ports;
* :meth:`MediaSession.rtcp_due` / :meth:`MediaSession.rtcp_report` for the RTCP SR/RR every
  :data:`RTCP_INTERVAL` seconds (RFC 3550 6.2: 5 s minimum for a two-party call);
* :meth:`MediaSession.send_dtmf` queues digits that :meth:`tick` sends as RFC 4733 events in place of audio
  (:mod:`leansip.media.dtmf`); digits the peer sent come out of :meth:`MediaSession.take_digits`.

Symmetric RTP (RFC 4961): once valid packets arrive from an address other than the SDP one, we send there,
which is what gets audio through a NAT. With SRTP only packets that pass authentication count, so a stranger
cannot steer our stream.

:meth:`MediaSession.update` applies a new offer/answer (hold, resume, new address) without changing our SSRC.
"""

from __future__ import annotations

import logging
import random
from array import array
from dataclasses import dataclass

from leansip.media.clips import ClipQueue
from leansip.media.dtmf import DtmfDigit, DtmfError, DtmfReceiver, DtmfSender
from leansip.media.g711 import G711Codec, codec_for_name, silence_payload
from leansip.media.jitter import JitterBuffer
from leansip.media.rtcp import (
    SDES_CNAME,
    ReceiverStats,
    RtcpParseError,
    RtcpReceiverReport,
    RtcpSdes,
    RtcpSenderReport,
    SdesChunk,
    ntp_timestamp,
    parse_compound,
    serialize_compound,
)
from leansip.media.rtp import SAMPLES_PER_FRAME, RtpPacket, RtpParseError, RtpSender, is_rtcp
from leansip.media.srtp import SrtpContext, SrtpError
from leansip.ua.sdp import NegotiatedMedia

__all__ = ["MediaSession", "MediaStats", "RTCP_INTERVAL", "FRAME_SECONDS"]

log = logging.getLogger("leansip.ua.session")

RTCP_INTERVAL = 5.0
FRAME_SECONDS = SAMPLES_PER_FRAME / 8000

Address = tuple[str, int]


@dataclass(slots=True)
class MediaStats:
    """Counters for the log line at the end of a call and for tests."""

    sent_packets: int = 0
    received_packets: int = 0
    dropped: int = 0  # malformed, wrong payload type, or failed SRTP authentication
    srtp_failures: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    latched: int = 0  # times symmetric RTP moved our destination
    dtmf_packets: int = 0  # RFC 4733 event packets received


class MediaSession:
    """One audio stream. ``source`` is 8 kHz mono int16 to send (None: silence). See the module doc."""

    def __init__(self, media: NegotiatedMedia, *, source: array | None = None, cname: str = "leansip",
                 rng: random.Random | None = None, jitter_prefetch: int = 3) -> None:
        codec = codec_for_name(media.codec)
        if codec is None:
            raise ValueError(f"codec {media.codec} not implemented")
        self.codec: G711Codec = codec
        self.media = media
        self.rng = rng or random.SystemRandom()
        self.sender = RtpSender(media.payload_type, rng=self.rng)
        self.srtp: SrtpContext | None = None
        if media.local_crypto is not None and media.remote_crypto is not None:
            self.srtp = SrtpContext(media.local_crypto, media.remote_crypto)
        self.remote: Address = (media.remote_address, media.remote_port)
        self.remote_rtcp: Address = (media.remote_address, media.remote_rtcp_port)
        self.jitter = JitterBuffer(prefetch=jitter_prefetch, silence=silence_payload(codec))
        self.receiver: ReceiverStats | None = None  # created for the first remote SSRC
        self.remote_ssrc: int | None = None
        self.stats = MediaStats()
        self.cname = cname
        self.clips = ClipQueue()  # what we send: queued clips, then silence
        if source is not None:
            self.play(source)
        self._silence = array("h", [0]) * SAMPLES_PER_FRAME
        self._next_rtcp: float | None = None
        self.dtmf_out = DtmfSender()
        self.dtmf_in = DtmfReceiver()
        self._digits: list[DtmfDigit] = []

    # ------------------------------------------------------------------ state
    @property
    def srtp_active(self) -> bool:
        return self.srtp is not None

    @property
    def sending(self) -> bool:
        return self.media.direction in ("sendrecv", "sendonly") and not self.media.remote_hold

    @property
    def receiving(self) -> bool:
        return self.media.direction in ("sendrecv", "recvonly")

    def update(self, media: NegotiatedMedia) -> None:
        """Apply a re-negotiation (14): direction (hold/resume), address, codec; new keys when they changed."""
        if media.codec != self.media.codec:
            codec = codec_for_name(media.codec)
            if codec is None:
                raise ValueError(f"codec {media.codec} not implemented")
            self.codec = codec
            self.sender.payload_type = media.payload_type
            self.jitter = JitterBuffer(prefetch=self.jitter.prefetch, silence=silence_payload(codec))
        if (media.local_crypto, media.remote_crypto) != (self.media.local_crypto, self.media.remote_crypto):
            self.srtp = None
            if media.local_crypto is not None and media.remote_crypto is not None:
                self.srtp = SrtpContext(media.local_crypto, media.remote_crypto)
        if (media.remote_address, media.remote_port) != (self.media.remote_address, self.media.remote_port):
            self.remote = (media.remote_address, media.remote_port)
            self.remote_rtcp = (media.remote_address, media.remote_rtcp_port)
        if not self.sending:
            self.sender.start_talkspurt()  # the first packet after a resume is marked (RFC 3551 4.1)
        self.media = media

    # ------------------------------------------------------------------ sending
    def play(self, samples: array, *, interrupt: bool = False) -> int:
        """Queue samples to send (see :meth:`ClipQueue.play`)."""
        return self.clips.play(samples, interrupt=interrupt)

    def stop_playing(self) -> None:
        self.clips.stop_playing()

    @property
    def queued_samples(self) -> int:
        return self.clips.queued_samples

    def take_finished(self) -> list[int]:
        return self.clips.take_finished()

    def _next_samples(self) -> array:
        return self.clips.next_frame()

    # ------------------------------------------------------------------ DTMF
    @property
    def can_send_dtmf(self) -> bool:
        """The answer agreed on telephone-event (RFC 4733); without it digits go by SIP INFO."""
        return self.media.dtmf_payload_type is not None

    def send_dtmf(self, digits: str, duration_ms: int | None = None) -> None:
        """Queue digits to go as RFC 4733 events in place of audio. Raises :class:`DtmfError` for a bad digit or
        when the peer did not agree on telephone-event."""
        if not self.can_send_dtmf:
            raise DtmfError("the peer did not agree on telephone-event")
        self.dtmf_out.send(digits, duration_ms)

    def take_digits(self) -> list[DtmfDigit]:
        """The digits received since the last call (RFC 4733 events), in order."""
        out, self._digits = self._digits, []
        return out

    def tick(self, now: float) -> tuple[list[tuple[bytes, Address]], array]:
        """One 20 ms frame: (datagrams to send, decoded samples received for this frame)."""
        out: list[tuple[bytes, Address]] = []
        samples = self._next_samples()
        dtmf_pt = self.media.dtmf_payload_type
        event = self.dtmf_out.frame(self.sender.timestamp) if self.sending and dtmf_pt is not None else None
        if event is not None and dtmf_pt is not None:
            # RFC 4733 2.5.1: the event packet replaces this frame's audio; the stream clock runs on
            pkt = self.sender.event_packet(event.payload, payload_type=dtmf_pt, timestamp=event.timestamp,
                                           marker=event.marker).serialize()
            self.sender.skip(talkspurt=False)
            if self.srtp is not None:
                pkt = self.srtp.protect(pkt)
            out.append((pkt, self.remote))
            self.stats.sent_packets += 1
        elif self.sending:
            pkt = self.sender.packet(self.codec.encode(samples)).serialize()
            if self.srtp is not None:
                pkt = self.srtp.protect(pkt)
            out.append((pkt, self.remote))
            self.stats.sent_packets += 1
        else:
            self.sender.skip()  # 5.1: the clock runs on while we are silent (hold)
        self._digits += self.dtmf_in.poll(now)
        if self._next_rtcp is None:
            self._next_rtcp = now + RTCP_INTERVAL * (0.5 + self.rng.random())  # 6.2: randomised first report
        payload = self.jitter.pop()
        played = self.codec.decode(payload) if payload and self.receiving else self._silence
        if len(played) != SAMPLES_PER_FRAME:
            played = (played + self._silence)[:SAMPLES_PER_FRAME]
        return out, played

    # ------------------------------------------------------------------ receiving
    def receive_rtp(self, data: bytes, source: Address, now: float) -> bool:
        """Queue one RTP (or SRTP) packet; False when it was dropped. Moves our destination to ``source``
        (symmetric RTP) once a valid packet comes from there."""
        if is_rtcp(data):
            return self.receive_rtcp(data, source, now)  # RFC 5761 mux, in case the peer does it
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpError:
                self.stats.srtp_failures += 1
                self.stats.dropped += 1
                return False
        try:
            pkt = RtpPacket.parse(data)
        except RtpParseError:
            self.stats.dropped += 1
            return False
        if pkt.payload_type == self.media.dtmf_payload_type and pkt.payload_type != self.media.payload_type:
            self._digits += self.dtmf_in.receive(pkt.payload, pkt.timestamp, pkt.ssrc, now)
            self.stats.dtmf_packets += 1
            return True
        if pkt.payload_type != self.media.payload_type:
            self.stats.dropped += 1  # comfort noise and other payloads are not played
            return False
        if self.receiver is None or pkt.ssrc != self.remote_ssrc:
            if self.receiver is not None:
                self.jitter.reset()  # a new source (e.g. after a transfer): start a fresh stream
            self.receiver = ReceiverStats(ssrc=pkt.ssrc, clock_rate=self.codec.clock_rate)
        self.remote_ssrc = pkt.ssrc
        self.stats.received_packets += 1
        self.receiver.update(pkt.sequence_number, pkt.timestamp, now)
        if source != self.remote:
            log.info("event=rtp_latch from=%s:%s to=%s:%s", *self.remote, *source)
            self.remote = source
            self.remote_rtcp = (source[0], source[1] + 1)
            self.stats.latched += 1
        self.jitter.push(pkt.sequence_number, pkt.payload)
        return True

    def receive_rtcp(self, data: bytes, source: Address, now: float) -> bool:
        """Take the peer's SR (for our report blocks' LSR/DLSR); False when dropped."""
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect_rtcp(data)
            except SrtpError:
                self.stats.srtp_failures += 1
                return False
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return False
        self.stats.rtcp_received += 1
        for p in packets:
            if isinstance(p, RtcpSenderReport) and self.receiver is not None and p.ssrc == self.remote_ssrc:
                self.receiver.on_sender_report(p, now)
        return True

    # ------------------------------------------------------------------ RTCP
    def rtcp_due(self, now: float) -> bool:
        return self._next_rtcp is not None and now >= self._next_rtcp

    def rtcp_report(self, now: float) -> tuple[bytes, Address]:
        """The compound report (SR while we send, else RR; then SDES CNAME, RFC 3550 6.1) and where it goes."""
        blocks = (self.receiver.report_block(now),) if self.receiver is not None else ()
        s = self.sender
        report: RtcpSenderReport | RtcpReceiverReport
        if self.sending and s.packet_count:
            report = RtcpSenderReport(ssrc=s.ssrc, ntp_timestamp=ntp_timestamp(now), rtp_timestamp=s.timestamp,
                                      packet_count=s.packet_count, octet_count=s.octet_count, reports=blocks)
        else:
            report = RtcpReceiverReport(ssrc=s.ssrc, reports=blocks)
        sdes = RtcpSdes(chunks=(SdesChunk(ssrc=s.ssrc, items=((SDES_CNAME, self.cname.encode()),)),))
        data = serialize_compound([report, sdes])
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        self._next_rtcp = now + RTCP_INTERVAL * (0.5 + self.rng.random())
        self.stats.rtcp_sent += 1
        return data, self.remote_rtcp

