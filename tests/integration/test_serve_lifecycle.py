"""``leansip serve`` as an operator meets it: the start and stop lines, a listener it cannot open, and a phone
that has no password for a server that asks for one. Real processes and sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import ServerProcess, phone_env, start_phone, wait_exit

pytestmark = pytest.mark.timeout(120)


def _serve(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leansip", "serve", "--admin", "off", "--location", "memory",
                           *argv], cwd=cwd, capture_output=True, text=True, timeout=60, env=phone_env())


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("leansip: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_started_at_info_and_a_line_on_sigterm(tmp_path: Path, log_format: str) -> None:
    """``event=started`` was logged at warning, and SIGTERM stopped the server silently."""
    server = ServerProcess(["--no-auth", "--location", "memory", "--log-level", "info", "--log-format", log_format],
                           tmp_path).start()
    assert server.stop() == 0, server.output()
    out = server.stdout_path.read_text()
    assert "leansip stopped (SIGTERM) after " in out, server.output()
    lines = server.stderr_path.read_text().splitlines()
    if log_format == "logfmt":
        started = [line for line in lines if " event=started " in line]
        assert len(started) == 1 and " level=info " in started[0], lines
        assert f"listen=udp:127.0.0.1:{server.port} " in started[0]
        assert any(" level=info event=stopped logger=leansip.serve reason=SIGTERM uptime_s=" in line
                   for line in lines), lines
    else:
        docs = [json.loads(line) for line in lines]  # every line is one JSON object
        by_event = {doc["event"]: doc for doc in docs}
        assert by_event["started"]["level"] == "info"
        assert by_event["started"]["listen"] == f"udp:127.0.0.1:{server.port}"
        assert by_event["stopped"]["reason"] == "SIGTERM" and by_event["stopped"]["uptime_s"] >= 0


def _with_port_taken(tmp_path: Path, *argv: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run ``leansip serve ARGV`` (``{port}`` in it replaced) while another socket listens on that TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        return port, _serve(*(arg.replace("{port}", str(port)) for arg in argv), cwd=tmp_path)


def test_a_listener_in_use_is_named(tmp_path: Path) -> None:
    port, result = _with_port_taken(tmp_path, "--listen", "udp:127.0.0.1:0", "--listen", "tcp:127.0.0.1:{port}")
    assert result.returncode == 1
    assert _one_error(result) == (f"leansip: error: cannot listen on tcp:127.0.0.1:{port} (--listen): another "
                                  "program already uses this address and port; stop it or pick another port")


def test_an_admin_port_in_use_is_named(tmp_path: Path) -> None:
    port, result = _with_port_taken(tmp_path, "--listen", "udp:127.0.0.1:0", "--admin", "127.0.0.1:{port}")
    assert result.returncode == 1
    assert _one_error(result) == (f"leansip: error: cannot start: admin endpoint 127.0.0.1:{port} (--admin): "
                                  "Address already in use")


def test_a_listen_host_that_is_not_an_address(tmp_path: Path) -> None:
    result = _serve("--listen", "udp:999.1.1.1:5", cwd=tmp_path)
    assert result.returncode == 1
    line = _one_error(result)
    assert line.startswith("leansip: error: cannot listen on udp:999.1.1.1:5 (--listen): '999.1.1.1' is not an "
                           "address of this machine nor a name that resolves ("), line


def test_phone_without_password_is_told_the_server_asked_for_credentials(tmp_path: Path) -> None:
    """It ended with ``CallEnded reason='rejected' status=407`` and exit 3, and the user had to know why."""
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    with ServerProcess(["--auth", "--users", str(tmp_path / "users.txt"), "--location", "memory", "--realm",
                        "test"], tmp_path) as server:
        log = tmp_path / "alice.log"
        phone = start_phone(["--server", f"127.0.0.1:{server.port}", "--user", "alice", "call", "bob",
                             "--timeout", "10"], log)
        assert wait_exit(phone, 30) == 3, log.read_text()
    text = log.read_text()
    assert ("leansip phone: error: the server asked for credentials (407) and none were given: add --password"
            in text), text
