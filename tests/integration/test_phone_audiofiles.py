"""``leansip phone`` plays and records audio files as people have them (issue 24 part 2).

Each input file is made by sox in the test, the way a user makes one: ``sox -n -r 8000 -c 1 tone.wav synth ...``
gives a 32-bit WAVE_FORMAT_EXTENSIBLE WAV (which the old reader refused), and the others are FLAC, OGG/Vorbis
and MP3 at CD and studio rates, in stereo. Alice plays the file in a direct call to Bob, who records to WAV or
FLAC by the extension; the recording must hold the file's tone. Files that cannot be read or written end the
phone at once with one error line and exit status 2, before anything is sent.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from leansip.media.audiofile import read_audio
from leansip.media.tone import active_duration, dominant_frequency
from tests.conftest import free_udp_port
from tests.integration.helpers import phone_env, start_phone, wait_exit, wait_for_text

CALL_SECONDS = 2.0
#: (input file, sox options, the recording's name): one call per kind
PLAYS = [
    ("tone.wav", ("-r", "8000", "-c", "1"), "rec.flac"),  # the file: 32-bit WAVE_FORMAT_EXTENSIBLE
    ("tone.flac", ("-r", "48000", "-c", "2", "-b", "24"), "rec.wav"),
    ("tone.ogg", ("-r", "44100", "-c", "2"), "rec.flac"),
    ("tone.mp3", ("-r", "44100", "-c", "2"), "rec.wav"),
]


def _sox_tone(path: Path, options: tuple[str, ...], freq: int, seconds: float) -> None:
    if shutil.which("sox") is None:
        pytest.skip("sox not installed")
    if path.suffix == ".mp3" and " mp3 " not in subprocess.run(["sox", "-h"], capture_output=True,
                                                                 text=True).stdout:
        pytest.skip("this sox cannot write MP3 (Debian: libsox-fmt-mp3)")
    subprocess.run(["sox", "-n", *options, str(path), "synth", str(seconds), "sine", str(freq), "vol", "0.5"],
                   check=True, capture_output=True)


@pytest.mark.parametrize(("name", "options", "record"), PLAYS, ids=[p[0] for p in PLAYS])
def test_play_any_file_record_by_extension(tmp_path: Path, name: str, options: tuple[str, ...],
                                           record: str) -> None:
    source = tmp_path / name
    _sox_tone(source, options, 700, CALL_SECONDS + 2)
    bob_port = free_udp_port()
    bob_log, alice_log = tmp_path / "bob.log", tmp_path / "alice.log"
    bob = start_phone(["--user", "bob", "--local-port", str(bob_port), "answer", "--record",
                       str(tmp_path / record), "--timeout", "15"], bob_log)
    try:
        wait_for_text(bob_log, "event=started", proc=bob)
        alice = start_phone(["--user", "alice", "call", f"sip:bob@127.0.0.1:{bob_port}", "--play", str(source),
                             "--hangup-after", str(CALL_SECONDS)], alice_log)
        logs = lambda: alice_log.read_text() + bob_log.read_text()  # noqa: E731
        assert wait_exit(alice, 20) == 0, logs()
        assert wait_exit(bob, 10) == 0, logs()
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait()
    recording = tmp_path / record
    assert recording.read_bytes()[:4] == (b"fLaC" if record.endswith(".flac") else b"RIFF")
    samples, rate, channels = read_audio(recording)
    assert (rate, channels) == (8000, 1)
    assert abs(dominant_frequency(samples, rate) - 700.0) <= 20.0
    assert active_duration(samples, rate) >= 0.8 * CALL_SECONDS


def _phone(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leansip", "phone", "--user", "alice", *args], env=phone_env(),
                          capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize("case", ["missing", "not-audio", "directory", "record-mp3", "record-no-dir"])
def test_bad_audio_files_are_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    (tmp_path / "notes.wav").write_text("this is a text file with a .wav name\n" * 20)
    target = "sip:bob@127.0.0.1:9"  # never reached: the phone stops before sending anything
    args, expected = {
        "missing": (["--play", "nope.wav"], "--play: nope.wav: no such file"),
        "not-audio": (["--play", "notes.wav"], "--play: notes.wav: not an audio file libsndfile can read"),
        "directory": (["--play", "."], "--play: .: is a directory"),
        "record-mp3": (["--record", "out.mp3"], "--record: out.mp3: can record to .wav or .flac files, not .mp3"),
        "record-no-dir": (["--record", "nodir/out.wav"], "--record: nodir/out.wav: directory 'nodir' does not exist"),
    }[case]
    done = _phone("call", target, *args, "--timeout", "2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"leansip phone: error: {expected}"), done.stderr
    assert "Traceback" not in done.stderr
