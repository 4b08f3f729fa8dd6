"""``leansip serve --bare`` as a whole: the polling loop serves UDP while TCP, the admin endpoint and the SQLite
flusher keep working beside it on the same thread, and a request crossing from one side to the other (UDP
caller, TCP callee and back) loses nothing on the way."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_tcp_port
from tests.integration.helpers import SERVING
from tests.integration.test_transports import (
    answer,
    final_response,
    invite_bytes,
    read_message,
    register_bytes,
)


def _start(tmp_path: Path, serving: str, admin_port: int) -> tuple[subprocess.Popen[str], dict[str, int]]:
    args = [sys.executable, "-m", "leansip", "serve", "--listen", "udp:127.0.0.1:0", "--listen", "tcp:127.0.0.1:0",
            "--mode", "proxy", "--stateful", "--no-auth", "--location", "sqlite", "--db", str(tmp_path / "loc.db"),
            "--admin", f"127.0.0.1:{admin_port}", "--log-level", "warning", *SERVING[serving]]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line}{proc.stdout.read()}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    return proc, {t: int(p) for t, p in re.findall(r"(\w+):127\.0\.0\.1:(\d+)", line)}


def _admin(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("serving", ["bare", "bare-spin"])
def test_udp_and_tcp_calls_cross_the_polling_loop(tmp_path: Path, serving: str) -> None:
    admin_port = free_tcp_port()
    proc, ports = _start(tmp_path, serving, admin_port)
    udp_port, tcp_port = ports["udp"], ports["tcp"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    # generous waits: a reply comes in milliseconds, but a full suite on two shared cores once kept one 3 s
    udp.settimeout(10)
    udp_local = udp.getsockname()[1]
    tcp = socket.create_connection(("127.0.0.1", tcp_port), timeout=10)
    try:
        # one callee registers over TCP, the other over UDP
        tcp.sendall(register_bytes("tcpbob", "tcp", 5999, "reg-t"))  # contact port 5999: nobody listens there
        assert read_message(tcp, 10).startswith(b"SIP/2.0 200 ")
        udp.sendto(register_bytes("udpalice", "udp", udp_local, "reg-u"), ("127.0.0.1", udp_port))
        assert udp.recv(65536).startswith(b"SIP/2.0 200 ")

        # UDP caller -> polling loop -> core -> the TCP callee's connection; its answer back over UDP
        udp.sendto(invite_bytes("tcpbob", udp_port, udp_local, "udp", "inv-u"), ("127.0.0.1", udp_port))
        invite = read_message(tcp, 10)
        assert invite.startswith(b"INVITE sip:tcpbob@127.0.0.1:5999")
        tcp.sendall(answer(invite))
        reply = udp.recv(65536)
        while reply.startswith(b"SIP/2.0 1"):
            reply = udp.recv(65536)
        assert reply.startswith(b"SIP/2.0 200 ") and b"branch=z9hG4bKinv-u" in reply

        # TCP caller -> event loop -> core -> the UDP callee through the polling loop's socket; answer back
        tcp.sendall(invite_bytes("udpalice", tcp_port, tcp.getsockname()[1], "tcp", "inv-t"))
        got = udp.recv(65536)
        while not got.startswith(b"INVITE "):
            got = udp.recv(65536)
        assert got.startswith(b"INVITE sip:udpalice@127.0.0.1")
        udp.sendto(answer(got), ("127.0.0.1", udp_port))
        reply = final_response(tcp, 10)
        assert reply.startswith(b"SIP/2.0 200 ") and b"branch=z9hG4bKinv-t" in reply

        # the admin endpoint answers beside the loop, and sees it
        timings = _admin(admin_port, "/api/timings")
        assert isinstance(timings, dict)
        loop = timings["loop"]
        assert loop["mode"] == "bare" and loop["datagrams"] >= 3 and 0 < loop["busy_seconds"] <= loop["wall_seconds"]
        assert loop["spin"] == ("inf" if serving == "bare" else 0.002)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        busy = re.search(r"^leansip_bare_busy_seconds_total (\S+)$", metrics, re.M)
        wall = re.search(r"^leansip_bare_wall_seconds_total (\S+)$", metrics, re.M)
        assert busy and wall and 0 < float(busy[1]) < float(wall[1]), metrics[-2000:]
        bindings = _admin(admin_port, "/api/bindings")
        assert isinstance(bindings, list)
        assert {b["aor"].split("@")[0].removeprefix("sip:") for b in bindings} >= {"tcpbob", "udpalice"}
    finally:
        udp.close()
        tcp.close()
        proc.terminate()
        rc = proc.wait(10)
    assert rc == 0
    # SIGTERM stopped the loop and the store was flushed: both registrations are in the database
    with sqlite3.connect(tmp_path / "loc.db") as db:
        assert {row[0] for row in db.execute("SELECT aor FROM bindings")} >= {"tcpbob", "udpalice"}


def test_cpu_pins_the_serving_thread_and_a_missing_cpu_is_one_error_line(tmp_path: Path) -> None:
    cpu = max(os.sched_getaffinity(0))
    args = [sys.executable, "-m", "leansip", "serve", "--listen", "udp:127.0.0.1:0", "--no-auth", "--location",
            "memory", "--admin", "off", "--bare", "--bare-spin", "0.001"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([*args, "--cpu", str(cpu)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path, env=env)
    try:
        assert proc.stdout is not None
        assert "listening on" in proc.stdout.readline()
        assert os.sched_getaffinity(proc.pid) == {cpu}
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([*args, "--cpu", "4096"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.startswith("leansip: error: --cpu 4096: no such CPU here") and bad.stderr.count("\n") == 1
