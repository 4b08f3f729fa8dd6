"""Jitter buffer: prefetch, reordering, loss fill, late/duplicate drops, overflow, wrap."""

import pytest

from leansip.media.jitter import JitterBuffer


def f(seq: int) -> bytes:
    return seq.to_bytes(2, "big")


def test_prefetch_then_in_order() -> None:
    jb = JitterBuffer(capacity=5, prefetch=2)
    jb.push(100, f(100))
    assert jb.pop() is None and not jb.playing  # one frame is not enough yet
    jb.push(101, f(101))
    assert jb.pop() == f(100) and jb.playing
    jb.push(102, f(102))
    assert jb.pop() == f(101)
    assert jb.pop() == f(102)
    assert jb.stats.played == 3


def test_reorders() -> None:
    jb = JitterBuffer(capacity=5, prefetch=3)
    for s in (12, 10, 11):
        jb.push(s, f(s))
    assert [jb.pop() for _ in range(3)] == [f(10), f(11), f(12)]


def test_gap_is_filled_with_silence() -> None:
    jb = JitterBuffer(capacity=5, prefetch=2, silence=b"\xff")
    for s in (1, 2, 4):
        jb.push(s, f(s))
    assert [jb.pop() for _ in range(4)] == [f(1), f(2), b"\xff", f(4)]
    assert jb.stats.missing == 1


def test_late_and_duplicate_dropped() -> None:
    jb = JitterBuffer(capacity=5, prefetch=2)
    jb.push(1, f(1))
    jb.push(2, f(2))
    assert jb.push(2, f(2)) is False
    assert jb.pop() == f(1)
    assert jb.push(1, f(1)) is False  # already played
    assert jb.stats.late == 1 and jb.stats.duplicate == 1


def test_missing_frame_arriving_after_its_tick_is_late() -> None:
    jb = JitterBuffer(capacity=5, prefetch=2)
    jb.push(1, f(1))
    jb.push(3, f(3))
    assert jb.pop() == f(1)
    assert jb.pop() is None  # 2 missing at its tick
    assert jb.push(2, f(2)) is False
    assert jb.pop() == f(3)


def test_overflow_moves_window_forward() -> None:
    jb = JitterBuffer(capacity=4, prefetch=1)
    jb.push(1, f(1))
    assert jb.pop() == f(1)  # next due: 2
    for s in (2, 3, 4, 5, 6, 7):
        jb.push(s, f(s))
    # 7 is 5 ahead of 2 with capacity 4: window now 4..7
    assert jb.stats.overflow == 2
    assert [jb.pop() for _ in range(4)] == [f(4), f(5), f(6), f(7)]


def test_underrun_rebuffers_instead_of_skipping() -> None:
    jb = JitterBuffer(capacity=5, prefetch=2)
    jb.push(1, f(1))
    jb.push(2, f(2))
    assert jb.pop() == f(1) and jb.pop() == f(2)
    assert jb.pop() is None and not jb.playing  # dry: re-buffer
    assert jb.pop() is None
    jb.push(3, f(3))  # delayed, not lost: still accepted
    assert jb.pop() is None
    jb.push(4, f(4))
    assert jb.pop() == f(3) and jb.pop() == f(4)
    assert jb.stats.missing == 0 and jb.stats.underrun >= 2


def test_sequence_wrap() -> None:
    jb = JitterBuffer(capacity=5, prefetch=3)
    for s in (65535, 0, 65534):
        jb.push(s, f(s))
    assert [jb.pop() for _ in range(3)] == [f(65534), f(65535), f(0)]
    jb.push(1, f(1))
    assert jb.pop() == f(1)


def test_big_jump_resyncs() -> None:
    jb = JitterBuffer(capacity=5, prefetch=1, resync=100)
    jb.push(10, f(10))
    assert jb.pop() == f(10)
    jb.push(40000, f(40000))  # sender restarted its sequence space
    assert jb.stats.resync == 1
    assert jb.pop() == f(40000)


def test_full_while_buffering_keeps_newest() -> None:
    jb = JitterBuffer(capacity=3, prefetch=3)
    # prefetch == capacity, so playout starts at 3 frames; a 4th before the tick evicts the oldest
    for s in (1, 2, 3, 4):
        jb.push(s, f(s))
    assert jb.push(0, f(0)) is False  # older than the whole window
    assert [jb.pop() for _ in range(3)] == [f(2), f(3), f(4)]
    assert jb.stats.overflow == 2


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(capacity=2, prefetch=3)
