"""RTP packets (RFC 3550 section 5.1) and the sending state of one audio stream.

Pure: parse/serialize bytes, no sockets and no clock. :func:`RtpPacket.parse` checks
every length against the datagram and raises :class:`RtpParseError` (the caller drops
the datagram and counts it); :meth:`RtpPacket.serialize` is its exact inverse.

:class:`RtpSender` owns SSRC, sequence number and timestamp for one outgoing stream:
call :meth:`RtpSender.packet` once per 20 ms frame, :meth:`RtpSender.skip` for frames
not sent (silence suppression, hold) so the timestamp keeps running.

The ``uint16_*`` / ``uint32_*`` helpers compare and subtract sequence numbers and
timestamps modulo 2**16 / 2**32 (RFC 3550 A.1, like aiortc ``utils.uint16_gt``).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

__all__ = [
    "RtpParseError",
    "RtpPacket",
    "RtpSender",
    "is_rtcp",
    "uint16_add",
    "uint16_diff",
    "uint16_gt",
    "uint16_gte",
    "uint32_add",
    "uint32_diff",
    "uint32_gt",
    "SAMPLES_PER_FRAME",
]

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12
SAMPLES_PER_FRAME = 160  # 20 ms at 8 kHz, RFC 3551 4.5 default G.711 packetisation


class RtpParseError(ValueError):
    """A datagram that is not a well-formed RTP packet; drop it (never answer RTP)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def uint16_add(a: int, b: int) -> int:
    """a + b modulo 2**16."""
    return (a + b) & 0xFFFF


def uint16_diff(a: int, b: int) -> int:
    """Signed distance a - b in the 16-bit circle, in [-32768, 32767]."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def uint16_gt(a: int, b: int) -> bool:
    """True if sequence number a is newer than b (less than half the circle ahead)."""
    half = 0x8000
    return (a > b and a - b < half) or (a < b and b - a > half)


def uint16_gte(a: int, b: int) -> bool:
    """a == b or a newer than b."""
    return a == b or uint16_gt(a, b)


def uint32_add(a: int, b: int) -> int:
    """a + b modulo 2**32."""
    return (a + b) & 0xFFFFFFFF


def uint32_diff(a: int, b: int) -> int:
    """Signed distance a - b in the 32-bit circle."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


