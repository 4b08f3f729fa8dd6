"""/metrics: valid Prometheus text that the official parser reads, with counters that move with SIP traffic."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_udp_port, require_program
from tests.integration.admin_server import Server, run_server, sipp_register

pytestmark = pytest.mark.timeout(120)


def _scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from one scrape."""
    code, text = server.request("GET", "/metrics")
    assert code == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_parse_and_move_with_traffic(tmp_path: Path) -> None:
    sipp = require_program("sipp")
    with run_server(tmp_path) as server:
        before = _scrape(server)
        for name in ("leansip_auth_failures_total", "leansip_blocked_total", "leansip_users", "leansip_bindings",
                     "leansip_transactions", "leansip_connections"):
            assert name in before, name
        assert before["leansip_users"][()] == 3
        assert before["leansip_bindings"][()] == 0
        assert before.get("leansip_requests_total", {}) == {}
        counts = before["leansip_step_seconds_count"]
        assert {dict(k)["flow"] for k in counts} == {"register", "invite"}
        assert {dict(k)["step"] for k in counts} == {"parse", "auth", "location", "build", "send", "total"}

        sipp_register(sipp, server, tmp_path, ["user0", "user1", "user2"], local_port=free_udp_port())
        after = _scrape(server)
        assert after["leansip_requests_total"][(("method", "REGISTER"),)] >= 3
        assert after["leansip_responses_total"][(("class", "2xx"),)] >= 3
        assert after["leansip_bindings"][()] == 3
        total = (("flow", "register"), ("step", "total"))
        assert after["leansip_step_seconds_count"][total] >= 3
        assert after["leansip_step_seconds_sum"][total] > 0
        buckets = {dict(k)["le"]: v for k, v in after["leansip_step_seconds_bucket"].items()
                   if dict(k)["flow"] == "register" and dict(k)["step"] == "total"}
        assert buckets["+Inf"] == after["leansip_step_seconds_count"][total]
        ordered = [v for _le, v in sorted(((float(le), v) for le, v in buckets.items()))]
        assert ordered == sorted(ordered)  # cumulative
        assert after["leansip_step_seconds_count"][(("flow", "invite"), ("step", "total"))] == 0

        # an unparseable datagram is dropped and counted; the scrape shows it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"not sip at all\r\n\r\n", ("127.0.0.1", server.sip_port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            dropped = _scrape(server).get("leansip_dropped_total", {})
            if sum(dropped.values()) >= 1:
                break
            time.sleep(0.05)
        assert sum(dropped.values()) >= 1
