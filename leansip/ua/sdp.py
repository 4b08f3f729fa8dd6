"""SDP (RFC 4566) model and the offer/answer rules (RFC 3264) for one audio stream.

Parse with :func:`parse_sdp` (raises :class:`SdpError`, status 400), serialize with
:meth:`SessionDescription.serialize`; the two are symmetric, so an unmodified parse
serializes back to the same text (lines in RFC 4566 order, CRLF endings).

The phone keeps one :class:`LocalSession` per dialog. It owns our ``o=`` line and bumps
the version for every new description we send (RFC 3264 8: re-offers increment it):

* caller: ``offer = session.offer(config)`` -> send; on the answer call
  :func:`process_answer` (``offer``, ``answer``, ``config``) -> :class:`NegotiatedMedia`.
* callee: ``answer, media = session.answer(remote_offer, config)`` -> send ``answer``.

:class:`MediaConfig` says what we can do: address/port, codecs in our preference order,
DTMF (RFC 4733 telephone-event), SRTP policy ``off | optional | mandatory`` (RFC 4568
SDES; ``optional`` offers RTP/AVP with crypto lines, i.e. best-effort SRTP), and our own
direction (``sendonly`` to put the peer on hold).

When nothing in an offer is acceptable, or an answer does not fit our offer,
:class:`SdpNegotiationError` is raised with ``status = 488`` (Not Acceptable Here),
which the UA sends back as is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from leansip.media.srtp import SUITES, CryptoAttribute, CryptoParseError, generate_crypto
from leansip.sip.errors import SipParseError

__all__ = [
    "SdpError",
    "SdpNegotiationError",
    "Origin",
    "Connection",
    "RtpMap",
    "MediaDescription",
    "SessionDescription",
    "parse_sdp",
    "MediaConfig",
    "NegotiatedMedia",
    "LocalSession",
    "build_offer",
    "answer_offer",
    "process_answer",
    "reverse_direction",
    "DIRECTIONS",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
SrtpPolicy = Literal["off", "optional", "mandatory"]
DIRECTIONS: tuple[str, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 static audio payload types we can name without an rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000),
    9: ("G722", 8000), 13: ("CN", 8000), 18: ("G729", 8000),
}
_CODEC_PT = {"PCMU": 0, "PCMA": 8}  # what we implement (leansip.media.g711)


class SdpError(SipParseError):
    """A malformed session description (answer 400)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason, status)


class SdpNegotiationError(SdpError):
    """Well-formed SDP we cannot accept: no common codec, SRTP mismatch, rejected stream (488)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 488)


def reverse_direction(d: str) -> str:
    """The same stream seen from the other end: sendonly <-> recvonly (RFC 3264 6.1)."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(d, d)


def _dir_from_flags(send: bool, recv: bool) -> str:
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
            (False, False): "inactive"}[(send, recv)]


def _flags(d: str) -> tuple[bool, bool]:
    return d in ("sendrecv", "sendonly"), d in ("sendrecv", "recvonly")


# --- model -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str = "-"
    session_id: str = "0"
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.session_version} {self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True, kw_only=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/ttl][/count]``; ``address`` keeps any suffix."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """c=0.0.0.0: the RFC 2543 way of saying "do not send to me" (RFC 3264 8.4)."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        s = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return s + (f"/{self.channels}" if self.channels is not None else "")


def _split_attr(line: str) -> tuple[str, str | None]:
    name, sep, value = line.partition(":")
    return name, (value if sep else None)