def uint32_gt(a: int, b: int) -> bool:
    """True if timestamp a is later than b (less than half the circle ahead)."""
    half = 0x80000000
    return (a > b and a - b < half) or (a < b and b - a > half)


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a shared port (RFC 5761 4: PT 192..223 after masking M)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(slots=True, kw_only=True)
class RtpPacket:
    """One RTP packet. ``padding`` is the number of padding octets (0 means the P bit is clear).

    ``extension_profile``/``extension`` hold the RFC 3550 5.3.1 header extension; the
    extension data must be a multiple of 4 octets. ``payload`` excludes the padding.
    """

    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    extension: bytes = b""
    padding: int = 0
    payload: bytes = b""
    version: int = RTP_VERSION

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} not in 0..127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError("sequence number not 16-bit")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and SSRC are 32-bit")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs (4-bit CC)")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding count is one octet")
        if len(self.extension) % 4:
            raise ValueError("extension data must be a multiple of 4 octets")
        if self.extension and self.extension_profile is None:
            raise ValueError("extension data needs an extension_profile")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise :class:`RtpParseError` naming the first bad field."""
        if len(data) < RTP_HEADER_LENGTH:
            raise RtpParseError(f"RTP packet length is less than {RTP_HEADER_LENGTH} bytes")
        first, second, seq, ts, ssrc = struct.unpack_from("!BBHLL", data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP packet has invalid version {version}")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        cc = first & 0x0F
        pos = RTP_HEADER_LENGTH
        if len(data) < pos + 4 * cc:
            raise RtpParseError("RTP packet truncated in CSRC list")
        csrc = list(struct.unpack_from(f"!{cc}L", data, pos))
        pos += 4 * cc
        ext_profile: int | None = None
        ext = b""
        if has_extension:
            if len(data) < pos + 4:
                raise RtpParseError("RTP packet truncated in extension header")
            ext_profile, ext_words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * ext_words:
                raise RtpParseError("RTP packet truncated in extension data")
            ext = bytes(data[pos:pos + 4 * ext_words])
            pos += 4 * ext_words
        end = len(data)
        padding = 0
        if has_padding:
            padding = data[-1]
            if padding == 0 or end - padding < pos:
                raise RtpParseError("RTP packet padding length is invalid")
            end -= padding
        return cls(
            version=version,
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrc=csrc,
            extension_profile=ext_profile,
            extension=ext,
            padding=padding,
            payload=bytes(data[pos:end]),
        )

    def serialize(self) -> bytes:
        """Encode to wire bytes; ``parse(serialize(p)) == p`` for every valid packet."""
        first = (self.version << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        parts = [
            struct.pack(
                "!BBHLL", first, (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number, self.timestamp, self.ssrc,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}L", *self.csrc))
        if self.extension_profile is not None:
            parts.append(struct.pack("!HH", self.extension_profile, len(self.extension) // 4))
            parts.append(self.extension)
        parts.append(self.payload)
        if self.padding:
            parts.append(b"\x00" * (self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpSender:
    """Sequence/timestamp/SSRC state of one outgoing RTP stream (RFC 3550 5.1).

    SSRC, initial sequence number and initial timestamp are random (RFC 3550 5.1 says
    SHOULD, to make known-plaintext attacks on SRTP harder). Pass a seeded
    ``random.Random`` in tests. The first packet carries the marker bit (RFC 3551 4.1:
    start of a talkspurt); call :meth:`start_talkspurt` after silence to set it again.
    Counters for RTCP SR (packet and octet count) are kept here too.
    """

    def __init__(
        self,
        payload_type: int,
        *,
        samples_per_frame: int = SAMPLES_PER_FRAME,
        ssrc: int | None = None,
        sequence_number: int | None = None,
        timestamp: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        r = rng if rng is not None else random.SystemRandom()
        self.payload_type = payload_type
        self.samples_per_frame = samples_per_frame
        self.ssrc = r.getrandbits(32) if ssrc is None else ssrc
        self.sequence_number = r.getrandbits(16) if sequence_number is None else sequence_number
        self.timestamp = r.getrandbits(32) if timestamp is None else timestamp
        self.packet_count = 0
        self.octet_count = 0
        self._marker_next = True

    def start_talkspurt(self) -> None:
        """Set the marker on the next packet (after silence suppression or a resume)."""
        self._marker_next = True

    def packet(self, payload: bytes, *, payload_type: int | None = None, marker: bool | None = None,
               advance: bool = True) -> RtpPacket:
        """Build the next packet for one frame and advance seq (always) and ts (if ``advance``).

        ``advance=False`` is for RFC 4733 DTMF events, whose packets share one timestamp.
        """
        m = self._marker_next if marker is None else marker
        self._marker_next = False
        pkt = RtpPacket(
            payload_type=self.payload_type if payload_type is None else payload_type,
            sequence_number=self.sequence_number,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            marker=m,
            payload=payload,
        )
        self.sequence_number = uint16_add(self.sequence_number, 1)
        if advance:
            self.timestamp = uint32_add(self.timestamp, self.samples_per_frame)
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + len(payload)) & 0xFFFFFFFF
        return pkt

    def skip(self, frames: int = 1, *, talkspurt: bool = True) -> None:
        """Account for frames not sent as audio: the timestamp advances, the sequence does not (RFC 3550 5.1).
        After silence the next audio packet starts a talkspurt (marked); after frames that carried DTMF events
        instead (``talkspurt=False``) the audio simply goes on."""
        self.timestamp = uint32_add(self.timestamp, frames * self.samples_per_frame)
        if talkspurt:
            self._marker_next = True

    def event_packet(self, payload: bytes, *, payload_type: int, timestamp: int, marker: bool) -> RtpPacket:
        """An RFC 4733 event packet in this stream: the next sequence number, the event's own (start) timestamp;
        the stream clock is left alone (call :meth:`skip` with ``talkspurt=False`` for the frame it took)."""
        pkt = RtpPacket(payload_type=payload_type, sequence_number=self.sequence_number, timestamp=timestamp,
                        ssrc=self.ssrc, marker=marker, payload=payload)
        self.sequence_number = uint16_add(self.sequence_number, 1)
        self.packet_count = (self.packet_count + 1) & 0xFFFFFFFF
        self.octet_count = (self.octet_count + len(payload)) & 0xFFFFFFFF
        return pkt
