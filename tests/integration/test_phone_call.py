"""End to end: ``leansip serve`` (digest auth on) and two ``leansip phone`` processes, real sockets and audio.

Bob answers and records, Alice calls and plays a 1 kHz tone, then hangs up. The recording must contain the
tone (dominant frequency 1 kHz +-20 Hz) for at least 80% of the call, and both phones must exit 0 (BYE done).
The SRTP variant also checks that both sessions report SRTP and, when tshark can capture on lo, that the
RTP payloads on the wire are not G.711 (a tone has a handful of distinct code words; ciphertext has many).
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from leansip.media.audiofile import read_audio
from leansip.media.tone import active_duration, dominant_frequency, write_tone_wav
from tests.conftest import REPO_ROOT, free_udp_port
from tests.integration.helpers import ServerProcess, phone_env, start_phone, wait_exit, wait_for_text

HANGUP_AFTER = 4.0


def _modes() -> list[str]:
    modes = ["--stateless"]
    if (REPO_ROOT / "leansip" / "server" / "stateful.py").exists():
        modes.append("--stateful")
    return modes


@pytest.fixture
def call_setup(tmp_path: Path) -> Path:
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, HANGUP_AFTER + 2.0)
    return tmp_path


def _run_call(tmp: Path, port: int, extra: list[str], *, bob_rtp: int | None = None,
              host: str = "127.0.0.1") -> tuple[Path, Path]:
    server = ["--server", f"[{host}]:{port}" if ":" in host else f"{host}:{port}", "--local-host", host]
    bob_args = [*server, "--user", "bob", "--password", "bobpw", *extra]
    if bob_rtp is not None:
        bob_args += ["--rtp-port", str(bob_rtp)]
    bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
    bob = start_phone([*bob_args, "answer", "--record", str(tmp / "bob.wav"), "--timeout", "15"], bob_log)
    try:
        wait_for_text(bob_log, "event=Registered")
        alice = start_phone([*server, "--user", "alice", "--password", "alicepw", *extra, "call", "bob",
                        "--play", str(tmp / "tone1k.wav"), "--hangup-after", str(HANGUP_AFTER), "--timeout", "8"],
                       alice_log)
        alice_rc = wait_exit(alice, 20)
        bob_rc = wait_exit(bob, 10)
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait()
    logs = f"--- alice\n{alice_log.read_text()}\n--- bob\n{bob_log.read_text()}"
    assert alice_rc == 0, logs
    assert bob_rc == 0, logs
    assert "event=CallEnded reason='local hangup' status=200" in alice_log.read_text(), logs
    assert "event=CallEnded reason='remote hangup'" in bob_log.read_text(), logs
    return alice_log, bob_log


def _check_recording(path: Path) -> None:
    samples, rate, channels = read_audio(path)
    assert channels == 1 and rate == 8000
    freq = dominant_frequency(samples, rate)
    assert abs(freq - 1000.0) <= 20.0, freq
    active = active_duration(samples, rate)
    assert active >= 0.8 * HANGUP_AFTER, (active, len(samples) / rate)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("mode", _modes())
def test_call_through_server_records_tone(call_setup: Path, mode: str, host: str) -> None:
    tmp = call_setup
    with ServerProcess(["--auth", "--users", str(tmp / "users.txt"), "--location", "memory", "--realm", "test",
                        mode], tmp, host=host) as srv:
        alice_log, bob_log = _run_call(tmp, srv.port, [], host=host)
    _check_recording(tmp / "bob.wav")
    assert "srtp=False" in bob_log.read_text()


def _capture_payloads(pcap: Path, port: int) -> list[bytes]:
    """UDP payloads sent to ``port`` in a classic pcap of lo (Ethernet link type, IPv4)."""
    data = pcap.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20}.get(linktype, 14)
    pos = 24
    out = []
    while pos + 16 <= len(data):
        _s, _us, incl, _orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = frame[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp = ip[ihl:]
        if struct.unpack("!H", udp[2:4])[0] == port:
            out.append(udp[8:])
    return out


def test_call_with_mandatory_srtp(call_setup: Path) -> None:
    tmp = call_setup
    bob_rtp = free_udp_port() & ~1
    tshark = None
    from shutil import which

    pcap = tmp / "rtp.pcap"
    if which("tshark") is not None:
        tshark_log = tmp / "tshark.log"
        with open(tshark_log, "wb") as err:
            tshark = subprocess.Popen(["tshark", "-i", "lo", "-F", "pcap", "-w", str(pcap), "-f",
                                       f"udp dst port {bob_rtp}", "-a", "duration:15"],
                                      stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for_text(tshark_log, "Capturing on", 8.0)
        except AssertionError:
            tshark.kill()
            tshark.wait()
            tshark = None  # no capture permission here: the session's own report still counts
    try:
        with ServerProcess(["--auth", "--users", str(tmp / "users.txt"), "--location", "memory", "--stateless"],
                           tmp) as srv:
            alice_log, bob_log = _run_call(tmp, srv.port, ["--srtp", "mandatory"], bob_rtp=bob_rtp)
    finally:
        if tshark is not None:
            tshark.terminate()
            tshark.wait(10)
    assert "srtp=True" in alice_log.read_text() and "srtp=True" in bob_log.read_text()
    assert "srtp_failures=0" in bob_log.read_text()
    _check_recording(tmp / "bob.wav")
    if tshark is not None:
        payloads = [p for p in _capture_payloads(pcap, bob_rtp) if len(p) > 12 and p[0] >> 6 == 2]
        assert len(payloads) > 100
        # AES_CM_128_HMAC_SHA1_80 appends a 10-byte tag; the 160-byte tone payload is encrypted
        assert all(len(p) == 12 + 160 + 10 for p in payloads[:50])
        distinct = sorted(len(set(p[12:172])) for p in payloads[10:60])
        assert distinct[len(distinct) // 2] > 60, distinct  # a plain 1 kHz u-law tone has <= 8 code words


def test_srtp_mismatch_exits_5(call_setup: Path) -> None:
    tmp = call_setup
    with ServerProcess(["--auth", "--users", str(tmp / "users.txt"), "--location", "memory", "--stateless"],
                       tmp) as srv:
        server = ["--server", f"127.0.0.1:{srv.port}"]
        bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
        bob = start_phone([*server, "--user", "bob", "--password", "bobpw", "answer", "--timeout", "10"], bob_log)
        try:
            wait_for_text(bob_log, "event=Registered")
            alice = start_phone([*server, "--user", "alice", "--password", "alicepw", "--srtp", "mandatory", "call",
                            "bob", "--timeout", "8"], alice_log)
            assert wait_exit(alice, 15) == 5, alice_log.read_text() + bob_log.read_text()
            assert wait_exit(bob, 10) == 5, bob_log.read_text()
        finally:
            if bob.poll() is None:
                bob.kill()
                bob.wait()


def test_direct_call_without_server(call_setup: Path) -> None:
    tmp = call_setup
    bob_port = free_udp_port()
    bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
    bob = start_phone(["--user", "bob", "--local-port", str(bob_port), "answer", "--record", str(tmp / "bob.wav"),
                  "--timeout", "10"], bob_log)
    try:
        wait_for_text(bob_log, "event=started")
        alice = start_phone(["--user", "alice", "call", f"sip:bob@127.0.0.1:{bob_port}", "--play",
                        str(tmp / "tone1k.wav"), "--hangup-after", "2"], alice_log)
        assert wait_exit(alice, 15) == 0, alice_log.read_text() + bob_log.read_text()
        assert wait_exit(bob, 10) == 0, bob_log.read_text()
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait()
    samples, rate, _ = read_audio(tmp / "bob.wav")
    assert abs(dominant_frequency(samples, rate) - 1000.0) <= 20.0


def test_usage_and_rejection_exit_codes(call_setup: Path) -> None:
    tmp = call_setup
    rc = subprocess.run([sys.executable, "-m", "leansip", "phone", "--user", "a", "call", "bob"], env=phone_env(),
                        capture_output=True, timeout=20).returncode
    assert rc == 2
    with ServerProcess(["--auth", "--users", str(tmp / "users.txt"), "--location", "memory", "--stateless"],
                       tmp) as srv:
        server = ["--server", f"127.0.0.1:{srv.port}"]
        bad = subprocess.run([sys.executable, "-m", "leansip", "phone", *server, "--user", "alice", "--password",
                              "wrong", "register"], env=phone_env(), capture_output=True, timeout=20)
        assert bad.returncode == 1, bad.stderr
        # nobody registered as bob: the proxy answers 480 -> rejected
        alone = subprocess.run([sys.executable, "-m", "leansip", "phone", *server, "--user", "alice", "--password",
                                "alicepw", "call", "bob", "--timeout", "5"], env=phone_env(), capture_output=True,
                               timeout=20)
        assert alone.returncode == 3, alone.stderr
