"""The admin JSON API, its token rules and ``leansip status``, against a real server process and SIPp."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_udp_port, require_program
from tests.integration.admin_server import Server, run_server, sipp_register

pytestmark = pytest.mark.timeout(120)


def _wait_for(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _status_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leansip", "status", "--admin", server.url, *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)


def test_status_users_and_openapi(tmp_path: Path) -> None:
    with run_server(tmp_path, "--mode", "registrar") as server:
        status = server.get("/api/status")
        assert status["mode"] == "registrar" and status["auth"] is False
        assert status["users"] == 3 and status["bindings"] == 0
        assert status["transports"] == [{"transport": "udp", "host": "127.0.0.1", "port": server.sip_port}]
        assert {u["username"] for u in server.get("/api/users")} == {"user0", "user1", "user2"}

        code, body = server.request("POST", "/api/users", {"username": "dave", "password": "s3cret"})
        assert code == 201, body
        assert "dave:s3cret" in server.users_file.read_text().splitlines()
        assert server.get("/api/status")["users"] == 4
        code, body = server.request("POST", "/api/users", {"username": "dave", "password": "again"})
        assert code == 409 and "exists" in body["error"]
        code, body = server.request("POST", "/api/users", {"username": "bad name", "password": "x"})
        assert code == 400
        code, body = server.request("POST", "/api/users", {"username": "eve", "password": "a:b"})
        assert code == 400 and "eve" not in server.users_file.read_text()

        code, body = server.request("DELETE", "/api/users/user1")
        assert code == 200 and body == {"removed": "user1"}
        assert "user1" not in server.users_file.read_text()
        assert {u["username"] for u in server.get("/api/users")} == {"user0", "user2", "dave"}
        code, _ = server.request("DELETE", "/api/users/user1")
        assert code == 404

        # a page elsewhere cannot make the admin's browser write here
        code, body = server.request("POST", "/api/users", {"username": "mallory", "password": "x"},
                                    headers={"Origin": "http://evil.example"})
        assert code == 403 and "mallory" not in server.users_file.read_text()

        spec = server.get("/api/openapi.json")
        assert spec["openapi"].startswith("3.")
        for path in ("/api/status", "/api/users", "/api/users/{name}", "/api/bindings", "/api/calls",
                     "/api/stats", "/api/timings", "/api/events"):
            assert path in spec["paths"], path
        assert set(spec["paths"]["/api/users"]) == {"get", "post"}
        assert set(spec["paths"]["/api/users/{name}"]) == {"delete"}
        calls = server.get("/api/calls")
        assert calls["transactions"] == 0 and calls["calls"] == []
        assert server.get("/api/stats")["requests"] == {}


def test_bindings_follow_sipp_register_and_unregister(tmp_path: Path) -> None:
    sipp = require_program("sipp")
    local = free_udp_port()
    with run_server(tmp_path) as server:
        sipp_register(sipp, server, tmp_path, ["user0", "user2"], expires=600, local_port=local)
        bindings = _wait_for(lambda: server.get("/api/bindings"))
        assert {b["user"] for b in bindings} == {"user0", "user2"}
        b = next(b for b in bindings if b["user"] == "user0")
        assert b["source"] == f"127.0.0.1:{local}"
        assert b["transport"] == "udp" and b["user_agent"] == "sipp-bench"
        assert 590 <= b["expires_in"] <= 600
        assert b["contact"] == f"sip:user0@127.0.0.1:{local}"
        assert [x["user"] for x in server.get("/api/bindings?user=user2")] == ["user2"]
        assert len(server.get("/api/bindings?limit=1")) == 1
        assert server.request("GET", "/api/bindings?limit=0")[0] == 400
        status = server.get("/api/status")
        assert status["bindings"] == 2 and status["stats"]["requests"]["REGISTER"] >= 2

        cli = _status_cli(server)
        assert cli.returncode == 0, cli.stderr
        assert "user0" in cli.stdout and f"127.0.0.1:{local}" in cli.stdout and "REGISTER" in cli.stdout
        assert "mode:" in cli.stdout and "proxy" in cli.stdout
        cli_json = _status_cli(server, "--json")
        assert cli_json.returncode == 0
        import json

        doc = json.loads(cli_json.stdout)
        assert doc["status"]["bindings"] == 2 and len(doc["bindings"]) == 2

        timings = server.get("/api/timings")
        assert timings["enabled"] and timings["flows"]["register"]["total"]["count"] >= 2
        assert timings["flows"]["register"]["total"]["mean_us"] > 0

        sipp_register(sipp, server, tmp_path, ["user0"], expires=0, local_port=local)
        bindings = _wait_for(lambda: [b for b in server.get("/api/bindings") if b["user"] == "user0"] == [])
        assert bindings
        assert [b["user"] for b in server.get("/api/bindings")] == ["user2"]


def test_status_cli_cannot_reach(tmp_path: Path) -> None:
    port = free_udp_port()  # nothing listens on this TCP port number (almost surely)
    cli = subprocess.run([sys.executable, "-m", "leansip", "status", "--admin", f"http://127.0.0.1:{port}"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert cli.returncode == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leansip: error: cannot reach the admin endpoint")


def test_token_on_loopback_guards_writes_only(tmp_path: Path) -> None:
    with run_server(tmp_path, "--admin-token", "tok3n") as server:
        assert server.get("/api/status")["users"] == 3  # reads stay open on loopback
        code, body = server.request("POST", "/api/users", {"username": "dave", "password": "pw"})
        assert code == 401 and "token" in body["error"]
        code, _ = server.request("POST", "/api/users", {"username": "dave", "password": "pw"}, token="wrong")
        assert code == 401
        code, _ = server.request("DELETE", "/api/users/user0")
        assert code == 401 and "user0" in server.users_file.read_text()
        code, _ = server.request("POST", "/api/users", {"username": "dave", "password": "pw"}, token="tok3n")
        assert code == 201
        code, _ = server.request("DELETE", "/api/users/dave?token=tok3n")
        assert code == 200 and "dave" not in server.users_file.read_text()


def test_non_loopback_needs_a_token_then_requires_it_everywhere(tmp_path: Path) -> None:
    users = tmp_path / "u.txt"
    users.write_text("a:b\n")
    refused = subprocess.run(
        [sys.executable, "-m", "leansip", "serve", "--listen", f"udp:127.0.0.1:{free_udp_port()}",
         "--admin", "0.0.0.0:0", "--no-auth", "--location", "memory", "--users", str(users)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "admin_token" in refused.stderr and "0.0.0.0" in refused.stderr
    with run_server(tmp_path, "--admin", "0.0.0.0:0", "--admin-token", "s3", "--port-fallback") as server:
        for path in ("/api/status", "/api/bindings", "/metrics", "/", "/static/app.js", "/api/events"):
            code, _ = server.request("GET", path)
            assert code == 401, path
        assert server.get("/api/status", token="s3")["users"] == 3
        code, text = server.request("GET", "/metrics?token=s3")
        assert code == 200 and "leansip_users 3.0" in text
        cli = _status_cli(server)
        assert cli.returncode == 1 and "token" in cli.stderr
        cli = _status_cli(server, "--admin-token", "s3")
        assert cli.returncode == 0 and "users:" in cli.stdout


def test_admin_port_taken_falls_back_when_allowed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with run_server(tmp_path, "--admin", f"127.0.0.1:{port}", "--port-fallback") as server:
            assert not server.url.endswith(f":{port}")
            assert server.get("/api/status")["users"] == 3
        taken = subprocess.run(
            [sys.executable, "-m", "leansip", "serve", "--listen", f"udp:127.0.0.1:{free_udp_port()}",
             "--admin", f"127.0.0.1:{port}", "--no-auth", "--location", "memory"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        assert taken.returncode == 1 and f"127.0.0.1:{port}" in taken.stderr
