"""The phone over TCP and TLS through ``leansip serve`` (stateful, digest auth): real processes, real audio.

A UDP phone calls a TLS phone (and a TCP phone calls a UDP one). The stream phone keeps ONE connection to the
server: it registers over it with ``;transport=tls`` in Contact and Via, and the INVITE and BYE for it come back
over that same connection (the server's binding stores the connection id, RFC 5626 flow reuse) -- checked in
its ``-v`` log, where every received message names the server's stream address as its source. The recording
must hold the 1 kHz tone, and the call ends cleanly with the BYE sent by either side.

TLS is verified: the phone trusts the server's development certificate (made under the server's ``--db``
directory) only when given ``--ca-file``; without it the handshake fails and the phone says so.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leansip.io.tls import DEV_CERT_NAME
from leansip.media.audiofile import read_audio
from leansip.media.tone import active_duration, dominant_frequency, write_tone_wav
from tests.integration.helpers import ServerProcess, start_phone, wait_exit, wait_for_text

TALK = 3.0


class Server:
    """``leansip serve`` on UDP, TCP and TLS (free ports, read back from its banner)."""

    def __init__(self, tmp: Path) -> None:
        self.proc = ServerProcess(["--listen", "tcp:127.0.0.1:0", "--listen", "tls:127.0.0.1:0", "--stateful",
                                   "--auth", "--users", str(tmp / "users.txt"), "--location", "memory",
                                   "--realm", "test", "--db", str(tmp / "var" / "leansip.db")], tmp)
        self.ports: dict[str, int] = {}
        self.cert = tmp / "var" / DEV_CERT_NAME

    def __enter__(self) -> Server:
        self.proc.start()
        banner = self.proc.stdout_path.read_text()
        for transport, port in re.findall(r"(udp|tcp|tls):127\.0\.0\.1:(\d+)", banner):
            self.ports.setdefault(transport, int(port))
        assert set(self.ports) == {"udp", "tcp", "tls"}, banner
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def args(self, transport: str) -> list[str]:
        out = ["--server", f"127.0.0.1:{self.ports[transport]}", "--transport", transport]
        return out + (["--ca-file", str(self.cert)] if transport == "tls" else [])


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, TALK + 8.0)
    return tmp_path


def _check_recording(path: Path, seconds: float) -> None:
    samples, rate, channels = read_audio(path)
    assert channels == 1 and rate == 8000
    assert abs(dominant_frequency(samples, rate) - 1000.0) <= 20.0
    assert active_duration(samples, rate) >= 0.8 * seconds, (active_duration(samples, rate), len(samples) / rate)


def _call(tmp: Path, srv: Server, caller: str, callee: str, *, callee_hangs_up: bool) -> tuple[str, str]:
    """alice (over ``caller``) calls bob (over ``callee``); bob records. Returns both logs."""
    bob_log, alice_log = tmp / "bob.log", tmp / "alice.log"
    bob_cmd = [*srv.args(callee), "--user", "bob", "--password", "bobpw", "-v", "answer",
               "--record", str(tmp / "bob.wav"), "--timeout", "20"]
    alice_cmd = [*srv.args(caller), "--user", "alice", "--password", "alicepw", "call", "bob",
                 "--play", str(tmp / "tone1k.wav"), "--timeout", "8"]
    if callee_hangs_up:
        bob_cmd += ["--hangup-after", str(TALK)]
        alice_cmd += ["--hangup-after", str(TALK + 6)]
    else:
        alice_cmd += ["--hangup-after", str(TALK)]
    bob = start_phone(bob_cmd, bob_log)
    try:
        wait_for_text(bob_log, "event=Registered")
        alice = start_phone(alice_cmd, alice_log)
        alice_rc = wait_exit(alice, 30)
        bob_rc = wait_exit(bob, 15)
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait()
    alice_text, bob_text = alice_log.read_text(), bob_log.read_text()
    logs = f"--- alice\n{alice_text}\n--- bob\n{bob_text}\n--- server\n{srv.proc.output()}"
    assert (alice_rc, bob_rc) == (0, 0), logs
    if callee_hangs_up:
        assert "event=CallEnded reason='local hangup' status=200" in bob_text, logs
        assert "event=CallEnded reason='remote hangup'" in alice_text, logs
    else:
        assert "event=CallEnded reason='local hangup' status=200" in alice_text, logs
        assert "event=CallEnded reason='remote hangup'" in bob_text, logs
    _check_recording(tmp / "bob.wav", TALK)
    return alice_text, bob_text


def _received_from(log: str) -> list[tuple[str, str]]:
    """(source, first line) of every SIP message the phone's -v log shows as received."""
    return re.findall(r"recv from (\S+)\n(\S+ \S+)", log)


