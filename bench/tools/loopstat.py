#!/usr/bin/env python3
"""leansip's own counters around one benchmark step, read from its admin endpoint (GET /api/timings).

    loopstat.py snap URL FLOW              -> one line of cumulative counters (give it back to `diff`)
    loopstat.py diff URL FLOW "SNAP" OK    -> key=value figures of the step since SNAP, OK completed calls

FLOW is the step-timing flow the scenario's first request is timed in (register or invite). Figures:
  handler_us                    mean internal time of the flow's requests in the step: datagram in -> reply
                                sent (the `total` step of leansip.server.timing), from the cumulative means
                                and counts (a percentile cannot be differenced through this API)
  handler_n                     requests of the flow timed in the step
  busy_frac, busy_us_per_call   `serve --bare` only: the polling loop's busy seconds (serving datagrams and
                                timers, not the spin) over its wall seconds in the step, and per completed call
Prints nothing it cannot read (the step's RESULT line then lacks the keys). Standard library only.
"""

from __future__ import annotations

import json
import sys
import urllib.request


def counters(url: str, flow: str) -> dict[str, float]:
    with urllib.request.urlopen(url.rstrip("/") + "/api/timings", timeout=3) as resp:
        data = json.loads(resp.read())
    out: dict[str, float] = {}
    total = ((data.get("flows") or {}).get(flow) or {}).get("total") or {}
    n = float(total.get("count") or 0)
    out["n"] = n
    out["sum_us"] = n * float(total.get("mean_us") or 0.0)
    loop = data.get("loop") or {}
    if loop.get("mode") == "bare":
        out["busy_s"] = float(loop["busy_seconds"])
        out["wall_s"] = float(loop["wall_seconds"])
    return out


def main(argv: list[str]) -> int:
    try:
        now = counters(argv[1], argv[2])
    except (OSError, ValueError, KeyError, IndexError):
        return 0
    if argv[0] == "snap":
        print(" ".join(f"{k}={v!r}" for k, v in now.items()))
        return 0
    before = {k: float(v) for k, v in (kv.split("=", 1) for kv in argv[3].split())}
    ok = max(1, int(argv[4]))
    figures: list[str] = []
    dn = now["n"] - before.get("n", 0.0)
    if dn > 0:
        figures.append(f"handler_us={(now['sum_us'] - before.get('sum_us', 0.0)) / dn:.1f} handler_n={dn:.0f}")
    if "busy_s" in now and "busy_s" in before:
        busy = now["busy_s"] - before["busy_s"]
        wall = now["wall_s"] - before["wall_s"]
        if wall > 0:
            figures.append(f"busy_frac={busy / wall:.4f} busy_us_per_call={busy * 1e6 / ok:.1f}")
    print(" ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
