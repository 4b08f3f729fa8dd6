"""A gateway set of two SIPp UASs behind ``leansip serve``, with the config alone routing a number prefix to it.

300 calls at a steady rate; the first gateway is killed a third of the way in and restarted once the probes
have marked it down. No call fails: the INVITEs it does not answer fail over to the other gateway within their
transaction (after the set's ``timeout``), the probes take it out of rotation (``down_after`` failed OPTIONS)
and back in after the restart (``up_after`` answered ones), and the calls after that reach it again. What the
test asserts comes from the proxy's own records (every call attempt answered, who answered it) and from
``/api/gateways``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.conftest import require_program
from tests.integration.admin_server import run_server
from tests.integration.sipp_kit import SippResult, SippServer, run_sipp, scenario
from tests.integration.test_calls import USERS, wait_until

CALLS = 300
RATE = 20


def _config(tmp: Path, ports: tuple[int, int]) -> Path:
    path = tmp / "gateways.toml"
    path.write_text(f"""\
[gateways.pstn]
policy = "round-robin"
probe_interval = 0.5
probe_timeout = 0.4
down_after = 2
up_after = 2
timeout = 1.0

[[gateways.pstn.destinations]]
address = "127.0.0.1:{ports[0]}"

[[gateways.pstn.destinations]]
address = "127.0.0.1:{ports[1]}"

[[gateway_routes]]
prefix = "+1"
set = "pstn"
""")
    return path


def _state(server: Any, port: int) -> str:
    (gw,) = [g for s in server.get("/api/gateways")["sets"] for g in s["gateways"]
             if g["address"] == f"127.0.0.1:{port}"]
    return str(gw["state"])


def test_a_killed_gateway_fails_over_goes_down_and_comes_back(tmp_path: Path) -> None:
    require_program("sipp")
    uas_xml = scenario("uas-answer.xml", tmp_path)
    first = SippServer(uas_xml, tmp_path, 0, name="gw1", extra=["-aa"])
    second = SippServer(uas_xml, tmp_path, 0, name="gw2", extra=["-aa"])
    config = _config(tmp_path, (first.port, second.port))
    with run_server(tmp_path, "--stateful", "--config", str(config), users=USERS) as server, second, first:
        wait_until(lambda: all(g["last_result"] == "200" for s in server.get("/api/gateways")["sets"]
                               for g in s["gateways"]), "both gateways answering probes")
        outcome: dict[str, SippResult] = {}
        caller = threading.Thread(target=lambda: outcome.setdefault("uac", run_sipp(
            server.sip_port, scenario("uac-gateway.xml", tmp_path), tmp_path,
            ["-m", str(CALLS), "-r", str(RATE), "-s", "+15551234", "-key", "caller", "alice"], name="uac",
            timeout=120)))
        caller.start()
        wait_until(lambda: server.get("/api/cdrs?limit=1")["total"] >= CALLS // 3, "a third of the calls", 60)
        first.kill()
        wait_until(lambda: _state(server, first.port) == "down", "the killed gateway marked down", 15)
        down_at = server.get("/api/cdrs?limit=1")["total"]
        restarted = SippServer(uas_xml, tmp_path, 0, name="gw1-again", extra=["-aa"], port=first.port)
        with restarted:
            wait_until(lambda: _state(server, first.port) == "up", "the restarted gateway marked up", 15)
            up_at = server.get("/api/cdrs?limit=1")["total"]
            caller.join(150)
            assert not caller.is_alive()
        result = outcome["uac"]
        assert result.count("SuccessfulCall") == CALLS and result.count("FailedCall") == 0, result
        wait_until(lambda: server.get("/api/cdrs?limit=1")["total"] == CALLS, "every record")
        records = server.get(f"/api/cdrs?limit={CALLS}")["cdrs"]
        gateways = server.get("/api/gateways")["sets"][0]["gateways"]
        metrics = server.get("/metrics")
    assert down_at < up_at < CALLS, (down_at, up_at)  # the restart happened while calls were still coming
    # zero failed calls: every attempt answered, by one of the two
    assert {r["status"] for r in records} == {200}, [r for r in records if r["status"] != 200][:3]
    answered_by = [r["callee_addr"] for r in sorted(records, key=lambda r: r["start"])]
    assert set(answered_by) == {f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"}
    # the restarted gateway took calls again after it came back up
    assert f"127.0.0.1:{first.port}" in answered_by[up_at:], answered_by[up_at:]
    failed_over = {g["address"]: g["failed_over"] for g in gateways}
    assert failed_over[f"127.0.0.1:{first.port}"] >= 1, gateways
    assert f'leansip_gateway_up{{gateway="127.0.0.1:{first.port}",set="pstn",transport="udp"}} 1.0' in metrics


def test_every_gateway_down_is_an_immediate_503(tmp_path: Path) -> None:
    require_program("sipp")
    config = _config(tmp_path, (1, 2))  # nothing listens on ports 1 and 2
    with run_server(tmp_path, "--stateful", "--config", str(config), users=USERS) as server:
        wait_until(lambda: {g["state"] for s in server.get("/api/gateways")["sets"] for g in s["gateways"]}
                   == {"down"}, "both gateways down")
        result = run_sipp(server.sip_port, scenario("uac-gateway.xml", tmp_path), tmp_path,
                          ["-m", "1", "-s", "+15551234", "-key", "caller", "alice"], name="uac", timeout=20)
        assert result.count("FailedCall") == 1
        (record,) = wait_until(lambda: server.get("/api/cdrs")["cdrs"], "the record")
        assert (record["status"], record["end_reason"]) == (503, "rejected"), record
