"""Browser phones: JsSIP in two headless Chromium pages calls through ``leansip serve`` over ws: and wss:.

Each browser reaches the proxy only over the WebSocket it opened, and its Contact is a ``.invalid`` name
(RFC 7118): the ACK, the re-INVITEs and the BYE of a call between two browsers find the other browser only
through the flow tokens of our Record-Route (RFC 5626 5.3). What is checked, as a person using two browser
phones would see it: both register (digest, 401 then 200), alice calls bob, both reach ``confirmed`` (bob's
``confirmed`` is the ACK arriving), alice hangs up after a few seconds and bob's call ends with originator
``remote`` (the BYE arrived); closing bob's tab without unregistering removes his binding at once
(/api/bindings). And a browser calling a plain-RTP SIPp UAS over UDP through the proxy: the UAS refuses the
WebRTC offer with 488, the browser sees the 488, SIPp gets its ACK.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from leansip.io.tls import create_self_signed
from tests.conftest import free_tcp_port, free_udp_port, require_program
from tests.integration.browser_kit import Browser, BrowserPhone, require_jssip, wait_until
from tests.integration.helpers import ServerProcess
from tests.integration.sipp_kit import run_sipp, scenario

pytestmark = [pytest.mark.external, pytest.mark.timeout(120)]

USERS = "alice:alicepw\nbob:bobpw\ncallee:calleepw\n"
TALK = 2.0  # seconds between confirmed and alice's hang-up


def _api(url: str, path: str) -> object:
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return json.loads(resp.read())


def _bindings(url: str) -> dict[str, str]:
    """AOR -> transport of every binding the admin API lists."""
    rows = _api(url, "/api/bindings")
    assert isinstance(rows, list)
    return {row["aor"]: row["transport"] for row in rows}


def _server(tmp: Path, listen: list[str], *extra: str) -> ServerProcess:
    (tmp / "users.txt").write_text(USERS)
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    create_self_signed(cert, key)
    args = ["--auth", "--auth-algorithms", "MD5", "--users", str(tmp / "users.txt"), "--realm", "leansip",
            "--location", "memory", "--db", str(tmp / "leansip.db"), "--tls-cert", str(cert), "--tls-key", str(key),
            "--admin", f"127.0.0.1:{free_tcp_port()}", "--log-level", "info", *extra]
    for spec in listen:
        args += ["--listen", spec]
    return ServerProcess(args, tmp)


def _start(browser: Browser, name: str, url: str, password: str) -> BrowserPhone:
    phone = browser.phone(name).start(url, f"sip:{name}@leansip", password)
    phone.wait("registered", status=200)
    return phone


@pytest.mark.parametrize(("transport", "mode"), [("ws", "--stateful"), ("wss", "--stateless")])
def test_two_browsers_call_and_hang_up(tmp_path: Path, test_output_dir: Path, transport: str, mode: str) -> None:
    require_jssip()
    with _server(tmp_path, [f"{transport}:127.0.0.1:0"], mode) as srv:
        port = srv.listening()[transport][1]
        url = f"{transport}://127.0.0.1:{port}"
        admin = srv.admin_url()
        assert admin is not None, srv.output()
        with Browser(trust=tmp_path / "cert.pem") as browser:
            alice = _start(browser, "alice", url, "alicepw")
            bob = _start(browser, "bob", url, "bobpw")
            assert _bindings(admin) == {"alice": transport, "bob": transport}

            alice.call("sip:bob@leansip")
            bob.wait("newRTCSession", originator="remote")
            bob.answer()
            alice.wait("confirmed")
            bob.wait("confirmed")  # the callee is confirmed by the ACK: it crossed the proxy to bob's socket
            alice.wait("ice", state="connected")  # and media flows between the pages (loopback candidates)
            bob.wait("ice", state="connected")
            time.sleep(TALK)  # talk: nothing ends the call on its own in the meantime
            assert [e for e in alice.events() + bob.events() if e["ev"] in ("ended", "failed")] == []
            browser.screenshot(bob, test_output_dir / "bob-in-call.png")
            alice.hangup()
            alice.wait("ended", originator="local")
            ended = bob.wait("ended", timeout=5)
            assert ended["originator"] == "remote", ended  # the BYE reached bob's socket
            assert alice.errors == [] and bob.errors == [], (alice.errors, bob.errors)

            # bob closes his tab without unregistering: his binding goes with his WebSocket
            lost_before = _api(admin, "/api/stats")["lost_bindings"]  # type: ignore[index]
            bob.close()
            wait_until(lambda: "bob" not in _bindings(admin), 10, "bob's binding to go")
            assert _bindings(admin) == {"alice": transport}
            assert _api(admin, "/api/stats")["lost_bindings"] == lost_before + 1  # type: ignore[index]
            assert "event=binding_lost" in srv.output() and "aor=bob" in srv.output()

            # a call to bob now gets a final answer at once (no binding), never a fork to the dead connection
            alice.call("sip:bob@leansip")
            failed = alice.wait("failed", timeout=5)
            assert failed["status"] == 480 and failed["originator"] == "remote", failed
        assert srv.alive(), srv.output()


def test_browser_call_to_plain_rtp_uas_gets_488(tmp_path: Path) -> None:
    """A WebRTC offer (DTLS-SRTP, ICE) to a UDP phone that only does plain RTP: the 488 reaches the browser,
    the UAS gets its ACK; nothing is left hanging on either side."""
    require_jssip()
    sipp = require_program("sipp")
    with _server(tmp_path, ["ws:127.0.0.1:0"]) as srv:
        url = f"ws://127.0.0.1:{srv.listening()['ws'][1]}"
        uas_port = free_udp_port()
        uas = subprocess.Popen(
            [sipp, f"127.0.0.1:{srv.port}", "-sf", str(scenario("uas-488.xml", tmp_path)), "-i", "127.0.0.1",
             "-p", str(uas_port), "-m", "1", "-nostdin", "-timeout", "40", "-trace_err",
             "-error_file", str(tmp_path / "uas.errors")],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            reg = run_sipp(srv.port, scenario("proxy-register.xml", tmp_path), tmp_path,
                           ["-m", "1", "-s", "callee", "-key", "callee_port", str(uas_port),
                            "-au", "callee", "-ap", "calleepw"], name="register", timeout=20)
            assert reg.count("SuccessfulCall") == 1, f"{reg}\n{srv.output()}"
            with Browser() as browser:
                alice = _start(browser, "alice", url, "alicepw")
                alice.call("sip:callee@leansip")
                failed = alice.wait("failed", timeout=10)
                assert (failed["status"], failed["originator"]) == (488, "remote"), failed
                assert uas.wait(timeout=15) == 0, uas.stderr.read() if uas.stderr else ""
                assert [e["ev"] for e in alice.events() if e["ev"] in ("confirmed", "ended")] == []
                assert alice.errors == []
        finally:
            if uas.poll() is None:
                uas.kill()
                uas.wait()
        assert srv.alive(), srv.output()
