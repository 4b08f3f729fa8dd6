"""DTMF digits: RFC 4733 telephone-events in the RTP stream, and the SIP INFO bodies used as a fallback. Pure.

Theory of operation
-------------------
A digit is an *event* in the call's RTP stream (same SSRC, same clock and sequence space as the audio, its own
payload type from the SDP's ``telephone-event/8000``). :class:`DtmfSender` decides, frame by frame, what the
stream carries while digits are queued; :class:`DtmfReceiver` turns the peer's event packets back into digits.

Sending (RFC 4733 2.5.1): for each digit, every 20 ms frame carries one event packet instead of audio:

* all packets of one event carry the RTP timestamp of the event's *start* (the stream clock when it began); the
  clock itself keeps running, so the audio after the event continues at the right timestamp (2.5.1.2);
* the first packet has the marker bit (2.5.1.3); each packet's ``duration`` is the time since the start, so any
  single packet tells the receiver how long the tone has lasted so far -- the updates are redundant on purpose;
* the last packet has the E bit and the final duration and is sent three times in all, one frame apart, with the
  same timestamp and new sequence numbers (2.5.1.4), so a lost end packet does not stretch the tone;
* then ``gap`` of ordinary audio (a pause between two digits) before the next digit starts with a new timestamp.
  Durations are capped at 5 s, far below the 16-bit duration field's 8.19 s, so no event needs segments (2.5.1.3).

Receiving (2.5.2): packets are grouped by timestamp. A digit is reported once, when its E bit arrives (with the
final duration); the retransmitted end packets and late updates of an event already reported are ignored. If no
end packet ever arrives, the digit is reported when the next event starts or when the event has been silent for
:data:`EVENT_TIMEOUT` (call :meth:`DtmfReceiver.poll`). A packet whose start timestamp is older than the event last
reported is a late one and ignored. Only the DTMF events 0-15 are reported; other event codes are dropped.

SIP INFO (the fallback when the peer's SDP has no telephone-event): :func:`info_body` writes and
:func:`parse_info_body` reads ``application/dtmf-relay`` (``Signal=5`` / ``Duration=160``, duration in ms) and the
bare ``application/dtmf`` (just the digit).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from leansip.media.rtp import uint32_gt

__all__ = [
    "DIGITS",
    "DtmfError",
    "TelephoneEvent",
    "DtmfDigit",
    "DtmfSender",
    "DtmfReceiver",
    "EventFrame",
    "digit_to_event",
    "event_to_digit",
    "check_digits",
    "info_body",
    "parse_info_body",
    "DTMF_RELAY",
    "DTMF_PLAIN",
    "EVENT_TIMEOUT",
]

#: RFC 4733 3.2 event codes 0-15, in order
DIGITS = "0123456789*#ABCD"
DTMF_RELAY = "application/dtmf-relay"
DTMF_PLAIN = "application/dtmf"
CLOCK_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms
END_REPEATS = 3  # RFC 4733 2.5.1.4: the final packet is sent a total of three times
MAX_DURATION_MS = 5000
MIN_DURATION_MS = 40
#: an event with no packet for this long is over even without its end packet (seconds)
EVENT_TIMEOUT = 1.0
#: most digits queued at once (a bound on what an application or the CLI can pile up)
MAX_QUEUED = 256


class DtmfError(ValueError):
    """A bad digit string, or an event payload too short to read. Drop the packet; never answer it."""


def digit_to_event(digit: str) -> int:
    """'0'-'9', '*', '#', 'A'-'D' (either case) -> event code 0-15; :class:`DtmfError` otherwise."""
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r} (use 0-9, *, #, A-D)")
    return index


def event_to_digit(event: int) -> str | None:
    """Event code -> digit, None for the codes that are not DTMF (flash, modem tones ...)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def check_digits(digits: str) -> str:
    """The digits upper-cased, or :class:`DtmfError` naming the first one that is not DTMF."""
    for d in digits:
        digit_to_event(d)
    return digits.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEvent:
    """One RFC 4733 2.3 event payload: event code, E(nd) bit, volume (0-63, -dBm0), duration (timestamp units)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError("event code is one octet")
        if not 0 <= self.volume <= 63:
            raise ValueError("volume is 6 bits")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError("duration is 16 bits")

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """The first event of a payload (RFC 4733 packs one per packet; more would come as RFC 2198 blocks)."""
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} bytes (needs 4)")
        event, flags, duration = struct.unpack_from("!BBH", payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        """``parse(serialize(e)) == e``; the R bit is sent as zero (2.3.3)."""
        return struct.pack("!BBH", self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfDigit:
    """A digit the peer sent, with how long it was held (ms) and how it came (``rfc4733`` or ``info``)."""

    digit: str
    duration_ms: int
    via: str = "rfc4733"


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFrame:
    """What :meth:`DtmfSender.frame` puts in this 20 ms frame instead of audio: one event packet."""

    payload: bytes
    timestamp: int  # the RTP timestamp of the event's start
    marker: bool


@dataclass(slots=True)
class _Tone:
    event: int
    frames: int  # frames the tone lasts (the E packet is the last of them)
    sent: int = 0  # event packets sent so far (the three end packets included)
    start: int | None = None  # the RTP timestamp at the first packet


class DtmfSender:
    """Digits queued by :meth:`send`, turned into event packets one 20 ms frame at a time (see the module doc).

    Call :meth:`frame` once per frame with the stream's current RTP timestamp: it returns an
    :class:`EventFrame` to send in place of audio, or None (send audio as usual; a pause or nothing queued)."""

    def __init__(self, *, duration_ms: int = 100, gap_ms: int = 60, volume: int = 10) -> None:
        if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"DTMF duration must be {MIN_DURATION_MS}-{MAX_DURATION_MS} ms")
        if not 0 <= gap_ms <= 2000 or not 0 <= volume <= 63:
            raise ValueError("gap is 0-2000 ms, volume 0-63")
        self.duration_ms = duration_ms
        self.gap_ms = gap_ms
        self.volume = volume
        self._queue: deque[_Tone] = deque()
        self._pause = 0  # audio frames to let through before the next tone

    @property
    def busy(self) -> bool:
        """Digits still queued or being sent."""
        return bool(self._queue)

    def send(self, digits: str, duration_ms: int | None = None) -> None:
        """Queue ``digits`` (0-9 * # A-D); raises :class:`DtmfError` for anything else or past
        :data:`MAX_QUEUED`, and queues nothing then."""
        ms = self.duration_ms if duration_ms is None else duration_ms
        if not MIN_DURATION_MS <= ms <= MAX_DURATION_MS:
            raise DtmfError(f"DTMF duration must be {MIN_DURATION_MS}-{MAX_DURATION_MS} ms")
        events = [digit_to_event(d) for d in digits]
        if len(self._queue) + len(events) > MAX_QUEUED:
            raise DtmfError(f"more than {MAX_QUEUED} digits queued")
        frames = max(1, round(ms * CLOCK_RATE / 1000 / FRAME_SAMPLES))
        self._queue.extend(_Tone(event=e, frames=frames) for e in events)

    def frame(self, timestamp: int) -> EventFrame | None:
        """This frame's event packet, or None for audio. ``timestamp`` is the stream clock now."""
        if self._pause > 0:
            self._pause -= 1
            return None
        if not self._queue:
            return None
        tone = self._queue[0]
        if tone.start is None:
            tone.start = timestamp
        tone.sent += 1
        # duration so far, counting this frame; the end packet and its repeats carry the full length
        elapsed = min(tone.sent, tone.frames)
        end = tone.sent >= tone.frames
        event = TelephoneEvent(event=tone.event, end=end, volume=self.volume,
                               duration=elapsed * FRAME_SAMPLES)
        out = EventFrame(payload=event.serialize(), timestamp=tone.start, marker=tone.sent == 1)
        if tone.sent >= tone.frames + END_REPEATS - 1:
            self._queue.popleft()
            self._pause = round(self.gap_ms * CLOCK_RATE / 1000 / FRAME_SAMPLES)
        return out


@dataclass(slots=True)
class _Heard:
    timestamp: int
    event: int
    duration: int
    last_seen: float
    reported: bool = False


class DtmfReceiver:
    """Event packets of one stream in, :class:`DtmfDigit` values out (see the module doc)."""

    def __init__(self) -> None:
        self._current: _Heard | None = None
        self._ssrc: int | None = None
        self.dropped = 0  # short payloads, non-DTMF events, late packets

    def receive(self, payload: bytes, timestamp: int, ssrc: int, now: float) -> list[DtmfDigit]:
        """One event packet (already known to carry the telephone-event payload type)."""
        try:
            ev = TelephoneEvent.parse(payload)
        except DtmfError:
            self.dropped += 1
            return []
        if event_to_digit(ev.event) is None:
            self.dropped += 1
            return []
        out: list[DtmfDigit] = []
        cur = self._current
        if ssrc != self._ssrc:
            # a new source (after a transfer or a re-INVITE): its clock has nothing to do with the old one
            if cur is not None and not cur.reported:
                out.append(self._report(cur))
            self._ssrc = ssrc
            cur = self._current = None
        if cur is not None and cur.timestamp == timestamp:
            cur.last_seen = now
            if cur.reported:
                return []  # a repeated end packet, or an update arriving after its end
            cur.duration = max(cur.duration, ev.duration)
        else:
            if cur is not None and not uint32_gt(timestamp, cur.timestamp):
                self.dropped += 1  # an event that started before the one we have: late
                return out
            if cur is not None and not cur.reported:
                out.append(self._report(cur))  # its end packets were all lost
            cur = self._current = _Heard(timestamp=timestamp, event=ev.event, duration=ev.duration, last_seen=now)
        if ev.end:
            out.append(self._report(cur))
        return out

    def poll(self, now: float) -> list[DtmfDigit]:
        """Report an event whose packets stopped without an end packet, :data:`EVENT_TIMEOUT` after the last."""
        cur = self._current
        if cur is not None and not cur.reported and now - cur.last_seen >= EVENT_TIMEOUT:
            return [self._report(cur)]
        return []

    @staticmethod
    def _report(heard: _Heard) -> DtmfDigit:
        heard.reported = True
        digit = event_to_digit(heard.event)
        assert digit is not None
        return DtmfDigit(digit=digit, duration_ms=heard.duration * 1000 // CLOCK_RATE)


def info_body(digit: str, duration_ms: int) -> bytes:
    """An ``application/dtmf-relay`` body for one digit (the format of Cisco and most PBXes)."""
    digit_to_event(digit)
    return f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n".encode()


def parse_info_body(content_type: str, body: bytes) -> DtmfDigit | None:
    """The digit in an INFO body of ``application/dtmf-relay`` or ``application/dtmf``; None when the body does
    not hold one (the caller answers 200 anyway: the INFO itself was fine). Tolerant of case, spaces and of
    ``*``/``#`` written as 10/11 (some PBXes do)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace")
    signal: str | None = None
    duration = 0
    if kind == DTMF_PLAIN:
        signal = text.strip()
    elif kind == DTMF_RELAY:
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            key, value = key.strip().lower(), value.strip()
            if key == "signal":
                signal = value
            elif key == "duration" and value.isdigit():
                duration = min(int(value), 60000)
    if signal is None:
        return None
    if signal in ("10", "11"):
        signal = "*" if signal == "10" else "#"
    if len(signal) != 1 or DIGITS.find(signal.upper()) < 0:
        return None
    return DtmfDigit(digit=signal.upper(), duration_ms=duration, via="info")
