"""Audio files in and out of the phone's 8 kHz mono int16 audio path, through libsndfile and libsoxr.

Reading (:func:`load_audio`) takes what people have: WAV of any subtype (8/16/24/32-bit integer, float,
WAVE_FORMAT_EXTENSIBLE as sox and many editors write it, A-law, mu-law, ADPCM), FLAC, OGG/Vorbis, MP3 and the
other formats libsndfile knows, at any sample rate and channel count. Channels are averaged and the rate
converted with soxr (a band-limited resampler: flat through the telephone band, what would alias is removed),
then the samples come back as ``array('h')`` at 8 kHz mono. The file is read in blocks and resampled as a
stream, so memory holds only the 8 kHz result (16 kB per second of audio), whatever the file's rate.

Writing (:class:`AudioWriter`) picks the container from the file's extension: ``.wav`` (16-bit PCM) or
``.flac``. :func:`frames` cuts samples into 20 ms frames for :mod:`leansip.media.g711`.

Every failure -- a missing file, one libsndfile cannot read, an extension we cannot write, a directory that does
not exist -- is one :class:`AudioFileError` whose message is a single line naming the file, so the CLI can
print it as it is and exit with status 2.

This replaces the phone's own WAV reader and linear-interpolating resampler: libsndfile comes inside the
``soundfile`` wheel and soxr inside ``soxr``'s, so nothing has to be installed from the system.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile
import soxr

__all__ = [
    "AudioFileError",
    "read_audio",
    "load_audio",
    "resample",
    "frames",
    "AudioWriter",
    "write_audio",
    "writable_format",
    "check_writable",
    "WRITABLE",
    "PHONE_RATE",
    "FRAME_SAMPLES",
]

PHONE_RATE = 8000
FRAME_SAMPLES = 160
#: read this many frames of the file at a time (about 1.4 s at 48 kHz)
BLOCK_FRAMES = 65536
#: extension -> (libsndfile container, subtype) of what :class:`AudioWriter` writes
WRITABLE: dict[str, tuple[str, str]] = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


class AudioFileError(ValueError):
    """The file cannot be read or written as audio. The message is one line that names the file."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _open_for_reading(path: Path) -> soundfile.SoundFile:
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"{path}: permission denied")
    try:
        f = soundfile.SoundFile(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioFileError(f"{path}: not an audio file libsndfile can read ({_one_line(exc)})") from None
    if f.samplerate < 1 or f.channels < 1:
        f.close()
        raise AudioFileError(f"{path}: bad header ({f.channels} channels, {f.samplerate} Hz)")
    return f


def _to_int16(x: np.ndarray) -> array[int]:
    """float samples in [-1, 1) -> int16, rounded and clipped (an exact round trip for 16-bit input)."""
    out = array("h")
    out.frombytes(np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16).tobytes())
    return out


def read_audio(path: str | Path) -> tuple[array[int], int, int]:
    """The whole file as interleaved int16 samples at its own rate: (samples, rate, channels). For tests and
    tools that look at what was recorded; the phone uses :func:`load_audio`."""
    p = Path(path)
    with _open_for_reading(p) as f:
        try:
            data = f.read(dtype="float64", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(f"{p}: cannot decode ({_one_line(exc)})") from None
        return _to_int16(data.reshape(-1)), f.samplerate, f.channels


def load_audio(path: str | Path, rate: int = PHONE_RATE) -> array[int]:
    """Read any audio file libsndfile knows and return it as mono int16 at ``rate`` (see the module doc).

    Raises :class:`AudioFileError`."""
    p = Path(path)
    with _open_for_reading(p) as f:
        stream = None if f.samplerate == rate else soxr.ResampleStream(f.samplerate, rate, 1, dtype="float64",
                                                                       quality="HQ")
        parts: list[np.ndarray] = []
        try:
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float64", always_2d=True)
                last = len(block) < BLOCK_FRAMES
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                parts.append(stream.resample_chunk(mono, last=last) if stream is not None else mono)
                if last:
                    break
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioFileError(f"{p}: cannot decode ({_one_line(exc)})") from None
    return _to_int16(np.concatenate(parts) if parts else np.zeros(0))


def resample(samples: array[int], src_rate: int, dst_rate: int = PHONE_RATE) -> array[int]:
    """Convert mono int16 samples between rates with soxr (for PCM that did not come from a file)."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("rates must be positive")
    if src_rate == dst_rate or not samples:
        return array("h", samples)
    x = np.frombuffer(samples.tobytes(), dtype=np.int16).astype(np.float64) / 32768.0
    return _to_int16(soxr.resample(x, src_rate, dst_rate, quality="HQ"))


def frames(samples: array[int], size: int = FRAME_SAMPLES) -> Iterator[array[int]]:
    """Yield ``size``-sample frames; the last one is padded with silence to full size."""
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        if len(chunk) < size:
            chunk.extend([0] * (size - len(chunk)))
        yield chunk


def writable_format(path: str | Path) -> tuple[str, str]:
    """(container, subtype) for ``path``'s extension; :class:`AudioFileError` for one we do not write."""
    p = Path(path)
    try:
        return WRITABLE[p.suffix.lower()]
    except KeyError:
        kinds = " or ".join(WRITABLE)
        raise AudioFileError(f"{p}: can record to {kinds} files, not {p.suffix or 'a file without extension'}") \
            from None


def check_writable(path: str | Path) -> None:
    """Raise :class:`AudioFileError` now if :class:`AudioWriter` could not create ``path`` later: an extension
    we do not write, a directory that does not exist or is not writable (so a phone fails at start, not when
    the call is answered)."""
    p = Path(path)
    writable_format(p)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory")
    if not parent.is_dir():
        raise AudioFileError(f"{p}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise AudioFileError(f"{p}: directory {str(parent)!r} is not writable")


class AudioWriter:
    """Write mono 16-bit audio (8 kHz by default) to a WAV or FLAC file chosen by the extension.

    Use as a context manager or call :meth:`close`. Raises :class:`AudioFileError` when the file cannot be
    created (unknown extension, missing directory, no permission)."""

    def __init__(self, path: str | Path, rate: int = PHONE_RATE) -> None:
        self.path = Path(path)
        self.rate = rate
        self.samples_written = 0
        container, subtype = writable_format(self.path)
        try:
            self._f = soundfile.SoundFile(str(self.path), "w", samplerate=rate, channels=1, subtype=subtype,
                                          format=container)
        except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
            raise AudioFileError(f"{self.path}: cannot create ({_one_line(exc)})") from None

    def write(self, samples: array[int]) -> None:
        """Append int16 samples (``array('h')``)."""
        if samples.typecode != "h":
            raise TypeError("AudioWriter.write takes array('h')")
        self._f.write(np.frombuffer(samples.tobytes(), dtype=np.int16))
        self.samples_written += len(samples)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_audio(path: str | Path, samples: array[int], rate: int = PHONE_RATE) -> None:
    """Write mono int16 samples to a WAV or FLAC file in one go."""
    with AudioWriter(path, rate) as w:
        w.write(samples)