@dataclass(slots=True, kw_only=True)
class MediaDescription:
    """One ``m=`` section. ``attributes`` keeps every ``a=`` line in order (name, value or None);
    the properties below read the ones offer/answer cares about."""

    media: str = "audio"
    port: int = 0
    port_count: int | None = None
    proto: str = "RTP/AVP"
    formats: list[str] = field(default_factory=list)
    information: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attr_values(self, name: str) -> list[str]:
        return [v or "" for n, v in self.attributes if n == name]

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """Explicit rtpmaps plus RFC 3551 static types listed in ``formats`` without one."""
        out: dict[int, RtpMap] = {}
        for v in self.attr_values("rtpmap"):
            pt_s, _, rest = v.partition(" ")
            parts = rest.strip().split("/")
            try:
                pt = int(pt_s)
                out[pt] = RtpMap(payload_type=pt, encoding=parts[0], clock_rate=int(parts[1]),
                                 channels=int(parts[2]) if len(parts) > 2 else None)
            except (ValueError, IndexError):
                continue  # a malformed rtpmap makes that format unusable, not the whole SDP
        for f in self.formats:
            if f.isdigit() and int(f) not in out and int(f) in STATIC_PAYLOAD_TYPES:
                name, rate = STATIC_PAYLOAD_TYPES[int(f)]
                out[int(f)] = RtpMap(payload_type=int(f), encoding=name, clock_rate=rate)
        return out

    @property
    def fmtp(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for v in self.attr_values("fmtp"):
            pt_s, _, params = v.partition(" ")
            if pt_s.isdigit():
                out[int(pt_s)] = params.strip()
        return out

    @property
    def direction(self) -> str | None:
        """The media-level direction attribute, if any (last one wins)."""
        found = [n for n, v in self.attributes if v is None and n in DIRECTIONS]
        return found[-1] if found else None

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """Parsable ``a=crypto`` lines in offer order; malformed ones are skipped (RFC 4568 6.1)."""
        out = []
        for v in self.attr_values("crypto"):
            try:
                out.append(CryptoAttribute.parse(v))
            except CryptoParseError:
                continue
        return out

    @property
    def ptime(self) -> int | None:
        for v in self.attr_values("ptime"):
            try:
                return int(float(v))
            except ValueError:
                return None
        return None

    @property
    def rtcp_port(self) -> int:
        """RTCP port: ``a=rtcp`` (RFC 3605) if present, else RTP port + 1."""
        for v in self.attr_values("rtcp"):
            head = v.split(" ", 1)[0]
            if head.isdigit():
                return int(head)
        return self.port + 1

    def serialize_lines(self) -> list[str]:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        lines = [f"m={' '.join([self.media, port, self.proto, *self.formats])}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        return lines


@dataclass(slots=True, kw_only=True)
class SessionDescription:
    """A whole SDP body. ``times`` holds each ``t=`` with its ``r=`` lines."""

    version: int = 0
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[tuple[str, list[str]]] = field(default_factory=lambda: [("0 0", [])])
    timezone: str | None = None
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @property
    def direction(self) -> str | None:
        found = [n for n, v in self.attributes if v is None and n in DIRECTIONS]
        return found[-1] if found else None

    def media_direction(self, m: MediaDescription) -> str:
        """Effective direction of a stream: media level, else session level, else sendrecv (RFC 3264 5.1)."""
        return m.direction or self.direction or "sendrecv"

    def media_connection(self, m: MediaDescription) -> Connection | None:
        return m.connection or self.connection

    def serialize(self) -> str:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            lines.append(f"i={self.information}")
        if self.uri is not None:
            lines.append(f"u={self.uri}")
        lines += [f"e={e}" for e in self.emails]
        lines += [f"p={p}" for p in self.phones]
        if self.connection is not None:
            lines.append(f"c={self.connection}")
        lines += [f"b={b}" for b in self.bandwidths]
        for t, repeats in self.times:
            lines.append(f"t={t}")
            lines += [f"r={r}" for r in repeats]
        if self.timezone is not None:
            lines.append(f"z={self.timezone}")
        if self.key is not None:
            lines.append(f"k={self.key}")
        lines += [f"a={n}" if v is None else f"a={n}:{v}" for n, v in self.attributes]
        for m in self.media:
            lines += m.serialize_lines()
        return "\r\n".join(lines) + "\r\n"

    def __bytes__(self) -> bytes:
        return self.serialize().encode("utf-8")


# --- parser ----------------------------------------------------------------------------


def _parse_connection(v: str) -> Connection:
    parts = v.split()
    if len(parts) != 3:
        raise SdpError(f"bad c= line {v!r}")
    return Connection(nettype=parts[0], addrtype=parts[1], address=parts[2])


def _parse_media(v: str) -> MediaDescription:
    parts = v.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line {v!r}")
    port_s, _, count_s = parts[1].partition("/")
    try:
        port = int(port_s)
        count = int(count_s) if count_s else None
    except ValueError as exc:
        raise SdpError(f"bad port in m= line {v!r}") from exc
    if not 0 <= port <= 65535:
        raise SdpError(f"port out of range in m= line {v!r}")
    return MediaDescription(media=parts[0], port=port, port_count=count, proto=parts[2], formats=parts[3:])


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` (status 400) on anything malformed.

    Tolerates LF-only line ends and an empty ``s=`` (seen in RFC 3264's own examples).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError("SDP is not UTF-8") from exc
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    sd = SessionDescription(times=[])
    seen_o = seen_s = False
    current: MediaDescription | None = None
    for ln in lines[1:]:
        if len(ln) < 2 or ln[1] != "=":
            raise SdpError(f"bad SDP line {ln!r}")
        t, v = ln[0], ln[2:]
        if current is None:
            if t == "o":
                p = v.split()
                if len(p) != 6:
                    raise SdpError(f"bad o= line {v!r}")
                try:
                    ver = int(p[2])
                except ValueError as exc:
                    raise SdpError(f"bad session version in o= line {v!r}") from exc
                sd.origin = Origin(username=p[0], session_id=p[1], session_version=ver, nettype=p[3],
                                   addrtype=p[4], address=p[5])
                seen_o = True
            elif t == "s":
                sd.session_name = v
                seen_s = True
            elif t == "i":
                sd.information = v
            elif t == "u":
                sd.uri = v
            elif t == "e":
                sd.emails.append(v)
            elif t == "p":
                sd.phones.append(v)
            elif t == "c":
                sd.connection = _parse_connection(v)
            elif t == "b":
                sd.bandwidths.append(v)
            elif t == "t":
                sd.times.append((v, []))
            elif t == "r":
                if not sd.times:
                    raise SdpError("r= before t=")
                sd.times[-1][1].append(v)
            elif t == "z":
                sd.timezone = v
            elif t == "k":
                sd.key = v
            elif t == "a":
                sd.attributes.append(_split_attr(v))
            elif t == "m":
                current = _parse_media(v)
                sd.media.append(current)
            else:
                raise SdpError(f"unknown SDP line type {t!r}")
        else:
            if t == "m":
                current = _parse_media(v)
                sd.media.append(current)
            elif t == "i":
                current.information = v
            elif t == "c":
                current.connection = _parse_connection(v)
            elif t == "b":
                current.bandwidths.append(v)
            elif t == "k":
                current.key = v
            elif t == "a":
                current.attributes.append(_split_attr(v))
            else:
                raise SdpError(f"SDP line type {t!r} not allowed in a media section")
    if not seen_o or not seen_s:
        raise SdpError("SDP needs o= and s= lines")
    if not sd.times:
        raise SdpError("SDP needs a t= line")
    for m in sd.media:
        if m.port != 0 and sd.media_connection(m) is None:
            raise SdpError("no c= line for an active media stream")
    return sd


# --- offer/answer ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaConfig:
    """What our end can do for audio. ``codecs`` are payload names in our preference order."""

    address: str
    port: int
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    dtmf_payload_type: int | None = 101  # None: no telephone-event
    srtp: SrtpPolicy = "off"
    suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    direction: Direction = "sendrecv"  # what we want; "sendonly" puts the peer on hold
    ptime: int = 20

    def __post_init__(self) -> None:
        for c in self.codecs:
            if c.upper() not in _CODEC_PT:
                raise ValueError(f"codec {c} not implemented")
        if self.srtp not in ("off", "optional", "mandatory"):
            raise ValueError("srtp policy is off, optional or mandatory")
        for s in self.suites:
            if s not in SUITES:
                raise ValueError(f"unsupported SRTP suite {s}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"bad direction {self.direction}")

    @property
    def addrtype(self) -> str:
        return "IP6" if ":" in self.address else "IP4"


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiatedMedia:
    """The outcome of one offer/answer for the audio stream, from our point of view.

    ``direction`` is what *we* do (sendonly: we send, the peer does not). Build an
    :class:`leansip.media.srtp.SrtpContext` from ``local_crypto``/``remote_crypto``
    when both are set; both None means plain RTP.
    """

    codec: str
    payload_type: int
    clock_rate: int
    dtmf_payload_type: int | None
    remote_address: str
    remote_port: int
    remote_rtcp_port: int
    direction: str
    ptime: int
    media_index: int
    local_crypto: CryptoAttribute | None = None
    remote_crypto: CryptoAttribute | None = None
    remote_hold: bool = False  # the peer asked us not to send (sendonly/inactive or c=0.0.0.0)

    @property
    def secure(self) -> bool:
        return self.local_crypto is not None and self.remote_crypto is not None

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


def _audio_section(config: MediaConfig, *, proto: str, formats: list[int], rtpmaps: list[RtpMap],
                   fmtp: dict[int, str], direction: str, crypto: Iterable[CryptoAttribute]) -> MediaDescription:
    attrs: list[tuple[str, str | None]] = [("rtpmap", str(r)) for r in rtpmaps]
    attrs += [("fmtp", f"{pt} {p}") for pt, p in fmtp.items()]
    attrs.append(("ptime", str(config.ptime)))
    attrs += [("crypto", str(c)) for c in crypto]
    attrs.append((direction, None))
    return MediaDescription(media="audio", port=config.port, proto=proto, formats=[str(f) for f in formats],
                            attributes=attrs)


def build_offer(config: MediaConfig, origin: Origin, *,
                crypto: list[CryptoAttribute] | None = None) -> SessionDescription:
    """An offer for one audio stream (prefer :meth:`LocalSession.offer`, which handles o=).

    PCMU/PCMA as configured, telephone-event with ``fmtp 0-16`` (RFC 4733 7.1.1), ``ptime``,
    and with SRTP ``optional``/``mandatory`` one crypto line per configured suite (RTP/AVP
    for best-effort, RTP/SAVP for mandatory). Pass ``crypto`` to reuse keys in a re-offer.
    """
    formats = [_CODEC_PT[c.upper()] for c in config.codecs]
    rtpmaps = [RtpMap(payload_type=_CODEC_PT[c.upper()], encoding=c.upper(), clock_rate=8000)
               for c in config.codecs]
    fmtp: dict[int, str] = {}
    if config.dtmf_payload_type is not None:
        formats.append(config.dtmf_payload_type)
        rtpmaps.append(RtpMap(payload_type=config.dtmf_payload_type, encoding="telephone-event", clock_rate=8000))
        fmtp[config.dtmf_payload_type] = "0-16"
    if config.srtp == "off":
        proto, lines = "RTP/AVP", []
    else:
        proto = "RTP/SAVP" if config.srtp == "mandatory" else "RTP/AVP"
        lines = crypto if crypto is not None else [generate_crypto(i + 1, s) for i, s in enumerate(config.suites)]
    m = _audio_section(config, proto=proto, formats=formats, rtpmaps=rtpmaps, fmtp=fmtp,
                       direction=config.direction, crypto=lines)
    return SessionDescription(
        origin=replace(origin), session_name="leansip",
        connection=Connection(addrtype=config.addrtype, address=config.address), media=[m],
    )


def _choose_codec(m: MediaDescription, config: MediaConfig) -> tuple[str, int] | None:
    maps = m.rtpmaps
    ours = {c.upper() for c in config.codecs}
    for f in m.formats:
        if not f.isdigit():
            continue
        rm = maps.get(int(f))
        if rm and rm.encoding.upper() in ours and rm.clock_rate == 8000 and rm.channels in (None, 1):
            return rm.encoding.upper(), int(f)
    return None


def _telephone_event_pt(m: MediaDescription) -> int | None:
    maps = m.rtpmaps
    for f in m.formats:
        if f.isdigit():
            rm = maps.get(int(f))
            if rm and rm.encoding.lower() == "telephone-event" and rm.clock_rate == 8000:
                return int(f)
    return None


def _rejected(m: MediaDescription) -> MediaDescription:
    # RFC 3264 6: a rejected stream keeps its m= line with port 0 and at least one format.
    return MediaDescription(media=m.media, port=0, proto=m.proto, formats=m.formats[:1] or ["0"])


def answer_offer(offer: SessionDescription, config: MediaConfig, origin: Origin) -> tuple[SessionDescription,
                                                                                           NegotiatedMedia]:
    """Answer a remote offer (prefer :meth:`LocalSession.answer`); raise 488 if nothing fits.

    Accepts the first audio stream with a common codec (first in the offer's order that we
    implement) and a transport our SRTP policy allows; every other stream is rejected with
    port 0, keeping the m= count (RFC 3264 6). The direction mirrors the offer (6.1) and is
    narrowed by ``config.direction``; c=0.0.0.0 in the offer means the peer is on hold.
    """
    answer_media: list[MediaDescription] = []
    chosen: NegotiatedMedia | None = None
    reasons: list[str] = []
    for idx, m in enumerate(offer.media):
        if chosen is not None or m.media != "audio" or m.port == 0:
            answer_media.append(_rejected(m))
            continue
        if m.proto not in ("RTP/AVP", "RTP/SAVP"):
            reasons.append(f"transport {m.proto} not supported")
            answer_media.append(_rejected(m))
            continue
        codec = _choose_codec(m, config)
        if codec is None:
            reasons.append("no common codec")
            answer_media.append(_rejected(m))
            continue
        remote_crypto: CryptoAttribute | None = None
        if config.srtp != "off" or m.proto == "RTP/SAVP":
            for c in m.crypto:
                if c.supported and c.suite in config.suites:
                    remote_crypto = c
                    break
        if m.proto == "RTP/SAVP" and (config.srtp == "off" or remote_crypto is None):
            reasons.append("SRTP offered but no usable crypto" if config.srtp != "off" else "SRTP not enabled")
            answer_media.append(_rejected(m))
            continue
        if config.srtp == "mandatory" and remote_crypto is None:
            reasons.append("SRTP required but not offered")
            answer_media.append(_rejected(m))
            continue
        if config.srtp == "off":
            remote_crypto = None
        local_crypto = generate_crypto(remote_crypto.tag, remote_crypto.suite) if remote_crypto else None
        conn = offer.media_connection(m)
        assert conn is not None  # parse_sdp guarantees a connection for active streams
        offered_dir = offer.media_direction(m)
        peer_send, peer_recv = _flags(offered_dir)
        hold_addr = conn.is_hold
        if hold_addr:
            peer_recv = False
        want_send, want_recv = _flags(config.direction)
        send, recv = want_send and peer_recv, want_recv and peer_send
        # Our answer's direction (RFC 3264 6.1): sendonly offer -> recvonly, recvonly ->
        # sendonly, inactive -> inactive; c=0.0.0.0 counts as "do not send to me" (8.4).
        te = _telephone_event_pt(m) if config.dtmf_payload_type is not None else None
        formats = [codec[1]] + ([te] if te is not None else [])
        rtpmaps = [RtpMap(payload_type=codec[1], encoding=codec[0], clock_rate=8000)]
        fmtp: dict[int, str] = {}
        if te is not None:
            rtpmaps.append(RtpMap(payload_type=te, encoding="telephone-event", clock_rate=8000))
            fmtp[te] = m.fmtp.get(te, "0-16")
        answer_media.append(_audio_section(
            config, proto=m.proto, formats=formats, rtpmaps=rtpmaps, fmtp=fmtp,
            direction=_dir_from_flags(send, recv), crypto=[local_crypto] if local_crypto else []))
        chosen = NegotiatedMedia(
            codec=codec[0], payload_type=codec[1], clock_rate=8000, dtmf_payload_type=te,
            remote_address=conn.host, remote_port=m.port, remote_rtcp_port=m.rtcp_port,
            direction=_dir_from_flags(send, recv), ptime=m.ptime or config.ptime, media_index=idx,
            local_crypto=local_crypto, remote_crypto=remote_crypto, remote_hold=not peer_recv,
        )
    if chosen is None:
        raise SdpNegotiationError("; ".join(reasons) or "no audio stream offered")
    answer = SessionDescription(
        origin=replace(origin), session_name="leansip",
        connection=Connection(addrtype=config.addrtype, address=config.address), media=answer_media,
    )
    return answer, chosen


def process_answer(offer: SessionDescription, answer: SessionDescription, config: MediaConfig) -> NegotiatedMedia:
    """Check the answer to our ``offer`` and say what was agreed; raise 488 if it does not fit.

    The answer must keep our m= lines (RFC 3264 6), accept our audio stream (port != 0),
    pick a codec we offered, and, if we offered SRTP, echo one of our crypto tags with the
    same suite (RFC 4568 7.1.3) -- mandatory SRTP without crypto in the answer fails.
    """
    if len(answer.media) != len(offer.media):
        raise SdpNegotiationError("answer has a different number of m= lines")
    idx = next((i for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0), None)
    if idx is None:
        raise SdpNegotiationError("our offer has no active audio stream")
    ours, theirs = offer.media[idx], answer.media[idx]
    if theirs.port == 0:
        raise SdpNegotiationError("audio stream rejected by the answer")
    if theirs.proto != ours.proto:
        raise SdpNegotiationError(f"answer changed transport {ours.proto} -> {theirs.proto}")
    offered_maps = ours.rtpmaps
    answer_maps = theirs.rtpmaps
    codec: tuple[str, int] | None = None
    for f in theirs.formats:
        if f.isdigit() and int(f) in offered_maps:
            rm = answer_maps.get(int(f)) or offered_maps[int(f)]
            if rm.encoding.upper() in _CODEC_PT:
                codec = (rm.encoding.upper(), int(f))
                break
    if codec is None:
        raise SdpNegotiationError("answer has no codec from our offer")
    te = _telephone_event_pt(theirs)
    if te is not None and te not in offered_maps:
        te = None
    local_crypto = remote_crypto = None
    for c in theirs.crypto:
        mine = next((o for o in ours.crypto if o.tag == c.tag), None)
        if mine is not None and mine.suite == c.suite and c.supported:
            local_crypto, remote_crypto = mine, c
            break
    if ours.crypto and theirs.crypto and remote_crypto is None:
        raise SdpNegotiationError("answer crypto does not match any offered tag/suite")
    if ours.proto == "RTP/SAVP" and remote_crypto is None:
        raise SdpNegotiationError("SRTP required but the answer has no crypto")
    conn = answer.media_connection(theirs)
    if conn is None:
        raise SdpNegotiationError("answer has no connection address")
    ans_dir = answer.media_direction(theirs)
    peer_send, peer_recv = _flags(ans_dir)
    if conn.is_hold:
        peer_recv = False
    want_send, want_recv = _flags(offer.media_direction(ours))
    return NegotiatedMedia(
        codec=codec[0], payload_type=codec[1], clock_rate=8000, dtmf_payload_type=te,
        remote_address=conn.host, remote_port=theirs.port, remote_rtcp_port=theirs.rtcp_port,
        direction=_dir_from_flags(want_send and peer_recv, want_recv and peer_send),
        ptime=theirs.ptime or config.ptime, media_index=idx,
        local_crypto=local_crypto, remote_crypto=remote_crypto, remote_hold=not peer_recv,
    )


class LocalSession:
    """Our side of one dialog's SDP: a stable ``o=`` session id and a version that increases
    with every changed description we send (RFC 3264 8). Keeps SRTP keys across re-offers
    so a hold/resume does not re-key unless asked."""

    def __init__(self, *, username: str = "leansip", address: str, session_id: int | None = None,
                 rng: random.Random | None = None) -> None:
        r = rng or random.SystemRandom()
        sid = session_id if session_id is not None else r.randrange(1, 2**62)
        self.origin = Origin(username=username, session_id=str(sid), session_version=sid,
                             addrtype="IP6" if ":" in address else "IP4", address=address)
        self._sent = False
        self._last_crypto: list[CryptoAttribute] | None = None
        self.last_sent: SessionDescription | None = None

    def _next_origin(self, changed: bool) -> Origin:
        if self._sent and changed:
            self.origin.session_version += 1
        self._sent = True
        return replace(self.origin)

    def offer(self, config: MediaConfig, *, changed: bool = True, rekey: bool = False) -> SessionDescription:
        """A new offer (initial or re-offer); the o= version goes up unless ``changed=False``."""
        crypto = None if rekey else self._last_crypto
        if crypto is not None and [c.suite for c in crypto] != list(config.suites):
            crypto = None
        sd = build_offer(config, self._next_origin(changed), crypto=crypto)
        self._last_crypto = sd.media[0].crypto or None
        self.last_sent = sd
        return sd

    def answer(self, offer: SessionDescription, config: MediaConfig, *,
               changed: bool = True) -> tuple[SessionDescription, NegotiatedMedia]:
        """Answer a remote (re-)offer; raises :class:`SdpNegotiationError` (488) if unacceptable.

        The version is only consumed when the answer is built, so a 488 leaves it alone.
        """
        preview = replace(self.origin)
        if self._sent and changed:
            preview.session_version += 1
        sd, media = answer_offer(offer, config, preview)
        self._next_origin(changed)
        self.last_sent = sd
        return sd, media
