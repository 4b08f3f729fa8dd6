"""ITU-T G.711 µ-law (PCMU) and A-law (PCMA) codecs over 16-bit linear PCM.

Both laws map one 8-bit code word to one sample, so the whole codec is two lookup
tables per law: 256 decoded samples and 65536 encoded bytes (one per 16-bit value).
A 20 ms frame (160 samples) is then a single ``bytes.translate``-style pass in C
(``bytes(map(table.__getitem__, ...))``), which is what the profile asks for: no
per-sample Python arithmetic on the media path.

The reference algorithm is the classic Sun/CCITT ``g711.c`` (public domain), which
matches the tables in G.711 itself (µ-law: section 3 / Table 2a; A-law: Table 1a).

Samples are ``array('h')`` in native byte order, the same type :mod:`leansip.media.audiofile`
yields, so the audio path never converts lists of ints.

Call :func:`ulaw_encode` / :func:`alaw_encode` with a frame and put the bytes into an
RTP payload; :func:`ulaw_decode` / :func:`alaw_decode` take a payload back to samples.
:func:`codec_for_payload_type` is the one lookup the phone uses to pick a codec.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "linear_to_ulaw",
    "ulaw_to_linear",
    "linear_to_alaw",
    "alaw_to_linear",
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "G711Codec",
    "PCMU",
    "PCMA",
    "codec_for_payload_type",
    "codec_for_name",
    "silence_payload",
]

_BIAS = 0x84  # µ-law bias (132): shifts the segment ends onto powers of two
_CLIP = 8159  # largest 14-bit magnitude µ-law represents before the bias is added (g711.c CLIP)

# Segment end points for the 13-bit A-law magnitude (sample >> 3) and 14-bit µ-law magnitude.
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def linear_to_ulaw(sample: int) -> int:
    """Encode one signed 16-bit sample to a µ-law code word (the slow reference path).

    Kept public because the tables are built from it and tests check it against G.711.
    Values outside int16 raise ValueError: callers must clip, silently wrapping would
    turn a loud sample into noise.
    """
    if not -32768 <= sample <= 32767:
        raise ValueError(f"sample {sample} outside int16")
    # Work on the 14-bit magnitude as g711.c does (sample >> 2), with the bias added.
    pcm = sample >> 2
    if pcm < 0:
        pcm = -pcm
        mask = 0x7F
    else:
        mask = 0xFF
    if pcm > _CLIP:
        pcm = _CLIP
    pcm += _BIAS >> 2
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    uval = (seg << 4) | ((pcm >> (seg + 1)) & 0x0F)
    return uval ^ mask


def ulaw_to_linear(code: int) -> int:
    """Decode one µ-law code word to a signed 16-bit sample (G.711 Table 2a, scaled by 4)."""
    if not 0 <= code <= 255:
        raise ValueError(f"code {code} outside 0..255")
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + _BIAS
    t <<= (u & 0x70) >> 4
    return (_BIAS - t) if (u & 0x80) else (t - _BIAS)


def linear_to_alaw(sample: int) -> int:
    """Encode one signed 16-bit sample to an A-law code word (even bits inverted, 0x55)."""
    if not -32768 <= sample <= 32767:
        raise ValueError(f"sample {sample} outside int16")
    pcm = sample >> 3  # A-law works on 13 bits
    if pcm >= 0:
        mask = 0xD5  # sign bit set for positive values, plus the even-bit inversion
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= ((pcm >> 1) if seg < 2 else (pcm >> seg)) & 0x0F
    return aval ^ mask


def alaw_to_linear(code: int) -> int:
    """Decode one A-law code word to a signed 16-bit sample (G.711 Table 1a, scaled by 8)."""
    if not 0 <= code <= 255:
        raise ValueError(f"code {code} outside 0..255")
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if (a & 0x80) else -t


def _decode_table(fn: Callable[[int], int]) -> tuple[int, ...]:
    return tuple(fn(c) for c in range(256))


def _encode_table(fn: Callable[[int], int]) -> bytes:
    # Indexed by the sample reinterpreted as unsigned 16-bit, so the hot path can read
    # an array('H') view of the frame without sign handling.
    return bytes(fn(u - 65536 if u >= 32768 else u) for u in range(65536))


_ULAW_DEC = _decode_table(ulaw_to_linear)
_ALAW_DEC = _decode_table(alaw_to_linear)
_ULAW_ENC = _encode_table(linear_to_ulaw)
_ALAW_ENC = _encode_table(linear_to_alaw)


def _as_unsigned(samples: array[int] | bytes | bytearray | memoryview) -> array[int]:
    """View int16 samples as uint16 without copying element by element."""
    if isinstance(samples, array):
        if samples.typecode != "h":
            raise TypeError(f"expected array('h'), got array({samples.typecode!r})")
        raw: bytes | bytearray | memoryview = samples.tobytes()
    else:
        raw = samples
    if len(raw) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    out = array("H")
    out.frombytes(raw)
    return out


def ulaw_encode(samples: array[int] | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples (``array('h')`` or native-order bytes) to a PCMU payload."""
    return bytes(map(_ULAW_ENC.__getitem__, _as_unsigned(samples)))


def alaw_encode(samples: array[int] | bytes | bytearray | memoryview) -> bytes:
    """Encode int16 samples (``array('h')`` or native-order bytes) to a PCMA payload."""
    return bytes(map(_ALAW_ENC.__getitem__, _as_unsigned(samples)))


def ulaw_decode(payload: bytes | bytearray | memoryview) -> array[int]:
    """Decode a PCMU payload to ``array('h')``; one sample per byte, never raises."""
    return array("h", map(_ULAW_DEC.__getitem__, payload))


def alaw_decode(payload: bytes | bytearray | memoryview) -> array[int]:
    """Decode a PCMA payload to ``array('h')``; one sample per byte, never raises."""
    return array("h", map(_ALAW_DEC.__getitem__, payload))


@dataclass(frozen=True, slots=True, kw_only=True)
class G711Codec:
    """One G.711 law as the phone sees it: static payload type (RFC 3551), name, functions."""

    name: str
    payload_type: int
    clock_rate: int
    encode: Callable[[array[int] | bytes], bytes]
    decode: Callable[[bytes], array[int]]
    silence: int  # code word for a zero sample, to fill gaps without decoding


PCMU = G711Codec(name="PCMU", payload_type=0, clock_rate=8000, encode=ulaw_encode, decode=ulaw_decode,
                 silence=linear_to_ulaw(0))
PCMA = G711Codec(name="PCMA", payload_type=8, clock_rate=8000, encode=alaw_encode, decode=alaw_decode,
                 silence=linear_to_alaw(0))

_BY_PT = {PCMU.payload_type: PCMU, PCMA.payload_type: PCMA}
_BY_NAME = {PCMU.name: PCMU, PCMA.name: PCMA}


def codec_for_payload_type(pt: int) -> G711Codec | None:
    """The codec for a static payload type, or None when we do not support it."""
    return _BY_PT.get(pt)


def codec_for_name(name: str) -> G711Codec | None:
    """The codec for an rtpmap encoding name (case-insensitive, RFC 4566 6), or None."""
    return _BY_NAME.get(name.upper())


def silence_payload(codec: G711Codec, samples: int = 160) -> bytes:
    """A payload of digital silence, e.g. to keep NAT bindings open while on hold."""
    return bytes([codec.silence]) * samples
