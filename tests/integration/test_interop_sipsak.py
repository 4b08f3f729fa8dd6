"""Interop with sipsak 0.9.8: OPTIONS ping, Max-Forwards trace, digest through the proxy.

sipsak cuts the last digit off a 5-digit port in the request URI (``sip:127.0.0.1:15060`` goes out as
``sip:127.0.0.1:1506``), so the server listens on a free port below 10000 here. sipsak reads only the
*first* Proxy-Authenticate header and gives up on any algorithm but MD5, so the digest cases run the server
with ``--auth-algorithms MD5,SHA-256``; :func:`test_sipsak_sha256_first_is_unsupported` pins that down.

sipsak exit status: 0 = a 200 arrived, 1 = another final status, 2 = local error (also: authentication
failed), 3 = remote error / no answer.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.integration.helpers import ServerProcess
from tests.integration.interop import free_port_block


@pytest.fixture
def sipsak(tmp_path: Path) -> str:
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    return require_program("sipsak")


def _server(tmp: Path, *args: str) -> ServerProcess:
    port = free_port_block(1, low=2000, high=9999)  # 4 digits: see the module doc
    return ServerProcess(["--location", "memory", "--realm", "test", *args], tmp, port=port)


def _auth_server(tmp: Path, *args: str) -> ServerProcess:
    return _server(tmp, "--auth", "--users", str(tmp / "users.txt"), *args)


def _run(exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([exe, "-vv", *args], capture_output=True, text=True, timeout=20)


def test_sipsak_options_ping(sipsak: str, tmp_path: Path) -> None:
    """OPTIONS to the server itself is answered 200 by the server, with auth on (no challenge)."""
    with _auth_server(tmp_path) as srv:
        result = _run(sipsak, "-s", f"sip:127.0.0.1:{srv.port}")
    assert result.returncode == 0, result.stdout + result.stderr + srv.output()
    assert "SIP/2.0 200 OK" in result.stdout
    assert "Server: leansip" in result.stdout
    assert f"To: sip:127.0.0.1:{srv.port};tag=" in result.stdout  # the R-URI port arrived whole


def test_sipsak_unknown_user_gets_404(sipsak: str, tmp_path: Path) -> None:
    with _server(tmp_path, "--no-auth") as srv:
        result = _run(sipsak, "-s", f"sip:nobody@127.0.0.1:{srv.port}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SIP/2.0 404 Not Found" in result.stdout


def test_sipsak_trace_max_forwards(sipsak: str, tmp_path: Path) -> None:
    """``-T`` sends Max-Forwards 0, 1, ...: hop 0 must get 483 (RFC 3261 16.3 step 2), then the final 404."""
    with _server(tmp_path, "--no-auth") as srv:
        result = subprocess.run([sipsak, "-T", "-s", f"sip:nobody@127.0.0.1:{srv.port}"], capture_output=True,
                                text=True, timeout=20)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert any(line.startswith("0:") and "483 Too Many Hops" in line for line in lines), result.stdout
    assert any(line.startswith("0:") and "404 Not Found" in line for line in lines), result.stdout


def test_sipsak_digest_through_proxy(sipsak: str, tmp_path: Path) -> None:
    """OPTIONS to a user goes through the proxy: 407, MD5 digest answer, then the proxy's 404 (rc 1)."""
    with _auth_server(tmp_path, "--auth-algorithms", "MD5,SHA-256") as srv:
        good = _run(sipsak, "-s", f"sip:carol@127.0.0.1:{srv.port}", "-u", "alice", "-a", "alicepw")
        bad = _run(sipsak, "-s", f"sip:carol@127.0.0.1:{srv.port}", "-u", "alice", "-a", "wrong")
    assert good.returncode == 1, good.stdout + good.stderr
    assert "SIP/2.0 404 Not Found" in good.stdout, good.stdout
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "authorization failed" in bad.stdout + bad.stderr
    assert "404 Not Found" not in bad.stdout


def test_sipsak_sha256_first_is_unsupported(sipsak: str, tmp_path: Path) -> None:
    """With the default offer (SHA-256 first) sipsak 0.9.8 stops: its limit, documented by this test."""
    with _auth_server(tmp_path) as srv:
        result = _run(sipsak, "-s", f"sip:carol@127.0.0.1:{srv.port}", "-u", "alice", "-a", "alicepw")
    output = result.stdout + result.stderr
    assert "algorithm=SHA-256" in output
    if "unsupported authentication algorithm" not in output:
        pytest.fail("sipsak now handles a SHA-256 first challenge: update the module doc\n" + output)
    assert result.returncode == 2
