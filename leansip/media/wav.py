"""WAV files in and out of the phone's 8 kHz mono int16 audio path.

Reading (:func:`load_wav_8k`) accepts PCM WAV of 8, 16, 24 or 32 bits, any sample rate,
mono or multi-channel, and returns ``array('h')`` at 8 kHz mono: channels are averaged,
then :func:`resample` converts the rate. :func:`frames` cuts that into 160-sample
(20 ms) frames for :mod:`leansip.media.g711`. :class:`WavWriter` records received audio.

No ``audioop`` (deprecated in 3.11, removed in 3.13): the conversions are plain Python
over ``array`` and prefix sums, O(n) per file. Good enough for prompts and tests; not
meant for hours of audio.

Resampling: downsampling first low-passes, then linearly interpolates; upsampling only
interpolates. With numpy importable the low-pass is a Blackman-windowed sinc FIR (flat
to 0.45 x the new rate, > 70 dB down past the new Nyquist), which keeps the whole
telephone band. Without numpy it is two passes of a box (moving average) filter as wide
as the rate ratio: a triangular kernel whose first null sits at the new sampling rate,
so what would alias is attenuated by 20 dB or more, at the price of some droop near
3.4 kHz. Both are O(n).
"""

from __future__ import annotations

import sys
import wave
from array import array
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from types import TracebackType
from typing import Any


def _numpy() -> Any:
    """numpy if importable (it is optional: the ``sound``/``test`` extras), else None."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


__all__ = [
    "WavError",
    "read_wav",
    "to_mono",
    "resample",
    "load_wav_8k",
    "frames",
    "WavWriter",
    "write_wav",
    "PHONE_RATE",
    "FRAME_SAMPLES",
]

PHONE_RATE = 8000
FRAME_SAMPLES = 160


class WavError(ValueError):
    """The file is not a PCM WAV we can read (compressed, truncated, odd sample width)."""


def _pcm_to_int16(raw: bytes, width: int) -> array[int]:
    if width == 1:  # unsigned 8-bit, 128 is zero
        return array("h", ((b - 128) << 8 for b in raw))
    if width == 2:
        out = array("h")
        out.frombytes(raw[: len(raw) - len(raw) % 2])
        if sys.byteorder == "big":
            out.byteswap()
        return out
    if width in (3, 4):  # keep the top 16 bits of each little-endian sample
        usable = len(raw) - len(raw) % width
        hi = bytearray(usable // width * 2)
        hi[0::2] = raw[width - 2:usable:width]
        hi[1::2] = raw[width - 1:usable:width]
        out = array("h")
        out.frombytes(bytes(hi))
        if sys.byteorder == "big":
            out.byteswap()
        return out
    raise WavError(f"unsupported sample width {width * 8} bits")


def read_wav(path: str | Path) -> tuple[array[int], int, int]:
    """Read a PCM WAV as interleaved int16 samples; return (samples, rate, channels)."""
    try:
        with wave.open(str(path), "rb") as w:
            channels = w.getnchannels()
            width = w.getsampwidth()
            rate = w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path}: {exc}") from exc
    if channels < 1 or rate < 1:
        raise WavError(f"{path}: bad header ({channels} channels, {rate} Hz)")
    return _pcm_to_int16(raw, width), rate, channels


def to_mono(samples: array[int], channels: int) -> array[int]:
    """Average interleaved channels into one (sum then divide, so no clipping)."""
    if channels == 1:
        return array("h", samples)
    n = len(samples) // channels
    sums = [0] * n
    for c in range(channels):
        sums = list(map(int.__add__, sums, samples[c:n * channels:channels]))
    return array("h", (s // channels for s in sums))


def _box(x: list[float], width: int) -> list[float]:
    """Centered moving average of ``width`` samples, edges clamped; O(n) via prefix sums."""
    n = len(x)
    if width <= 1 or n == 0:
        return x
    pre = [0.0, *accumulate(x)]
    half = width // 2
    out = []
    for i in range(n):
        lo = max(0, i - half)
        hi = min(n, lo + width)
        out.append((pre[hi] - pre[lo]) / (hi - lo))
    return out


def resample(samples: array[int], src_rate: int, dst_rate: int = PHONE_RATE) -> array[int]:
    """Convert mono int16 samples between rates (see the module docstring for the filter)."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("rates must be positive")
    if src_rate == dst_rate or not samples:
        return array("h", samples)
    ratio = src_rate / dst_rate
    np = _numpy()
    if np is not None:
        return _resample_numpy(np, samples, src_rate, dst_rate)
    x: list[float] = [float(s) for s in samples]
    if ratio > 1:
        width = max(2, round(ratio))
        x = _box(_box(x, width), width)
    n_out = int(len(x) * dst_rate / src_rate)
    last = len(x) - 1
    out = array("h")
    for j in range(n_out):
        pos = j * ratio
        i = int(pos)
        frac = pos - i
        v = x[i] if i >= last else x[i] + (x[i + 1] - x[i]) * frac
        out.append(max(-32768, min(32767, round(v))))
    return out


def _resample_numpy(np: Any, samples: array[int], src_rate: int, dst_rate: int) -> array[int]:
    x = np.asarray(samples, dtype=np.float64)
    if src_rate > dst_rate:
        # Windowed-sinc low-pass: cutoff 0.45 x dst, transition ~0.05 x dst wide
        # (Blackman: about 5.5 / N of normalised transition width).
        fc = 0.45 * dst_rate / src_rate  # cycles per input sample
        taps = int(5.5 / (0.05 * dst_rate / src_rate)) | 1
        taps = min(taps, len(x) if len(x) % 2 else len(x) - 1)  # 'same' needs taps <= len
        k = np.arange(taps) - (taps - 1) / 2
        h = 2 * fc * np.sinc(2 * fc * k) * np.blackman(taps)
        h /= h.sum()
        x = np.convolve(x, h, mode="same")
    n_out = int(len(samples) * dst_rate / src_rate)
    pos = np.arange(n_out) * (src_rate / dst_rate)
    y = np.interp(pos, np.arange(len(x)), x)
    return array("h", np.clip(np.rint(y), -32768, 32767).astype(np.int16).tolist())


def load_wav_8k(path: str | Path) -> array[int]:
    """Read any PCM WAV and return 8 kHz mono int16, ready for :func:`frames`."""
    samples, rate, channels = read_wav(path)
    return resample(to_mono(samples, channels), rate, PHONE_RATE)


def frames(samples: array[int], size: int = FRAME_SAMPLES) -> Iterator[array[int]]:
    """Yield ``size``-sample frames; the last one is padded with silence to full size."""
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        if len(chunk) < size:
            chunk.extend([0] * (size - len(chunk)))
        yield chunk


class WavWriter:
    """Write mono 16-bit PCM (8 kHz by default), e.g. to record what the far end says.

    Use as a context manager or call :meth:`close`; the header is fixed up on close.
    """

    def __init__(self, path: str | Path, rate: int = PHONE_RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.samples_written = 0
        self._w = wave.open(str(self.path), "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, samples: array[int]) -> None:
        """Append int16 samples (``array('h')``)."""
        if samples.typecode != "h":
            raise TypeError("WavWriter.write takes array('h')")
        data = array("h", samples)
        if sys.byteorder == "big":
            data.byteswap()
        self._w.writeframes(data.tobytes())
        self.samples_written += len(samples)

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_wav(path: str | Path, samples: array[int], rate: int = PHONE_RATE) -> None:
    """Write mono int16 samples to a WAV file in one go."""
    with WavWriter(path, rate) as w:
        w.write(samples)
