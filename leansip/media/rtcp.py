"""RTCP (RFC 3550 section 6): SR, RR, SDES, BYE packets and receiver statistics.

Packets are frozen values; :func:`parse_compound` turns one datagram into a list of them
(checking every length and raising :class:`RtcpParseError`), :func:`serialize_compound`
is the inverse. Unknown packet types (APP, feedback) come back as :class:`RtcpUnknown`
so a compound packet from a richer peer still yields its SR/RR.

:class:`ReceiverStats` tracks one remote source as RFC 3550 A.1 (sequence validation),
A.3 (loss) and A.8 (interarrival jitter) describe. Feed it every RTP packet with
:meth:`ReceiverStats.update` and every SR from that source with
:meth:`ReceiverStats.on_sender_report`; :meth:`ReceiverStats.report_block` builds the
block for our next SR/RR. Time is ``now`` in seconds (any monotonic origin for jitter,
but the same clock as the one given to :func:`ntp_timestamp` for LSR/DLSR/RTT).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "RtcpParseError",
    "ReportBlock",
    "RtcpSenderReport",
    "RtcpReceiverReport",
    "SdesChunk",
    "RtcpSdes",
    "RtcpBye",
    "RtcpUnknown",
    "RtcpPacket",
    "parse_compound",
    "serialize_compound",
    "ntp_timestamp",
    "ntp_middle32",
    "round_trip_time",
    "ReceiverStats",
    "PT_SR",
    "PT_RR",
    "PT_SDES",
    "PT_BYE",
    "SDES_CNAME",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01
RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1 suggested values
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


class RtcpParseError(ValueError):
    """A datagram that is not a valid RTCP compound packet; drop it and count it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ntp_timestamp(now: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds (RFC 3550 4)."""
    secs = int(now)
    frac = int((now - secs) * (1 << 32)) & 0xFFFFFFFF
    return (((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32) | frac


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, the unit of LSR (RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBlock:
    """One reception report (RFC 3550 6.4.1). ``packets_lost`` is signed 24-bit.

    ``jitter`` is in RTP timestamp units; ``lsr`` is the middle 32 bits of the last SR's
    NTP time and ``dlsr`` the delay since then in 1/65536 s (both 0 without an SR).
    """

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("fraction_lost is 8-bit")
        if not -(1 << 23) <= self.packets_lost < (1 << 23):
            raise ValueError("packets_lost is signed 24-bit")

    def pack(self) -> bytes:
        return struct.pack(
            "!LB3sLLLL", self.ssrc, self.fraction_lost,
            (self.packets_lost & 0xFFFFFF).to_bytes(3, "big"),
            self.highest_sequence, self.jitter, self.lsr, self.dlsr,
        )

    @classmethod
    def unpack(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = struct.unpack_from("!LB3sLLLL", data, pos)
        lost_i = int.from_bytes(lost, "big")
        if lost_i & 0x800000:
            lost_i -= 1 << 24
        return cls(ssrc=ssrc, fraction_lost=fraction, packets_lost=lost_i, highest_sequence=highest,
                   jitter=jitter, lsr=lsr, dlsr=dlsr)


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpSenderReport:
    """SR (PT 200): our sending position plus reports on sources we receive."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpReceiverReport:
    """RR (PT 201): reports from a participant that is not sending."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SdesChunk:
    """One SDES chunk: a source and its (item type, value) pairs, CNAME first by convention."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for t, v in self.items:
            if t == SDES_CNAME:
                return v.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpSdes:
    """SDES (PT 202). Every compound packet we send carries our CNAME (RFC 3550 6.1)."""

    chunks: tuple[SdesChunk, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpBye:
    """BYE (PT 203): the sources leave; ``reason`` is optional UTF-8 text."""

    sources: tuple[int, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpUnknown:
    """Any other RTCP packet type, kept raw (count field and body after the 4-byte header)."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = RtcpSenderReport | RtcpReceiverReport | RtcpSdes | RtcpBye | RtcpUnknown


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP packet body must be 32-bit aligned")
    if count > 31:
        raise ValueError("RTCP count field is 5 bits")
    return struct.pack("!BBH", 0x80 | count, packet_type, body_len // 4)


def _pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def _serialize_one(p: RtcpPacket) -> bytes:
    if isinstance(p, RtcpSenderReport):
        body = struct.pack("!LQLLL", p.ssrc, p.ntp_timestamp, p.rtp_timestamp, p.packet_count, p.octet_count)
        body += b"".join(r.pack() for r in p.reports)
        return _header(len(p.reports), PT_SR, len(body)) + body
    if isinstance(p, RtcpReceiverReport):
        body = struct.pack("!L", p.ssrc) + b"".join(r.pack() for r in p.reports)
        return _header(len(p.reports), PT_RR, len(body)) + body
    if isinstance(p, RtcpSdes):
        chunks = []
        for c in p.chunks:
            raw = struct.pack("!L", c.ssrc)
            for t, v in c.items:
                if not 1 <= t <= 255 or len(v) > 255:
                    raise ValueError("SDES item type 1..255, value up to 255 octets")
                raw += bytes([t, len(v)]) + v
            # At least one null octet ends the item list, then pad to 32 bits (6.5).
            raw += b"\x00"
            chunks.append(_pad4(raw))
        body = b"".join(chunks)
        return _header(len(p.chunks), PT_SDES, len(body)) + body
    if isinstance(p, RtcpBye):
        body = b"".join(struct.pack("!L", s) for s in p.sources)
        if p.reason is not None:
            r = p.reason.encode()
            if len(r) > 255:
                raise ValueError("BYE reason is at most 255 octets")
            body += _pad4(bytes([len(r)]) + r)
        return _header(len(p.sources), PT_BYE, len(body)) + body
    return _header(p.count, p.packet_type, len(p.body)) + p.body


def serialize_compound(packets: list[RtcpPacket] | tuple[RtcpPacket, ...]) -> bytes:
    """Concatenate packets into one compound datagram (first should be SR or RR, RFC 3550 6.1)."""
    return b"".join(_serialize_one(p) for p in packets)


def _parse_reports(data: bytes, pos: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if pos + 24 * count > end:
        raise RtcpParseError("RTCP report blocks exceed packet length")
    return tuple(ReportBlock.unpack(data, pos + 24 * i) for i in range(count))


def _parse_sdes(data: bytes, pos: int, count: int, end: int) -> RtcpSdes:
    chunks = []
    for _ in range(count):
        if pos + 4 > end:
            raise RtcpParseError("RTCP SDES chunk truncated")
        (ssrc,) = struct.unpack_from("!L", data, pos)
        pos += 4
        items = []
        while True:
            if pos >= end:
                raise RtcpParseError("RTCP SDES item list not terminated")
            t = data[pos]
            if t == 0:
                pos += 1
                pos += (-pos) % 4  # chunks end on a 32-bit boundary (packets start aligned)
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpParseError("RTCP SDES item truncated")
            n = data[pos + 1]
            items.append((t, bytes(data[pos + 2:pos + 2 + n])))
            pos += 2 + n
        chunks.append(SdesChunk(ssrc=ssrc, items=tuple(items)))
    return RtcpSdes(chunks=tuple(chunks))


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse an RTCP compound datagram; every length is checked against the buffer.

    Raises :class:`RtcpParseError` on a bad version, a length past the end, padding on
    a packet other than the last, or truncated contents.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    n = len(data)
    if n < 4:
        raise RtcpParseError("RTCP packet length is less than 4 bytes")
    while pos < n:
        if pos + 4 > n:
            raise RtcpParseError("RTCP packet header truncated")
        first, pt, length = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != 2:
            raise RtcpParseError(f"RTCP packet has invalid version {first >> 6}")
        count = first & 0x1F
        start = pos + 4
        end = start + 4 * length
        if end > n:
            raise RtcpParseError("RTCP packet length exceeds datagram")
        if first & 0x20:
            # Only the last packet of a compound may be padded (RFC 3550 6.4.1).
            if end != n:
                raise RtcpParseError("RTCP padding on a packet that is not the last")
            pad = data[end - 1] if end > start else 0
            if pad == 0 or pad > end - start:
                raise RtcpParseError("RTCP padding length is invalid")
            body_end = end - pad
        else:
            body_end = end
        pkt: RtcpPacket
        if pt == PT_SR:
            if start + 24 > body_end:
                raise RtcpParseError("RTCP SR truncated")
            ssrc, ntp, rtp_ts, pc, oc = struct.unpack_from("!LQLLL", data, start)
            reports = _parse_reports(data, start + 24, count, body_end)
            pkt = RtcpSenderReport(ssrc=ssrc, ntp_timestamp=ntp, rtp_timestamp=rtp_ts, packet_count=pc,
                                   octet_count=oc, reports=reports)
        elif pt == PT_RR:
            if start + 4 > body_end:
                raise RtcpParseError("RTCP RR truncated")
            (ssrc,) = struct.unpack_from("!L", data, start)
            pkt = RtcpReceiverReport(ssrc=ssrc, reports=_parse_reports(data, start + 4, count, body_end))
        elif pt == PT_SDES:
            pkt = _parse_sdes(data, start, count, body_end)
        elif pt == PT_BYE:
            if start + 4 * count > body_end:
                raise RtcpParseError("RTCP BYE truncated")
            sources = struct.unpack_from(f"!{count}L", data, start)
            p = start + 4 * count
            reason = None
            if p < body_end:
                rlen = data[p]
                if p + 1 + rlen > body_end:
                    raise RtcpParseError("RTCP BYE reason truncated")
                reason = bytes(data[p + 1:p + 1 + rlen]).decode("utf-8", "replace")
            pkt = RtcpBye(sources=tuple(sources), reason=reason)
        else:
            pkt = RtcpUnknown(packet_type=pt, count=count, body=bytes(data[start:body_end]))
        packets.append(pkt)
        pos = end
    return packets


def round_trip_time(block: ReportBlock, now: float) -> float | None:
    """RTT in seconds from a report block about our stream (RFC 3550 6.4.1, A - LSR - DLSR).

    ``now`` must be on the clock we used for the NTP field of our SRs. None without an SR.
    """
    if block.lsr == 0:
        return None
    a = ntp_middle32(ntp_timestamp(now))
    rtt = (a - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt >= 0x80000000:  # clock trouble: negative
        return 0.0
    return rtt / 65536.0


@dataclass(slots=True)
class ReceiverStats:
    """Reception statistics of one remote SSRC (RFC 3550 A.1, A.3, A.8).

    ``clock_rate`` converts arrival time to timestamp units for jitter (8000 for G.711).
    The stream is validated: a new source needs ``MIN_SEQUENTIAL`` packets in sequence
    before it counts (probation), and a big jump is accepted only when repeated.
    """

    ssrc: int
    clock_rate: int = 8000
    max_seq: int = 0
    cycles: int = 0
    base_seq: int = 0
    bad_seq: int = RTP_SEQ_MOD + 1
    probation: int = MIN_SEQUENTIAL
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0
    _transit: float | None = None
    _initialised: bool = False
    _last_sr: int = 0
    _last_sr_arrival: float | None = None
    _dup: set[int] = field(default_factory=set)

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def update(self, sequence_number: int, timestamp: int, now: float) -> bool:
        """Account one received RTP packet; False if it is invalid or still on probation.

        Only valid packets update jitter and the counters (A.1 ``update_seq``).
        """
        seq = sequence_number
        if not self._initialised:
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = MIN_SEQUENTIAL
            self._initialised = True
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # Source not yet valid: packets must be in sequence.
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._jitter(timestamp, now)
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # wrapped
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # Very large jump: accept only if the next packet follows it (peer restarted).
            if seq == self.bad_seq:
                self._init_seq(seq)
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: duplicate or reordered packet, counted as received (A.1)
        self.received += 1
        self._jitter(timestamp, now)
        return True

    def _jitter(self, timestamp: int, now: float) -> None:
        # A.8: transit = arrival - timestamp in timestamp units; J += (|D| - J) / 16.
        arrival = now * self.clock_rate
        transit = arrival - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # A timestamp wrap shows as a huge d; fold it back into the 32-bit circle.
            if d > 1 << 31:
                d -= 1 << 32
            elif d < -(1 << 31):
                d += 1 << 32
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max_seq(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max_seq - self.base_seq + 1

    @property
    def cumulative_lost(self) -> int:
        """Expected minus received, clamped to signed 24 bits (duplicates make it negative)."""
        lost = self.expected - self.received
        return max(-(1 << 23), min((1 << 23) - 1, lost))

    def on_sender_report(self, sr: RtcpSenderReport, now: float) -> None:
        """Remember the SR's NTP time and its arrival for LSR/DLSR in our next report."""
        self._last_sr = ntp_middle32(sr.ntp_timestamp)
        self._last_sr_arrival = now

    def report_block(self, now: float) -> ReportBlock:
        """Build the report block for this source and start a new interval (A.3)."""
        expected = self.expected if self._initialised and not self.probation else 0
        received = self.received
        expected_interval = expected - self.expected_prior
        received_interval = received - self.received_prior
        self.expected_prior = expected
        self.received_prior = received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval == 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = 0
        if self._last_sr_arrival is not None:
            dlsr = max(0, int((now - self._last_sr_arrival) * 65536)) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=self.cumulative_lost if expected else 0,
            highest_sequence=self.extended_max_seq & 0xFFFFFFFF,
            jitter=int(self.jitter),
            lsr=self._last_sr,
            dlsr=dlsr,
        )
