"""Real SIPp calls through leansip on loopback: stateless proxy, stateful proxy and redirect, each with and
without digest auth.

A callee sipp (uas-answer.xml) is registered through leansip (proxy-register.xml, Contact on the UAS port), then
a caller sipp places 200 calls at 100 calls/s: INVITE through leansip, 180/200 from the callee, ACK and BYE along
the Record-Route (proxy modes) or straight to the callee after following the 302 (redirect: uac-redirect.xml
ACKs the 302 and moves its destination to the Contact with ``<setdest>``). With auth the server offers MD5 only,
because sipp 3.6 answers only MD5 challenges; a wrong password gets no call through.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.integration.helpers import SERVING, ServerProcess
from tests.integration.sipp_kit import SippServer, run_sipp, scenario

CALLS = 200
COMBOS = [
    pytest.param(["--mode", "proxy", "--stateless"], "proxy", id="stateless"),
    pytest.param(["--mode", "proxy", "--stateful"], "proxy", id="stateful"),
    pytest.param(["--mode", "redirect"], "redirect", id="redirect"),
]


def _server_args(workdir: Path, mode_args: list[str], auth: bool) -> list[str]:
    users = workdir / "users.txt"
    users.write_text("alice:alice\ncallee:callee\n")
    args = [*mode_args, "--location", "memory", "--db", str(workdir / "leansip.db"), "--realm", "leansip",
            "--users", str(users), "--log-level", "warning"]
    if auth:
        args += ["--auth", "--auth-algorithms", "MD5"]
    return args


def _uac(kind: str, auth: bool, workdir: Path) -> Path:
    return scenario(f"uac-{kind}-auth.xml" if auth else f"uac-{kind}.xml", workdir)


def _caller_auth(srv: ServerProcess, password: str) -> list[str]:
    # -auth_uri: sipp's digest uri defaults to sip:remote_ip:remote_port, not the Request-URI we check against
    return ["-au", "alice", "-ap", password, "-auth_uri", f"callee@{srv.hostport}"]


def _register_callee(srv: ServerProcess, uas: SippServer, workdir: Path, auth: bool) -> None:
    creds = ["-au", "callee", "-ap", "callee"] if auth else []
    if auth and ":" in srv.host:  # sipp 3.6 writes the default digest uri unbracketed (sip:::1:P) over IPv6
        creds += ["-auth_uri", srv.hostport]
    reg = run_sipp(srv.port, scenario("proxy-register.xml", workdir), workdir,
                   ["-m", "1", "-s", "callee", "-key", "callee_port", str(uas.port), *creds], name="register",
                   timeout=20, host=srv.host)
    assert reg.returncode == 0 and reg.count("SuccessfulCall") == 1, f"{reg}\n{srv.output()}"


#: every mode and auth through the event loop (with auth over IPv6 too), and each mode once more through
#: --bare's polling loop (the stateful proxy with auth through one that also sleeps: its timers cross the
#: hand-over)
CALL_RUNS = [
    *[pytest.param(*combo.values, auth, host, "loop", id=f"{combo.id}-{name}")
      for auth, host, name in ((False, "127.0.0.1", "noauth"), (True, "127.0.0.1", "auth"), (True, "::1", "auth-ipv6"))
      for combo in COMBOS],
    pytest.param(*COMBOS[0].values, False, "127.0.0.1", "bare", id="stateless-noauth-bare"),
    pytest.param(*COMBOS[1].values, False, "127.0.0.1", "bare", id="stateful-noauth-bare"),
    pytest.param(*COMBOS[1].values, True, "127.0.0.1", "bare-spin", id="stateful-auth-bare-spin"),
    pytest.param(*COMBOS[2].values, False, "127.0.0.1", "bare", id="redirect-noauth-bare"),
]


@pytest.mark.parametrize(("mode_args", "kind", "auth", "host", "serving"), CALL_RUNS)
def test_calls_through_leansip(tmp_path: Path, mode_args: list[str], kind: str, auth: bool, host: str,
                               serving: str) -> None:
    """``host`` ``::1``: everything over IPv6 loopback (the server knows ``[::1]:P`` as itself in the
    Request-URI, our Route and our Via)."""
    require_program("sipp")
    args = [*_server_args(tmp_path, mode_args, auth), *SERVING[serving]]
    with ServerProcess(args, workdir=tmp_path, host=host) as srv:
        with SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, srv.port, host=host) as uas:
            _register_callee(srv, uas, tmp_path, auth)
            creds = _caller_auth(srv, "alice") if auth else []
            result = run_sipp(srv.port, _uac(kind, auth, tmp_path), tmp_path,
                              ["-m", str(CALLS), "-r", "100", "-s", "callee", "-key", "caller", "alice", *creds],
                              name="uac", host=host)
            assert result.count("SuccessfulCall") == CALLS, f"{result}\n{srv.output()}"
            assert result.count("FailedCall") == 0 and result.returncode == 0, result
        assert srv.alive(), srv.output()


@pytest.mark.parametrize(("mode_args", "kind"), COMBOS)
def test_wrong_password_gets_no_call_through(tmp_path: Path, mode_args: list[str], kind: str) -> None:
    require_program("sipp")
    # no slow-down here (every wrong attempt is answered 407 at once, so the run ends quickly); the limits are
    # set high rather than 0 because FailureLimiter rejects the documented "0 = never"
    args = [*_server_args(tmp_path, mode_args, True), "--fail-slow-after", "1000", "--fail-block-after", "1000"]
    with ServerProcess(args, workdir=tmp_path) as srv:
        with SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, srv.port) as uas:
            _register_callee(srv, uas, tmp_path, True)
            result = run_sipp(srv.port, _uac(kind, True, tmp_path), tmp_path,
                              ["-m", "20", "-r", "100", "-s", "callee", "-key", "caller", "alice",
                               *_caller_auth(srv, "not-alice")], name="uac-wrong", timeout=40)
            assert result.count("SuccessfulCall") == 0, result
            assert result.count("FailedCall") == 20 and result.returncode != 0, result
            assert uas.received("INVITE") == 0
