"""A real ``leansip serve`` subprocess with its admin endpoint, and SIPp REGISTERs against it (shared by the
admin API, browser and metrics tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO_ROOT, free_tcp_port, free_udp_port

SIPP_REGISTER = REPO_ROOT / "tests" / "data" / "sipp" / "register-expires.xml"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    sip_port: int
    url: str  # admin base URL, no trailing slash
    users_file: Path

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) of one admin request."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        text = raw.decode()
        return status, json.loads(text) if "json" in ctype else text

    def get(self, path: str, token: str | None = None) -> Any:
        status, body = self.request("GET", path, token=token)
        assert status == 200, (path, status, body)
        return body


@contextmanager
def run_server(tmp: Path, *extra: str, users: str = "user0:pass0\nuser1:pass1\nuser2:pass2\n") -> Iterator[Server]:
    """Start the server on free ports; stop it (SIGTERM, then kill) afterwards."""
    users_file = tmp / "users.txt"
    users_file.write_text(users)
    sip_port, admin_port = free_udp_port(), free_tcp_port()
    cmd = [sys.executable, "-m", "leansip", "serve", "--listen", f"udp:127.0.0.1:{sip_port}",
           "--admin", f"127.0.0.1:{admin_port}", "--no-auth", "--location", "memory",
           "--users", str(users_file), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"admin: (http://\S+?)/?$", line.strip())
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        raise AssertionError("server did not announce its admin URL:\n" + "".join(lines) + (proc.stdout.read() or ""))
    # keep reading the server's output so a chatty log can never fill the pipe and stall it
    threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
    try:
        yield Server(proc, sip_port, url, users_file)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sipp_register(sipp: str, server: Server, tmp: Path, users: list[str], *, expires: int = 3600,
                  local_port: int) -> None:
    """One REGISTER per user from SIPp at 127.0.0.1:local_port; asserts every one got its 200."""
    csv = tmp / f"sipp-users-{local_port}-{expires}.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{u};x\n" for u in users))
    result = subprocess.run(
        [sipp, "-sf", str(SIPP_REGISTER), "-inf", str(csv), "-key", "expires", str(expires),
         "-m", str(len(users)), "-r", "50", "-i", "127.0.0.1", "-p", str(local_port), "-timeout", "10s",
         "-timeout_error", "-nostdin", "-trace_err", f"127.0.0.1:{server.sip_port}"],
        cwd=tmp, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"sipp failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
