"""bench/report.py: latency figures are the median of the probe rounds, read from the harness's RESULT lines."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("report")
    finally:
        sys.path.remove(str(BENCH))


def _write_run(tmp_path: Path, server: str, scen: str, lines: list[str]) -> Path:
    d = tmp_path / f"{server}-{scen}"
    d.mkdir()
    (d / "results.txt").write_text("# header line\n" + "\n".join(lines) + "\n")
    return tmp_path


PROBES = [  # what harness.sh logs for three rounds of `latprobe.py --mode register-auth`
    "RESULT label=leansip scenario=register-auth kind=latency_probe rate=500 round=1 n=5000 ok=5000 fail=0 "
    "achieved=500/s full_p50_us=250 full_p90_us=380 full_p99_us=900 authleg_p50_us=110 authleg_p90_us=160 "
    "authleg_p99_us=400",
    "RESULT label=leansip scenario=register-auth kind=latency_probe rate=500 round=2 n=5000 ok=5000 fail=0 "
    "achieved=500/s full_p50_us=270 full_p90_us=390 full_p99_us=4000 authleg_p50_us=130 authleg_p90_us=170 "
    "authleg_p99_us=2000",
    "RESULT label=leansip scenario=register-auth kind=latency_probe rate=500 round=3 n=5000 ok=5000 fail=0 "
    "achieved=500/s full_p50_us=260 full_p90_us=385 full_p99_us=800 authleg_p50_us=120 authleg_p90_us=150 "
    "authleg_p99_us=500",
]


def test_latency_is_the_median_of_the_rounds(tmp_path: Path, report) -> None:
    rows = report.results(_write_run(tmp_path, "leansip", "register-auth", PROBES))
    fig = report.figures(rows[("leansip", "register-auth")])
    # one disturbed round (p99 4000 µs) moves neither median
    assert (fig["p50"], fig["p99"]) == (260, 900)
    assert (fig["p50b"], fig["p99b"]) == (120, 500)
    assert fig["probe_rounds"] == 3


def test_a_round_that_lost_every_answer_is_left_out(report) -> None:
    rows = [{"kind": "latency_probe", "reg_p50_us": "nan", "reg_p99_us": "nan"},
            {"kind": "latency_probe", "reg_p50_us": "100", "reg_p99_us": "300"},
            {"kind": "latency_probe", "reg_p50_us": "120", "reg_p99_us": "500"}]
    assert report.probe_median(rows, "reg_p99_us") == 400
    assert report.probe_median(rows[:1], "reg_p99_us") is None
    assert not math.isnan(report.figures(rows)["p50"])


def test_one_round_as_before(report) -> None:
    """Results of the older harness (one probe, no round field) read as they did."""
    row = {"kind": "latency_probe", "invite_p50_us": "700", "invite_p99_us": "1500", "bye_p50_us": "600",
           "bye_p99_us": "1200"}
    fig = report.figures([row])
    assert (fig["p50"], fig["p99"], fig["p50b"], fig["p99b"]) == (700, 1500, 600, 1200)


def test_rounds_are_listed(tmp_path: Path, report) -> None:
    rows = report.results(_write_run(tmp_path, "leansip", "register-auth", PROBES))
    table = "\n".join(report.probe_rounds_table(rows))
    assert "| REGISTER + digest (MD5) | – | 250 / 900, 270 / 4000, 260 / 800 |" in table
    assert report.probe_rounds_table({}) == []


FIXED = [  # what harness.sh logs for FIXED_ROUNDS=3 (fields cut to what the report reads)
    f"RESULT label=leansip scenario=register-auth kind=fixed rate=1000 m=5000 ok=5000 failed=0 retrans=0 "
    f"server_ns={ns} wall_s=5.0 srv_us_per_call={ns / 5e6:.1f} pass={ok} round={k}"
    for k, ns, ok in ((1, 350_000_000, 1), (2, 615_000_000, 1), (3, 400_000_000, 0))
]


def test_cpu_per_call_is_the_median_of_the_fixed_rounds(tmp_path: Path, report) -> None:
    idle = "RESULT label=leansip scenario=register-auth kind=idle server_ns_per_s=1000000"
    rows = report.results(_write_run(tmp_path, "leansip", "register-auth", [*FIXED, idle]))
    fig = report.figures(rows[("leansip", "register-auth")])
    # one disturbed round (123 µs) does not move the median; idle CPU (1 ms/s over 5 s) is taken off each round
    assert fig["fixed_us"] == 80.0
    assert fig["fixed_net_us"] == pytest.approx(79.0)
    assert fig["fixed_pass"] == 0  # any failed round marks the figure
    table = "\n".join(report.fixed_rounds_table(rows))
    assert "| REGISTER + digest (MD5) | – | 70, 123, 80 |" in table


def test_one_fixed_round_as_before(report) -> None:
    rows = [{"kind": "fixed", "rate": "1000", "ok": "5000", "srv_us_per_call": "36.0", "pass": "1"}]
    fig = report.figures(rows)
    assert (fig["fixed_us"], fig["fixed_pass"], fig["fixed_net_us"]) == (36.0, 1.0, None)
    assert report.fixed_rounds_table({("leansip", "register"): rows}) == []  # one round: nothing to list


def _step(server: str, rate: int, us: float, ok: str = "1", **extra: str) -> str:
    more = "".join(f" {k}={v}" for k, v in extra.items())
    return (f"RESULT label={server} scenario=register kind=step rate={rate} ok={rate * 5} failed=0 retrans=0 "
            f"achieved={rate} server_cpu=50 srv_us_per_call={us} host_busy=60 pass={ok}{more}")


def test_bare_beside_the_normal_mode_and_kamailio(tmp_path: Path, report) -> None:
    """leansip --bare's rows: its latency and max rate against both, and the polling loop's request work (from
    the busy counters the harness adds to its steps) in place of CPU per call."""
    probe = ("RESULT label={s} scenario=register kind=latency_probe rate=500 round=1 reg_p50_us={p50} "
             "reg_p90_us=1 reg_p99_us={p99}")
    runs = {
        "kamailio": [probe.format(s="kamailio", p50=260, p99=640), _step("kamailio", 1000, 40.0),
                     _step("kamailio", 4000, 15.0), "RESULT label=kamailio scenario=register kind=max max_rate=4000"],
        "leansip": [probe.format(s="leansip", p50=330, p99=900), _step("leansip", 1000, 80.0),
                    _step("leansip", 4000, 45.0, "0"), "RESULT label=leansip scenario=register kind=max max_rate=1000"],
        "bare": [probe.format(s="bare", p50=90, p99=300),
                 "RESULT label=bare scenario=register kind=fixed rate=1000 ok=5000 srv_us_per_call=1000 pass=1 "
                 "round=1 busy_frac=0.0150 busy_us_per_call=15.0",
                 _step("bare", 1000, 1000.0, busy_frac="0.0150", busy_us_per_call="15.0"),
                 _step("bare", 4000, 250.0, busy_frac="0.0600", busy_us_per_call="15.0"),
                 "RESULT label=bare scenario=register kind=max max_rate=4000"],
    }
    for server, lines in runs.items():
        _write_run(tmp_path, server, "register", lines)
    rows = report.results(tmp_path)
    bare = "\n".join(report.bare_table(rows))
    assert "| REGISTER (no auth) | latency p50 / p99 (µs) at 500/s | 260 / 640 | 330 / 900 | 90 / 300 | " \
           "0.35× / 0.47× | 0.27× / 0.33× |" in bare
    assert "| | max zero-failure rate (/s) | 4000 | 1000 | 4000 | 1.00× | 4.00× |" in bare
    assert "| | request work µs/call at 1000/s (share of wall) | | | 15 (1.5 %) | | |" in bare
    assert "| | request work µs/call at own max step (share of wall) | | | 15 (6.0 %) | | |" in bare
    rates = "\n".join(report.rates_table(rows))
    assert "| REGISTER (no auth) | 1000/s | 40 | 80 | 2.00× |" in rates
    assert "|  | 4000/s | 15 | 45* | 3.00× |" in rates  # leansip's 4,000/s step failed
    assert "|  | own max (4000 / 1000/s) | 15 | 80 | 5.33× |" in rates
    assert report.bare_table({k: v for k, v in rows.items() if k[0] != "bare"}) == []


def _fixed(scen: str, us: int, k: int) -> str:
    return (f"RESULT label=leansip scenario={scen} kind=fixed rate=200 round={k} n=1000 ok=1000 failed=0 pass=1 "
            f"server_ns={us * 1000 * 1000} wall_s=5.0 srv_us_per_call={us}")


def test_call_tracking_cost_is_the_median_against_the_no_calls_run(tmp_path: Path, report) -> None:
    _write_run(tmp_path, "leansip", "stateful", [_fixed("call", us, k) for k, us in enumerate((560, 530, 900))])
    _write_run(tmp_path, "leansip", "stateful-nocalls", [_fixed("call", us, k) for k, us in enumerate((500, 510, 505))])
    text = "\n".join(report.calls_cost(report.results(tmp_path)))
    assert "**560 against 505 CPU µs per call, +10.9 %**" in text
    assert "with 560, 530, 900; without 500, 510, 505" in text


def test_no_call_tracking_section_without_both_runs(tmp_path: Path, report) -> None:
    _write_run(tmp_path, "leansip", "stateful", [_fixed("call", 560, 1)])
    assert report.calls_cost(report.results(tmp_path)) == []
