#!/usr/bin/env python3
"""PNG plots of a bench run: throughput and latency against offered load, leansip (and leansip --bare) vs
Kamailio, and leansip's own handler time against the latency its clients saw.

    python3 bench/plot.py bench/results/<date>      -> <dir>/throughput.png, latency.png, handler.png

Reads the RESULT lines of every <server>-<scenario>/results.txt (bench/harness.sh output).  matplotlib is needed
(bench/bench.py pip-installs it when missing; it is not a leansip dependency).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

SCENS = ["register", "register-auth", "stateless", "stateful", "stateful-script"]
TITLES = {"register": "REGISTER (no auth)", "register-auth": "REGISTER + digest (MD5)",
          "stateless": "stateless proxy call", "stateful": "stateful proxy call",
          "stateful-script": "stateful call, route script (leansip)"}
COLORS = {"kamailio": "tab:blue", "leansip": "tab:orange", "bare": "tab:green"}
#: the servers of a run, in the order of the tables (`bare` is `leansip serve --bare`)
SERVERS = ("kamailio", "leansip", "bare")
SERVER_NAMES = {"kamailio": "Kamailio", "leansip": "leansip", "bare": "leansip --bare"}


def results(outdir: Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    """(server, scenario) -> RESULT lines as dicts; sipp RTT percentiles under rtt{N}_p50/p99 (ms)."""
    rows: dict[tuple[str, str], list[dict[str, str]]] = {}
    for f in sorted(outdir.glob("*-*/results.txt")):
        server, _, scen = f.parent.name.partition("-")
        for line in f.read_text().splitlines():
            if not line.startswith("RESULT"):
                continue
            head = line.split(" rtd=", 1)[0]
            kv = dict(re.findall(r"(\w+)=(\S+)", head))
            for rtd, p50, p99 in re.findall(r"rtd=(\d+) n=\d+ p50_ms=(\S+) p90_ms=\S+ p99_ms=(\S+)", line):
                kv[f"rtt{rtd}_p50"], kv[f"rtt{rtd}_p99"] = p50, p99
            rows.setdefault((server, scen), []).append(kv)
    return rows


def _frame(ax: Any, scen: str, ylabel: str, *, yscale: str = "log", legend: int = 7, **yargs: float) -> None:
    """The axes every panel shares: log offered rate, the scenario's title, a grid and a legend."""
    ax.set_xscale("log")
    ax.set_yscale(yscale, **yargs)
    ax.set_title(TITLES[scen])
    ax.set_xlabel("offered rate (/s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend)


def _save(fig: Any, plt: Any, outdir: Path, name: str, title: str, fontsize: int | None = None) -> Path:
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    p = outdir / f"{name}.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p


def make_plots(outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results(outdir)
    made: list[Path] = []
    # throughput: achieved vs offered, every ladder/bisection step; hollow markers = failed step
    fig, axes = _panels(plt)
    for ax, scen in zip(axes, SCENS, strict=True):
        top = 100.0
        for server in SERVERS:
            steps = sorted((r for r in rows.get((server, scen), []) if r.get("kind") == "step"),
                           key=lambda r: int(r["rate"]))
            if not steps:
                continue
            x = [int(r["rate"]) for r in steps]
            y = [int(r["achieved"]) for r in steps]
            top = max(top, *x)
            ax.plot(x, y, "-", color=COLORS[server], alpha=0.6)
            for xi, yi, r in zip(x, y, steps, strict=True):
                ax.plot(xi, yi, "o", color=COLORS[server], mfc=COLORS[server] if r["pass"] == "1" else "none")
            ax.plot([], [], "o-", color=COLORS[server], label=SERVER_NAMES[server])
            mx = next((int(r["max_rate"]) for r in rows[(server, scen)] if r.get("kind") == "max"), 0)
            if mx:
                ax.axvline(mx, color=COLORS[server], ls=":", lw=1)
        ax.plot([50, top], [50, top], "k--", lw=0.7, label="achieved = offered")
        _frame(ax, scen, "completed /s (0 failures: filled)", legend=8)
    made.append(_save(fig, plt, outdir, "throughput", "Throughput vs offered load (SIPp on core 0, server on core 1; "
                      "dotted = max zero-failure rate)"))

    # latency: sipp RTT (ms, coarse clock) per ladder step + latprobe p50/p99 at LAT_RATE (us resolution)
    fig, axes = _panels(plt)
    for ax, scen in zip(axes, SCENS, strict=True):
        for server in SERVERS:
            steps = sorted((r for r in rows.get((server, scen), []) if r.get("kind") == "step" and "rtt1_p50" in r),
                           key=lambda r: int(r["rate"]))
            c = COLORS[server]
            if steps:
                x = [int(r["rate"]) for r in steps]
                ax.plot(x, [float(r["rtt1_p50"]) for r in steps], "o-", color=c, label=f"{server} sipp p50")
                ax.plot(x, [float(r["rtt1_p99"]) for r in steps], "s--", color=c, alpha=0.6,
                        label=f"{server} sipp p99")
            pr = next((r for r in rows.get((server, scen), []) if r.get("kind") == "latency_probe"), None)
            if pr:
                k = next((k[:-7] for k in pr if k.endswith("_p50_us")), None)
                if k:
                    rate = float(pr.get("rate", 500))
                    ax.plot([rate], [float(pr[f"{k}_p50_us"]) / 1000], "*", ms=13, color=c,
                            label=f"{server} probe p50 ({k})")
                    ax.plot([rate], [float(pr[f"{k}_p99_us"]) / 1000], "^", ms=9, color=c,
                            label=f"{server} probe p99")
        _frame(ax, scen, "latency (ms)", yscale="symlog", linthresh=1)
    made.append(_save(fig, plt, outdir, "latency", "Latency vs offered load: SIPp RTT per ladder step (ms clock, "
                      "~4 ms steps) and the us probe at its rate", 10))
    p = handler_plot(outdir, rows, plt)
    if p is not None:
        made.append(p)
    return made


def _panels(plt: Any) -> tuple[Any, list[Any]]:
    """A figure with one panel per scenario (SCENS), in rows of three; the unused places hidden."""
    rows = (len(SCENS) + 2) // 3
    fig, grid = plt.subplots(rows, 3, figsize=(16, 4 * rows))
    for ax in grid.flat[len(SCENS):]:
        ax.set_visible(False)
    return fig, list(grid.flat[:len(SCENS)])


def handler_plot(outdir: Path, rows: dict[tuple[str, str], list[dict[str, str]]], plt: Any) -> Path | None:
    """The seed paper's figure: handler time against total processing time as the offered load rises. Handler
    time = leansip's own mean, per ladder step, of the scenario's timed request (datagram in -> reply sent: the
    `total` step timing, `handler_us`); total = the latency a client saw in the same step: the low-rate
    latency probe run beside each step (`lp_p50_us`, `lp_p99_us`), for leansip and --bare."""
    fig, axes = _panels(plt)
    drawn = False
    for ax, scen in zip(axes, SCENS, strict=True):
        for server in ("leansip", "bare"):
            steps = sorted((r for r in rows.get((server, scen), []) if r.get("kind") == "step"),
                           key=lambda r: int(r["rate"]))
            c = COLORS[server]
            own = [r for r in steps if "handler_us" in r]
            if own:
                drawn = True
                ax.plot([int(r["rate"]) for r in own], [float(r["handler_us"]) for r in own], "o-", color=c,
                        label=f"{SERVER_NAMES[server]}: handler (inside, mean)")
            seen = [r for r in steps if r.get("lp_p50_us", "nan") != "nan" and "lp_p50_us" in r]
            if seen:
                x = [int(r["rate"]) for r in seen]
                ax.plot(x, [float(r["lp_p50_us"]) for r in seen], "s--", color=c, alpha=0.7,
                        label=f"{SERVER_NAMES[server]}: total (client p50)")
                ax.plot(x, [float(r["lp_p99_us"]) for r in seen], "^:", color=c, alpha=0.5,
                        label=f"{SERVER_NAMES[server]}: total (client p99)")
        _frame(ax, scen, "µs")
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, plt, outdir, "handler", "Handler time (leansip's own step timing, mean per ladder step) "
                 "against the latency a client saw in the same step (low-rate probe beside the load), as the "
                 "offered load rises", 10)


if __name__ == "__main__":
    for path in make_plots(Path(sys.argv[1])):
        print(path)
