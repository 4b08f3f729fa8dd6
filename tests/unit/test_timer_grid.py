"""The server shell fires transaction timers on a grid (T1/25, at most 20 ms): timers due within one step share
a wake-up, and none fires before its deadline."""

from __future__ import annotations

import asyncio
import time

from leansip.app.config import Config
from leansip.app.serve import Runtime


class _Timers:
    """A core with only what Runtime's timer code calls: deadlines given by the test, every firing recorded."""

    def __init__(self, deadlines: list[float]) -> None:
        self.pending = sorted(deadlines)
        self.fired: list[tuple[float, float]] = []  # (deadline, time it fired)
        self.wakeups = 0

    def next_deadline(self) -> float | None:
        return self.pending[0] if self.pending else None

    def handle_timers(self, now: float) -> list[object]:
        self.wakeups += 1
        while self.pending and self.pending[0] <= now:
            self.fired.append((self.pending.pop(0), now))
        return []


def _run(config: Config, deadlines_from_now: list[float], wait: float) -> tuple[_Timers, float]:
    async def main() -> tuple[_Timers, float]:
        now = time.time()
        core = _Timers([now + d for d in deadlines_from_now])
        runtime = Runtime(config, core)  # type: ignore[arg-type]
        runtime._arm()
        await asyncio.sleep(wait)
        return core, runtime.timers.step

    return asyncio.run(main())


def test_spread_timers_share_wakeups_and_none_fires_early() -> None:
    # 200 timers 1 ms apart (what a proxy ending ~800 transactions a second has): 20 ms steps, ~10 wake-ups
    core, step = _run(Config(), [0.05 + i * 0.001 for i in range(200)], 0.6)
    assert step == 0.02
    assert len(core.fired) == 200 and not core.pending
    assert all(fired_at >= deadline for deadline, fired_at in core.fired)
    assert core.wakeups <= 15  # one per grid step (10 steps cover 200 ms), a few more if the machine stalls
    assert max(fired_at - deadline for deadline, fired_at in core.fired) < 0.5  # late by a step, not more


def test_the_step_follows_a_small_t1() -> None:
    """Tests and LANs with a short T1 get a proportionally finer grid (T1/25)."""
    core, step = _run(Config(t1=0.05), [0.01, 0.011, 0.05], 0.2)
    assert step == 0.002
    assert [d for d, _ in core.fired] == sorted(d for d, _ in core.fired) and len(core.fired) == 3
    assert all(fired_at >= deadline for deadline, fired_at in core.fired)