def _flow_checks(log: str, transport: str, server_port: int) -> None:
    """Registered with ;transport= over the flow, and every request to us came over that same connection."""
    local = re.search(rf"event=connected transport={transport} local=(\S+) server=127\.0\.0\.1:{server_port}", log)
    assert local is not None, log
    assert f"Contact: <sip:bob@{local.group(1)};transport={transport}>" in log, log
    assert f"Via: SIP/2.0/{transport.upper()} {local.group(1)};" in log, log
    received = _received_from(log)
    requests = [line.split()[0] for source, line in received if not line.startswith("SIP/2.0")]
    assert "INVITE" in requests and "ACK" in requests, received
    assert {source for source, _ in received} == {f"127.0.0.1:{server_port}"}, received
    assert log.count("event=connected") == 1, "one connection for the whole run"


@pytest.mark.parametrize("callee_hangs_up", [False, True], ids=["caller-bye", "callee-bye"])
def test_udp_phone_calls_tls_phone(tmp: Path, callee_hangs_up: bool) -> None:
    with Server(tmp) as srv:
        _alice, bob = _call(tmp, srv, "udp", "tls", callee_hangs_up=callee_hangs_up)
        _flow_checks(bob, "tls", srv.ports["tls"])
        if callee_hangs_up:
            # our BYE went out over the flow too: its 200 came back from the server's TLS address
            assert any(line.startswith("SIP/2.0 200") for _src, line in _received_from(bob))
            assert re.search(r"send to tls:127\.0\.0\.1:\d+ \(flow\)\nBYE ", bob), bob


def test_tcp_phone_calls_and_is_called(tmp: Path) -> None:
    with Server(tmp) as srv:
        _alice, bob = _call(tmp, srv, "tcp", "tcp", callee_hangs_up=False)
        _flow_checks(bob, "tcp", srv.ports["tcp"])


def test_tls_without_trusted_ca_fails_and_insecure_connects(tmp: Path) -> None:
    with Server(tmp) as srv:
        port = srv.ports["tls"]
        base = ["--server", f"127.0.0.1:{port}", "--transport", "tls", "--user", "bob", "--password", "bobpw"]
        log = tmp / "untrusted.log"
        rc = wait_exit(start_phone([*base, "register"], log), 20)
        assert rc == 2, log.read_text()
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text()
        log = tmp / "insecure.log"
        rc = wait_exit(start_phone([*base, "--insecure", "register"], log), 20)
        assert rc == 0, log.read_text()
        assert "event=Registered" in log.read_text()


def test_sips_target_implies_tls(tmp: Path) -> None:
    """``call sips:...`` connects over TLS although --transport was not given (RFC 3261 26.2.2)."""
    with Server(tmp) as srv:
        log = tmp / "sips.log"
        rc = wait_exit(start_phone(["--server", f"127.0.0.1:{srv.ports['tls']}", "--ca-file", str(srv.cert), "--user",
                           "alice", "--password", "alicepw", "call", f"sips:nobody@127.0.0.1:{srv.ports['tls']}",
                           "--timeout", "5"],
                          log), 30)
        text = log.read_text()
        assert "event=connected transport=tls" in text, text
        assert rc == 3, text  # nobody is registered: rejected (404), but it went out over TLS
        assert "event=CallEnded reason='rejected' status=404" in text, text


def test_stream_keepalive_ping_gets_pong(tmp: Path) -> None:
    with Server(tmp) as srv:
        log = tmp / "ka.log"
        rc = wait_exit(start_phone([*srv.args("tcp"), "--user", "alice", "--password", "alicepw", "--keepalive", "0.4", "-v",
                           "register", "--hold", "2.5"], log), 20)
        text = log.read_text()
        assert rc == 0, text
        pings = len(re.findall(r"event=keepalive_ping", text))
        pongs = len(re.findall(r"event=keepalive_pong", text))
        assert pings >= 3, text
        assert pongs >= pings - 1, text  # every ping answered (the last one may be in flight at exit)
        assert "keepalive_failed" not in text
