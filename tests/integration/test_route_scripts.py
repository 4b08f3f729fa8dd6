"""A route script in a real ``leansip serve`` over real UDP sockets: a handler's exception answers 500, is
logged once with the script's file:line and counted on /metrics; reload by POST /api/reload and by SIGHUP sends
new requests to the new script while a call already being relayed finishes with the old one; a broken script is
refused (422, the reason naming file:line) and the old one stays. The test's own sockets are the caller and the
callee."""

from __future__ import annotations

import json
import signal
import socket
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from tests.conftest import free_tcp_port
from tests.integration.helpers import ServerProcess

TOKEN = "reload-test-token"

SCRIPT = """\
from leansip.routes import Routes

routes = Routes()
VERSION = "{version}"


@routes.request("INVITE")
def call(req, ctx):
    ctx.relay("sip:callee@127.0.0.1:{callee}", on_failure=failed)


def failed(req, ctx, response):
    ctx.reply(486, "Busy by " + VERSION)


@routes.request("MESSAGE")
def message(req, ctx):
    if req.header("subject") == "boom":
        return {{}}["no such key"]
    ctx.reply(202, "Accepted by " + VERSION)
"""


class Peer:
    """One UDP socket of the test: sends requests, reads what the server sends it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def request(self, server: int, method: str, *, subject: str = "", call_id: str | None = None) -> str:
        call_id = call_id or uuid.uuid4().hex
        body = b"v=0\r\n" if method == "INVITE" else b"hi"
        lines = [f"{method} sip:callee@127.0.0.1:{server} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex[:12]}",
                 "Max-Forwards: 70", f"From: <sip:caller@127.0.0.1>;tag={call_id[:8]}",
                 "To: <sip:callee@127.0.0.1>", f"Call-ID: {call_id}", f"CSeq: 1 {method}",
                 f"Contact: <sip:caller@127.0.0.1:{self.port}>"]
        if subject:
            lines.append(f"Subject: {subject}")
        lines.append(f"Content-Length: {len(body)}")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, ("127.0.0.1", server))
        return call_id

    def receive(self, timeout: float = 5.0) -> str:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(65535)
        return data.decode()

    def final(self, timeout: float = 5.0) -> str:
        """The first final response line (skipping 1xx)."""
        while True:
            text = self.receive(timeout)
            first = text.split("\r\n", 1)[0]
            if first.startswith("SIP/2.0 ") and not first.startswith("SIP/2.0 1"):
                return first

    def answer(self, request: str, status: int, reason: str) -> None:
        """Answer a request the server relayed to us (Vias copied, a To tag added)."""
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
        to = next(h for h in head if h.lower().startswith("to:"))
        text = "\r\n".join([f"SIP/2.0 {status} {reason}", *keep, f"{to};tag=callee", "Content-Length: 0"])
        via = next(h for h in head if h.lower().startswith("via:"))
        sent_by = via.split()[2].split(";")[0]
        host, port = sent_by.rsplit(":", 1)
        self.sock.sendto((text + "\r\n\r\n").encode(), (host, int(port)))

    def close(self) -> None:
        self.sock.close()


def _post_reload(admin: int) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/api/reload", data=b"", method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _metric(admin: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _wait_for(path: Path, text: str, count: int, timeout: float = 10.0) -> None:
    """Until ``text`` shows ``count`` times in the server's log file (the server's own report of an event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} x{count} not in {path}:\n{path.read_text(errors='replace')[-3000:]}")


def test_script_errors_and_reload_keep_running_calls_on_the_old_script(tmp_path: Path) -> None:
    caller, callee = Peer(), Peer()
    script = tmp_path / "routes.py"
    script.write_text(SCRIPT.format(version="v1", callee=callee.port))
    admin = free_tcp_port()
    args = ["--routes", str(script), "--location", "memory", "--admin", f"127.0.0.1:{admin}",
            "--admin-token", TOKEN, "--log-level", "warning"]
    try:
        with ServerProcess(args, tmp_path) as server:
            port = server.port
            # an exception in a handler: 500 each time, one log line naming the script's line, counted
            for _ in range(2):
                caller.request(port, "MESSAGE", subject="boom")
                assert caller.final() == "SIP/2.0 500 Route Script Error"
            log = server.stderr_path
            _wait_for(log, "route_script_error", 1)
            assert log.read_text().count("route_script_error") == 1
            assert f"where={script}:19" in log.read_text()
            assert _metric(admin, "leansip_script_errors_total") == 2

            # a call relayed by v1 is ringing when v2 arrives
            call_id = caller.request(port, "INVITE")
            invite = callee.receive()
            assert invite.startswith("INVITE sip:callee@127.0.0.1:") and call_id in invite
            script.write_text(SCRIPT.format(version="v2", callee=callee.port))
            status, body = _post_reload(admin)
            assert status == 200 and body["methods"] == ["INVITE", "MESSAGE"]
            caller.request(port, "MESSAGE")
            assert caller.final() == "SIP/2.0 202 Accepted by v2"  # new requests: the new script
            callee.answer(invite, 486, "Busy Here")
            assert caller.final() == "SIP/2.0 486 Busy by v1"  # the running call: its own script's handler

            # a broken script is refused with its reason; the running one stays
            script.write_text("from leansip.routes import Routes\nroutes = Routes()\nroutes.request('INVITE')(\n")
            status, body = _post_reload(admin)
            assert status == 422 and f"{script}:3: SyntaxError" in str(body["error"])
            caller.request(port, "MESSAGE")
            assert caller.final() == "SIP/2.0 202 Accepted by v2"

            # SIGHUP: the same, broken then good
            assert server.proc is not None
            server.proc.send_signal(signal.SIGHUP)
            _wait_for(log, "routes_reload_refused", 2)
            caller.request(port, "MESSAGE")
            assert caller.final() == "SIP/2.0 202 Accepted by v2"
            script.write_text(textwrap.dedent(SCRIPT.format(version="v3", callee=callee.port)))
            server.proc.send_signal(signal.SIGHUP)
            _wait_for(log, "routes_reloaded", 2)
            caller.request(port, "MESSAGE")
            assert caller.final() == "SIP/2.0 202 Accepted by v3"
            assert server.alive()
    finally:
        caller.close()
        callee.close()
