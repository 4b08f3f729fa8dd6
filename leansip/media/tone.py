"""Test tones: write a sine WAV, and measure what came out the other end of a call.

End-to-end tests play a tone into one phone and record the other; these helpers say
whether the recording holds that tone (:func:`dominant_frequency`) and for how long
(:func:`active_duration`). numpy is used for the spectrum when importable; otherwise
a Goertzel scan (coarse, then 1 Hz around the peak) gives the same answer, slower.
"""

from __future__ import annotations

import math
import sys
import wave
from array import array
from pathlib import Path
from typing import Any


def _numpy() -> Any:
    """numpy if importable (it is optional: the ``sound``/``test`` extras), else None."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


__all__ = ["sine_samples", "write_tone_wav", "dominant_frequency", "active_duration", "rms"]


def sine_samples(freq: float, duration: float, rate: int = 8000, amplitude: float = 0.5) -> array[int]:
    """``duration`` seconds of a sine at ``amplitude`` x full scale, as int16."""
    if not 0 <= amplitude <= 1:
        raise ValueError("amplitude is a fraction of full scale")
    n = int(round(duration * rate))
    peak = amplitude * 32767
    w = 2 * math.pi * freq / rate
    return array("h", (int(round(peak * math.sin(w * i))) for i in range(n)))


def write_tone_wav(path: str | Path, freq: float, duration: float, *, rate: int = 8000, channels: int = 1,
                   sampwidth: int = 2, amplitude: float = 0.5, lead_silence: float = 0.0,
                   trail_silence: float = 0.0) -> None:
    """Write a sine tone WAV (8- or 16-bit, any rate, channels duplicated), with optional silence around it."""
    if sampwidth not in (1, 2):
        raise ValueError("sampwidth must be 1 or 2")
    tone = sine_samples(freq, duration, rate, amplitude)
    mono = array("h", [0] * int(round(lead_silence * rate)))
    mono.extend(tone)
    mono.extend([0] * int(round(trail_silence * rate)))
    if sampwidth == 1:
        data = bytes((s >> 8) + 128 for s in mono for _ in range(channels))
    else:
        inter = array("h", (s for s in mono for _ in range(channels)))
        if sys.byteorder == "big":
            inter.byteswap()
        data = inter.tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(data)


def rms(samples: array[int] | list[int]) -> float:
    """Root mean square level in int16 units (0 for an empty input)."""
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def _goertzel_power(x: list[float], freq: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant_frequency(samples: array[int] | list[int], rate: int = 8000, *, fmin: float = 50.0,
                       fmax: float | None = None, max_seconds: float = 1.0) -> float:
    """The strongest frequency in [fmin, fmax] Hz (fmax defaults to Nyquist), to about 1 Hz.

    Only the loudest ``max_seconds`` stretch is analysed, so silence before or after a
    tone does not matter and the pure-Python path stays fast. Raises ValueError on
    silence, where there is no answer.
    """
    if fmax is None:
        fmax = rate / 2
    n = min(len(samples), int(max_seconds * rate))
    if n < 32:
        raise ValueError("too few samples to measure a frequency")
    # Pick the window with the most energy (step 20 ms) to skip leading/trailing silence.
    step = max(1, rate // 50)
    best_start, best_e = 0, -1.0
    for start in range(0, max(1, len(samples) - n + 1), step):
        e = rms(samples[start:start + n])
        if e > best_e:
            best_start, best_e = start, e
    if best_e < 1.0:
        raise ValueError("signal is silent")
    seg = [float(s) for s in samples[best_start:best_start + n]]
    # Hann window against leakage from the window edges.
    win = [v * (0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1))) for i, v in enumerate(seg)]
    np = _numpy()
    if np is not None:
        pad = 1 << max(16, (n - 1).bit_length())  # zero-pad: bins well below 1 Hz at 8 kHz
        spec = np.abs(np.fft.rfft(np.asarray(win), pad))
        freqs = np.fft.rfftfreq(pad, 1 / rate)
        mask = (freqs >= fmin) & (freqs <= fmax)
        idx = np.nonzero(mask)[0]
        return float(freqs[idx[int(np.argmax(spec[idx]))]])
    coarse = max(1.0, rate / n)
    f = fmin
    best_f, best_p = fmin, -1.0
    while f <= fmax:
        p = _goertzel_power(win, f, rate)
        if p > best_p:
            best_f, best_p = f, p
        f += coarse
    lo, hi = max(fmin, best_f - coarse), min(fmax, best_f + coarse)
    f = lo
    while f <= hi:
        p = _goertzel_power(win, f, rate)
        if p > best_p:
            best_f, best_p = f, p
        f += 0.5
    return best_f


def active_duration(samples: array[int] | list[int], rate: int = 8000, *, threshold: float = 300.0,
                    window: float = 0.01) -> float:
    """Seconds of non-silent audio: the number of ``window``-long blocks whose RMS exceeds
    ``threshold`` (int16 units; 300 is about -40 dBFS), times the window length."""
    size = max(1, int(window * rate))
    active = sum(1 for i in range(0, len(samples), size) if rms(samples[i:i + size]) > threshold)
    return active * size / rate
