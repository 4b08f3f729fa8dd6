"""Tests for leansip.sip.ratelimit.FailureLimiter: thresholds, window, block, memory bound."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.ratelimit import Decision, DecisionKind, FailureLimiter

A = "192.0.2.1"
B = "198.51.100.7"
T0 = 1000.0


def fail_n(lim: FailureLimiter, src: str, n: int, start: float, step: float = 0.1) -> Decision:
    d = Decision(kind=DecisionKind.ALLOW)
    for i in range(n):
        d = lim.record_failure(src, start + i * step)
    return d


def test_allow_below_slow_threshold() -> None:
    lim = FailureLimiter(threshold_slow=5, threshold_block=20)
    assert lim.check(A, T0).kind is DecisionKind.ALLOW
    assert len(lim) == 0  # checking an unknown source stores nothing
    assert fail_n(lim, A, 4, T0).kind is DecisionKind.ALLOW
    assert lim.check(A, T0 + 1).kind is DecisionKind.ALLOW


def test_delay_increases_then_caps() -> None:
    lim = FailureLimiter(threshold_slow=5, threshold_block=20, delay_base=0.5, delay_max=4.0)
    d = fail_n(lim, A, 5, T0)
    assert d == Decision(kind=DecisionKind.DELAY, delay=0.5)
    assert lim.check(A, T0 + 1) == Decision(kind=DecisionKind.DELAY, delay=0.5)
    assert lim.record_failure(A, T0 + 1).delay == 1.0
    assert lim.record_failure(A, T0 + 1).delay == 2.0
    assert lim.record_failure(A, T0 + 1).delay == 4.0
    assert lim.record_failure(A, T0 + 1).delay == 4.0  # capped


def test_other_sources_unaffected() -> None:
    lim = FailureLimiter(threshold_slow=2, threshold_block=3)
    fail_n(lim, A, 3, T0)
    assert lim.check(A, T0 + 1).kind is DecisionKind.BLOCK
    assert lim.check(B, T0 + 1).kind is DecisionKind.ALLOW
    assert lim.record_failure(B, T0 + 1).kind is DecisionKind.ALLOW


def test_failures_outside_window_forgotten() -> None:
    lim = FailureLimiter(threshold_slow=3, threshold_block=10, window=60)
    fail_n(lim, A, 3, T0, step=0)
    assert lim.check(A, T0 + 59.9).kind is DecisionKind.DELAY
    assert lim.check(A, T0 + 60).kind is DecisionKind.ALLOW  # window is (now - 60, now]
    assert len(lim) == 0  # and the idle entry is gone
    # Sliding: 2 old + 1 new inside a window does not reach 3.
    lim.record_failure(A, T0)
    lim.record_failure(A, T0 + 30)
    assert lim.record_failure(A, T0 + 61).kind is DecisionKind.ALLOW
    assert lim.record_failure(A, T0 + 62).kind is DecisionKind.DELAY


def test_block_then_unblock_after_block_for() -> None:
    lim = FailureLimiter(threshold_slow=5, threshold_block=20, window=60, block_for=300)
    d = fail_n(lim, A, 19, T0, step=1)
    assert d.kind is DecisionKind.DELAY
    d = lim.record_failure(A, T0 + 20)
    assert d == Decision(kind=DecisionKind.BLOCK, until=T0 + 320)
    assert lim.check(A, T0 + 319.9) == Decision(kind=DecisionKind.BLOCK, until=T0 + 320)
    # Failures while blocked do not extend the block.
    assert lim.record_failure(A, T0 + 100).until == T0 + 320
    assert lim.check(A, T0 + 320).kind is DecisionKind.ALLOW
    assert len(lim) == 0
    # After the block the count starts from zero.
    assert fail_n(lim, A, 4, T0 + 321).kind is DecisionKind.ALLOW


def test_success_forgets_failures_but_not_block() -> None:
    lim = FailureLimiter(threshold_slow=2, threshold_block=4, block_for=50)
    fail_n(lim, A, 3, T0)
    assert lim.check(A, T0 + 1).kind is DecisionKind.DELAY
    lim.record_success(A, T0 + 1)
    assert lim.check(A, T0 + 1).kind is DecisionKind.ALLOW
    assert len(lim) == 0
    lim.record_success(B, T0)  # unknown source: no-op
    assert len(lim) == 0
    fail_n(lim, A, 4, T0 + 2)
    lim.record_success(A, T0 + 3)
    assert lim.check(A, T0 + 3).kind is DecisionKind.BLOCK


def test_bounded_memory_evicts_least_recent() -> None:
    lim = FailureLimiter(threshold_slow=1, threshold_block=5, max_sources=3)
    for i in range(10):
        lim.record_failure(f"10.0.0.{i}", T0 + i)
    assert len(lim) == 3
    assert lim.check("10.0.0.0", T0 + 11).kind is DecisionKind.ALLOW  # evicted
    assert lim.check("10.0.0.9", T0 + 11).kind is DecisionKind.DELAY
    # A source that fails again moves to the back and survives the next evictions.
    lim.record_failure("10.0.0.7", T0 + 12)
    lim.record_failure("10.0.0.20", T0 + 13)
    lim.record_failure("10.0.0.21", T0 + 14)
    assert lim.check("10.0.0.7", T0 + 15).kind is DecisionKind.DELAY
    assert lim.check("10.0.0.8", T0 + 15).kind is DecisionKind.ALLOW


def test_purge_and_next_deadline() -> None:
    lim = FailureLimiter(threshold_slow=5, threshold_block=2, window=10, block_for=100)
    assert lim.next_deadline() == math.inf
    lim.record_failure(A, T0)
    lim.record_failure(B, T0 + 1)
    assert lim.next_deadline() == T0 + 10
    lim.purge(T0 + 5)
    assert len(lim) == 2
    lim.purge(T0 + 10)
    assert len(lim) == 1
    assert lim.next_deadline() == T0 + 11
    lim.record_failure(B, T0 + 2)  # blocks B until T0 + 102
    assert lim.next_deadline() == T0 + 102
    lim.purge(T0 + 50)
    assert len(lim) == 1
    lim.purge(T0 + 102)
    assert len(lim) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold_slow": 0},
        {"threshold_block": 0},
        {"window": 0},
        {"block_for": -1},
        {"max_sources": 0},
        {"delay_base": 0},
        {"delay_base": 2, "delay_max": 1},
    ],
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FailureLimiter(**kwargs)  # type: ignore[arg-type]


def test_decision_invariants() -> None:
    with pytest.raises(ValueError):
        Decision(kind=DecisionKind.DELAY)
    with pytest.raises(ValueError):
        Decision(kind=DecisionKind.ALLOW, delay=1.0)
    with pytest.raises(ValueError):
        Decision(kind=DecisionKind.BLOCK)
    with pytest.raises(ValueError):
        Decision(kind=DecisionKind.ALLOW, until=5.0)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.booleans(), st.floats(0, 5)),
        max_size=60,
    )
)
def test_model_matches_simple_reference(events: list[tuple[str, bool, float]]) -> None:
    """Against a naive model that keeps every failure: same decisions, table within bound."""
    slow, block, window, block_for = 2, 4, 10.0, 20.0
    lim = FailureLimiter(slow, block, window, block_for, max_sources=5)
    failures: dict[str, list[float]] = {}
    blocked: dict[str, float] = {}
    now = 0.0
    for src, failed, dt in events:
        now += dt
        if src in blocked and now >= blocked[src]:
            del blocked[src]
        recent = [t for t in failures.get(src, []) if t > now - window]
        if src in blocked:
            want = Decision(kind=DecisionKind.BLOCK, until=blocked[src])
        elif len(recent) >= slow:
            want = Decision(kind=DecisionKind.DELAY, delay=min(0.5 * 2 ** (len(recent) - slow), 8.0))
        else:
            want = Decision(kind=DecisionKind.ALLOW)
        assert lim.check(src, now) == want
        if failed:
            lim.record_failure(src, now)
            if src not in blocked:
                recent.append(now)
                if len(recent) >= block:
                    blocked[src] = now + block_for
                    recent = []
        else:
            lim.record_success(src, now)
            recent = []
        failures[src] = recent
        assert len(lim) <= 5
