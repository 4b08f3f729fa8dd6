"""Audio files in and out of the phone (libsndfile + soxr), and the tone helpers. Files in tmp_path, no sockets.

The input files are made by sox, as people make them: ``sox -n -r 8000 -c 1 tone.wav synth ...`` writes a
32-bit WAVE_FORMAT_EXTENSIBLE file (the one the old reader refused with "unknown format: 65534").
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from array import array
from pathlib import Path

import pytest

from leansip.media import audiofile, tone

FULL_HALF_RMS = 0.5 * 32767 / 2 ** 0.5  # a 0.5 full-scale sine


def _sox(*args: str) -> None:
    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    subprocess.run(["sox", *args], check=True, capture_output=True)


def _sox_tone(path: Path, *options: str, freq: int = 1000, seconds: float = 0.5) -> Path:
    _sox("-n", *options, str(path), "synth", str(seconds), "sine", str(freq), "vol", "0.5")
    return path


# (file name, sox output options): every kind the issue names, at rates and channel counts people have
KINDS = [
    ("extensible32.wav", ("-r", "8000", "-c", "1")),  # sox's default: 32-bit WAVE_FORMAT_EXTENSIBLE
    ("s16-44k-stereo.wav", ("-r", "44100", "-c", "2", "-b", "16")),
    ("s24-48k.wav", ("-r", "48000", "-c", "1", "-b", "24")),
    ("u8-11k.wav", ("-r", "11025", "-c", "1", "-b", "8")),
    ("float-16k.wav", ("-r", "16000", "-c", "1", "-e", "floating-point")),
    ("alaw.wav", ("-r", "8000", "-c", "1", "-e", "a-law")),
    ("tone.flac", ("-r", "22050", "-c", "2")),
    ("tone.ogg", ("-r", "48000", "-c", "2")),
    ("tone.mp3", ("-r", "44100", "-c", "2")),
]


@pytest.mark.parametrize(("name", "options"), KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_loads_as_8k_mono_with_its_tone(tmp_path: Path, name: str, options: tuple[str, ...]) -> None:
    if name.endswith(".mp3"):
        out = subprocess.run(["sox", "-h"], capture_output=True, text=True).stdout if shutil.which("sox") else ""
        if " mp3 " not in out:
            pytest.skip("this sox cannot write MP3 (libsox-fmt-mp3)")
    p = _sox_tone(tmp_path / name, *options)
    s = audiofile.load_audio(p)
    assert s.typecode == "h"
    # MP3 encoders add a frame or two of padding at the start and end
    slack = 2000 if name.endswith(".mp3") else 2
    assert abs(len(s) - 4000) <= slack, len(s)
    assert tone.dominant_frequency(s, 8000) == pytest.approx(1000, abs=3)
    body = s[400:-400]
    tolerance = 0.15 if name.startswith(("u8", "alaw")) or name.endswith((".ogg", ".mp3")) else 0.05
    assert tone.rms(body) == pytest.approx(FULL_HALF_RMS, rel=tolerance)


def test_read_audio_keeps_rate_and_channels(tmp_path: Path) -> None:
    p = _sox_tone(tmp_path / "st.wav", "-r", "16000", "-c", "2", "-b", "16")
    samples, rate, channels = audiofile.read_audio(p)
    assert (rate, channels) == (16000, 2)
    assert len(samples) == 2 * 8000
    for channel in (samples[0::2], samples[1::2]):  # synth writes the tone on both channels (dithered apart)
        assert tone.dominant_frequency(channel, 16000) == pytest.approx(1000, abs=3)


def test_16bit_8k_mono_round_trips_exactly(tmp_path: Path) -> None:
    a = tone.sine_samples(700, 0.2)
    audiofile.write_audio(tmp_path / "a.wav", a)
    assert audiofile.load_audio(tmp_path / "a.wav") == a


def test_channels_are_averaged(tmp_path: Path) -> None:
    p = tmp_path / "lr.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(array("h", [100, 300, -32768, -32768, 1000, -1000]).tobytes())
    assert audiofile.load_audio(p) == array("h", [200, -32768, 0])


def test_downsampling_removes_what_would_alias(tmp_path: Path) -> None:
    p = _sox_tone(tmp_path / "hi.wav", "-r", "44100", "-c", "1", "-b", "16", freq=6000)  # would fold to 2 kHz
    assert tone.rms(audiofile.load_audio(p)) < 0.01 * FULL_HALF_RMS


def test_telephone_band_is_flat_after_resampling() -> None:
    for f in (300, 1000, 3400):
        src = tone.sine_samples(f, 0.3, rate=44100)
        out = audiofile.resample(src, 44100, 8000)
        assert abs(len(out) - 2400) <= 1
        assert tone.rms(out[200:-200]) == pytest.approx(tone.rms(src), rel=0.02), f
    up = audiofile.resample(tone.sine_samples(440, 0.5, rate=4000), 4000, 8000)
    assert len(up) == 4000 and tone.dominant_frequency(up) == pytest.approx(440, abs=2)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEjunk", b"hello, not audio at all\n" * 40])
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(content)
    with pytest.raises(audiofile.AudioFileError) as info:
        audiofile.load_audio(p)
    message = str(info.value)
    assert message.startswith(f"{p}: not an audio file") and "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(audiofile.AudioFileError, match=r"nope\.wav: no such file$"):
        audiofile.load_audio(tmp_path / "nope.wav")
    with pytest.raises(audiofile.AudioFileError, match="is a directory"):
        audiofile.load_audio(tmp_path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".WAV"])
def test_writer_picks_the_format_by_extension(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"rec{suffix}"
    a = tone.sine_samples(700, 0.2)
    with audiofile.AudioWriter(p) as w:
        for f in audiofile.frames(a):
            w.write(f)
    assert w.samples_written == 1600
    assert p.read_bytes()[:4] == (b"fLaC" if suffix == ".flac" else b"RIFF")
    s, rate, ch = audiofile.read_audio(p)
    assert (rate, ch) == (8000, 1) and s == a  # both 16-bit and lossless
    with pytest.raises(TypeError):
        w2 = audiofile.AudioWriter(tmp_path / "y.wav")
        try:
            w2.write(array("i", [1]))
        finally:
            w2.close()


def test_writer_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(audiofile.AudioFileError, match=r"can record to \.wav or \.flac files, not \.mp3"):
        audiofile.AudioWriter(tmp_path / "x.mp3")
    with pytest.raises(audiofile.AudioFileError, match="cannot create"):
        audiofile.AudioWriter(tmp_path / "no" / "such" / "dir.wav")


def test_frames_pad_last() -> None:
    fs = list(audiofile.frames(array("h", range(400))))
    assert [len(f) for f in fs] == [160, 160, 160]
    assert fs[1][0] == 160 and fs[2][79] == 399 and fs[2][80:] == array("h", [0] * 80)


def test_active_duration_ignores_silence(tmp_path: Path) -> None:
    p = tmp_path / "gap.wav"
    tone.write_tone_wav(p, 400, 1.2, lead_silence=0.5, trail_silence=0.3)
    s = audiofile.load_audio(p)
    assert len(s) == 16000
    assert tone.active_duration(s) == pytest.approx(1.2, abs=0.02)
    assert tone.dominant_frequency(s) == pytest.approx(400, abs=2)


def test_dominant_frequency_range_and_silence() -> None:
    mix = array("h", (a + b for a, b in zip(tone.sine_samples(300, 0.5, amplitude=0.4),
                                             tone.sine_samples(2000, 0.5, amplitude=0.2), strict=True)))
    assert tone.dominant_frequency(mix) == pytest.approx(300, abs=2)
    assert tone.dominant_frequency(mix, fmin=1000) == pytest.approx(2000, abs=2)
    with pytest.raises(ValueError):
        tone.dominant_frequency(array("h", [0] * 800))


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import numpy` fail so tone's pure-Python path runs."""
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "numpy":
            raise ImportError("no numpy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.usefixtures("no_numpy")
def test_goertzel_fallback_agrees() -> None:
    s = tone.sine_samples(1234, 0.25)
    assert tone.dominant_frequency(s, max_seconds=0.25) == pytest.approx(1234, abs=2)
