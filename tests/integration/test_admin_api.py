"""The admin JSON API, its token rules and ``leansip status``, against a real server process and SIPp."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_udp_port, require_program
from tests.integration.admin_server import Server, run_server, sipp_register
from tests.integration.helpers import register, status_of

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
        calls = server.get("/api/calls")  # idle: see test_calls_while_a_call_rings for one in progress
        assert calls == {"transactions": 0, "tracking": False, "reason": "registrar mode: no calls pass through it",
                         "calls_in_progress": 0, "calls": []}
        assert server.get("/api/stats")["requests"] == {}


def _invite(server_port: int, caller_port: int, call_id: str) -> bytes:
    return (f"INVITE sip:bob@127.0.0.1:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller_port};rport;branch=z9hG4bK-{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=a-{call_id}\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{caller_port}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def _ack(final: bytes, server_port: int, caller_port: int) -> bytes:
    """The caller's ACK for a non-2xx final response: same branch, the response's To (RFC 3261 17.1.1.3)."""
    head = final.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    pick = {line.split(":", 1)[0].lower(): line for line in reversed(head)}  # the first of each (top Via)
    return "\r\n".join([f"ACK sip:bob@127.0.0.1:{server_port} SIP/2.0", pick["via"], "Max-Forwards: 70",
                        pick["from"], pick["to"], pick["call-id"], "CSeq: 1 ACK", "Content-Length: 0", "",
                        ""]).encode()


def _reply(request: bytes, status: str, to_tag: str) -> bytes:
    """A UAS's response: the request's Vias, From, Call-ID, CSeq; To with our tag (RFC 3261 8.2.6)."""
    head = request.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    keep = [line for line in head if line.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next(line for line in head if line.lower().startswith("to:"))
    return "\r\n".join([f"SIP/2.0 {status}", *keep, f"{to};tag={to_tag}", "Content-Length: 0", "", ""]).encode()


@pytest.fixture
def phones() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Bob's and Alice's UDP sockets on free ports (5 s receive timeout)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bob, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as alice:
        for sock in (bob, alice):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
        yield bob, alice


def _ringing_call(server: Server, bob: socket.socket, alice: socket.socket) -> tuple[bytes, str]:
    """Register bob at his socket, INVITE him from alice's, answer 180 Ringing; returns (forwarded INVITE, Call-ID)."""
    bob_port, alice_port = bob.getsockname()[1], alice.getsockname()[1]
    [reply] = register(server.sip_port, "bob", (f"<sip:bob@127.0.0.1:{bob_port}>",), expires=600)
    assert status_of(reply) == 200
    call_id = f"ring-{uuid.uuid4().hex[:12]}"
    alice.sendto(_invite(server.sip_port, alice_port, call_id), ("127.0.0.1", server.sip_port))
    invite = bob.recv(65535)
    assert invite.startswith(b"INVITE sip:bob@127.0.0.1:") and call_id.encode() in invite
    bob.sendto(_reply(invite, "180 Ringing", "b1"), ("127.0.0.1", server.sip_port))
    while status_of(alice.recv(65535)) != 180:  # 100 Trying first
        pass
    return invite, call_id


def test_calls_while_a_call_rings(tmp_path: Path, phones: tuple[socket.socket, socket.socket]) -> None:
    """/api/calls during a real call, not only on an idle server (where ``calls == []`` proved nothing): the
    ringing call counts, and stops counting when its attempt ends (the 486), not when its transaction does."""
    bob, alice = phones
    with run_server(tmp_path, "--t4", "0.5") as server:
        invite, _call_id = _ringing_call(server, bob, alice)
        calls = server.get("/api/calls")
        # the INVITE's server and client transactions; the REGISTER's, answered at once, may still linger
        assert calls["transactions"] >= 2 and calls["calls_in_progress"] == 1, calls
        bob.sendto(_reply(invite, "486 Busy Here", "b1"), ("127.0.0.1", server.sip_port))
        while status_of(busy := alice.recv(65535)) != 486:
            pass
        assert server.get("/api/calls")["calls_in_progress"] == 0
        alice.sendto(_ack(busy, server.sip_port, alice.getsockname()[1]), ("127.0.0.1", server.sip_port))


def test_calls_lists_the_ringing_call(tmp_path: Path, phones: tuple[socket.socket, socket.socket]) -> None:
    """The live call itself, not a count (issue 22): who calls whom, its state and both legs."""
    bob, alice = phones
    with run_server(tmp_path) as server:
        _invite, call_id = _ringing_call(server, bob, alice)
        doc = server.get("/api/calls")
        assert doc["tracking"] is True and doc["calls_in_progress"] == 1 and doc["ringing"] == 1, doc
        [call] = doc["calls"]
        assert (call["call_id"], call["caller"], call["callee"], call["state"]) == \
            (call_id, "alice@127.0.0.1", "bob@127.0.0.1", "ringing"), call
        assert (call["caller_addr"], call["caller_transport"]) == (f"127.0.0.1:{alice.getsockname()[1]}", "udp")
        assert (call["callee_addr"], call["callee_transport"]) == (f"127.0.0.1:{bob.getsockname()[1]}", "udp")
        assert call["answer"] is None and call["duration"] == 0


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
