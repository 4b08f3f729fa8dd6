"""``leansip bench``: the leansip vs Kamailio benchmark, the same run as ``make bench``.

The benchmark lives in the source tree (``bench/bench.py``: SIPp harness, Kamailio configs, report and plots),
not in the installed package, because it needs the checkout's ``bench/`` files and writes ``BENCHMARKS.md``
there.  This module finds that directory and runs it with the current interpreter, passing argv untouched
(``leansip bench --help`` shows its options; ``--quick`` or ``QUICK=1`` for a ~3 minute smoke run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def find_bench_dir() -> Path | None:
    """The checkout's ``bench/`` directory: ``$LEANSIP_BENCH_DIR``, next to the package, or below the cwd."""
    env = os.environ.get("LEANSIP_BENCH_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "bench", Path.cwd() / "bench"]
    for c in candidates:
        if (c / "bench.py").is_file() and (c / "harness.sh").is_file():
            return c
    return None


def main(argv: list[str]) -> int:
    """Run ``bench/bench.py`` with ``argv``; returns its exit status (2 when no checkout is found)."""
    bench_dir = find_bench_dir()
    if bench_dir is None:
        print("leansip: error: bench/ not found: run `leansip bench` from a leansip source checkout "
              "(or set LEANSIP_BENCH_DIR)", file=sys.stderr)
        return 2
    try:
        return subprocess.call([sys.executable, str(bench_dir / "bench.py"), *argv], cwd=str(bench_dir.parent))
    except KeyboardInterrupt:
        return 130
