"""WAV read/convert/write and the tone helpers (files in tmp_path, no sockets)."""

import wave
from array import array
from pathlib import Path

import pytest

from leansip.media import tone, wav


@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [(8000, 1, 2), (16000, 1, 2), (44100, 2, 2), (48000, 1, 1), (11025, 2, 1), (22050, 1, 2)],
)
def test_load_converts_to_8k_mono_and_keeps_the_tone(tmp_path: Path, rate: int, channels: int,
                                                     width: int) -> None:
    p = tmp_path / "t.wav"
    tone.write_tone_wav(p, 1000, 0.5, rate=rate, channels=channels, sampwidth=width, amplitude=0.5)
    s = wav.load_wav_8k(p)
    assert s.typecode == "h"
    assert abs(len(s) - 4000) <= 1
    assert tone.dominant_frequency(s, 8000) == pytest.approx(1000, abs=3)
    # level preserved within the 8-bit quantisation and filter droop (0.5 FS sine: RMS ~11585)
    assert tone.rms(s) == pytest.approx(0.5 * 32767 / 2 ** 0.5, rel=0.1)


def test_downsampling_attenuates_what_would_alias(tmp_path: Path) -> None:
    p = tmp_path / "hi.wav"
    tone.write_tone_wav(p, 6000, 0.3, rate=44100, amplitude=0.5)  # would fold to 2 kHz
    s = wav.load_wav_8k(p)
    assert tone.rms(s) < 0.1 * 0.5 * 32767 / 2 ** 0.5


def test_upsampling_interpolates() -> None:
    src = tone.sine_samples(440, 0.5, rate=4000)
    out = wav.resample(src, 4000, 8000)
    assert len(out) == 4000
    assert out[::2][:100] == src[:100]  # original samples land on even positions
    assert tone.dominant_frequency(out, 8000) == pytest.approx(440, abs=2)


def test_to_mono_averages() -> None:
    assert wav.to_mono(array("h", [100, 300, -32768, -32768]), 2) == array("h", [200, -32768])


def test_8bit_values(tmp_path: Path) -> None:
    p = tmp_path / "u8.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128, 255, 0]))
    s, rate, ch = wav.read_wav(p)
    assert list(s) == [0, 127 << 8, -32768] and rate == 8000 and ch == 1


def test_24bit_keeps_top_bits(tmp_path: Path) -> None:
    p = tmp_path / "s24.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(bytes.fromhex("ff3412 000080"))  # 0x1234ff, 0x800000
    s, _, _ = wav.read_wav(p)
    assert list(s) == [0x1234, -32768]


def test_not_a_wav(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(wav.WavError):
        wav.read_wav(p)


def test_frames_pad_last() -> None:
    fs = list(wav.frames(array("h", range(400))))
    assert [len(f) for f in fs] == [160, 160, 160]
    assert fs[1][0] == 160 and fs[2][79] == 399 and fs[2][80:] == array("h", [0] * 80)


def test_writer_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "rec.wav"
    a = tone.sine_samples(700, 0.2)
    with wav.WavWriter(p) as w:
        for f in wav.frames(a):
            w.write(f)
    assert w.samples_written == 1600
    s, rate, ch = wav.read_wav(p)
    assert (rate, ch) == (8000, 1) and s == a
    with pytest.raises(TypeError):
        wav.WavWriter(tmp_path / "y.wav").write(array("i", [1]))


def test_active_duration_ignores_silence(tmp_path: Path) -> None:
    p = tmp_path / "gap.wav"
    tone.write_tone_wav(p, 400, 1.2, lead_silence=0.5, trail_silence=0.3)
    s = wav.load_wav_8k(p)
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
    """Make `import numpy` fail so the pure-Python paths run."""
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "numpy":
            raise ImportError("no numpy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_telephone_band_is_flat_after_downsampling() -> None:
    for f in (300, 1000, 3400):
        src = tone.sine_samples(f, 0.3, rate=44100)
        out = wav.resample(src, 44100, 8000)
        assert tone.rms(out[200:-200]) == pytest.approx(tone.rms(src), rel=0.03), f


@pytest.mark.usefixtures("no_numpy")
def test_pure_python_resampler(tmp_path: Path) -> None:
    for rate in (44100, 11025):
        p = tmp_path / f"{rate}.wav"
        tone.write_tone_wav(p, 1000, 0.3, rate=rate)
        s = wav.load_wav_8k(p)
        assert abs(len(s) - 2400) <= 1
        assert tone.dominant_frequency(s) == pytest.approx(1000, abs=3)
        assert tone.rms(s) == pytest.approx(0.5 * 32767 / 2 ** 0.5, rel=0.25)
    hi = wav.resample(tone.sine_samples(6000, 0.3, rate=44100), 44100, 8000)
    assert tone.rms(hi) < 0.1 * 0.5 * 32767 / 2 ** 0.5


@pytest.mark.usefixtures("no_numpy")
def test_goertzel_fallback_agrees() -> None:
    s = tone.sine_samples(1234, 0.25)
    assert tone.dominant_frequency(s, max_seconds=0.25) == pytest.approx(1234, abs=2)
