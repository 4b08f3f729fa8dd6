"""The server shell fires transaction timers on a grid (T1/25, at most 20 ms): timers due within one step share
a wake-up, and none fires before its deadline.

The grid runs on a real asyncio event loop whose clock is virtual: when the loop would wait, its selector moves
the clock to the end of the wait instead (no sleep, no real time passes), so every firing time is exact and the
assertions are equalities, not allowances for a loaded machine.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable

from leansip.app.config import Config
from leansip.app.serve import Runtime
from leansip.io.udpserver import TimerGrid
from leansip.sip.txstate import on_grid

START = 1_700_000_000.0  # a wall-clock-sized time, as the core sees (time.time())


class _Timers:
    """A core with only what the grid calls: deadlines given by the test, every firing recorded."""

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


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector whose waits take no time: a wait of ``timeout`` seconds advances the virtual clock by that."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise AssertionError("the loop would wait forever: nothing armed")
        self.now += max(0.0, timeout)
        return super().select(0)


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.selector = _VirtualSelector()
        super().__init__(self.selector)

    def time(self) -> float:
        return self.selector.now


def _run(step: float, deadlines_from_start: list[float], until: float) -> _Timers:
    """Arm a grid of ``step`` over deadlines at START + each offset, run the loop for ``until`` virtual seconds."""
    loop = _VirtualLoop()
    clock: Callable[[], float] = lambda: START + loop.time()  # noqa: E731
    core = _Timers([START + d for d in deadlines_from_start])
    grid: TimerGrid

    def fire() -> None:  # what Runtime._fire does, on the virtual clock
        grid.fired()
        core.handle_timers(clock())
        grid.arm()

    grid = TimerGrid(core, fire, step, clock=clock)

    async def main() -> None:
        grid.arm()
        await asyncio.sleep(until)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return core


def test_spread_timers_share_wakeups_and_none_fires_early() -> None:
    # 200 timers 1 ms apart (what a proxy ending ~800 transactions a second has): 20 ms steps
    deadlines = [0.05 + i * 0.001 for i in range(200)]
    core = _run(0.02, deadlines, 0.6)
    assert len(core.fired) == 200 and not core.pending
    assert all(fired_at >= deadline for deadline, fired_at in core.fired)
    slots = {on_grid(START + d, 0.02) for d in deadlines}
    assert core.wakeups == len(slots) == 11  # one wake-up per grid step that has a timer, no more
    assert all(fired_at - on_grid(deadline, 0.02) < 1e-6 for deadline, fired_at in core.fired)  # on its step


def test_the_step_follows_a_small_t1() -> None:
    """Tests and LANs with a short T1 get a proportionally finer grid (T1/25)."""
    assert Runtime(Config(), _Timers([])).timers.step == 0.02  # type: ignore[arg-type]
    assert Runtime(Config(t1=0.05), _Timers([])).timers.step == 0.002  # type: ignore[arg-type]
    core = _run(0.002, [0.01, 0.011, 0.05], 0.2)
    assert [d for d, _ in core.fired] == sorted(d for d, _ in core.fired) and len(core.fired) == 3
    assert all(fired_at >= deadline for deadline, fired_at in core.fired)
    assert core.wakeups == 3  # three timers on three different steps of 2 ms


def test_an_earlier_deadline_rearms_the_grid() -> None:
    """A timer added before the armed one (a new transaction) moves the wake-up earlier, never later."""
    loop = _VirtualLoop()
    clock: Callable[[], float] = lambda: START + loop.time()  # noqa: E731
    core = _Timers([START + 0.5])
    grid: TimerGrid

    def fire() -> None:
        grid.fired()
        core.handle_timers(clock())
        grid.arm()

    grid = TimerGrid(core, fire, 0.02, clock=clock)

    async def main() -> None:
        grid.arm()
        await asyncio.sleep(0.1)
        core.pending.insert(0, START + 0.15)
        grid.arm()
        await asyncio.sleep(0.5)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert [round(d - START, 3) for d, _ in core.fired] == [0.15, 0.5]
    assert core.wakeups == 2
