"""The phone's keep-alive schedule (RFC 5626 4.4.1) with a fake clock: jittered intervals, pong deadline."""

from __future__ import annotations

import random

import pytest

from leansip.ua.phone import DEFAULT_KEEPALIVE, PONG_TIMEOUT, KeepAlive


def run(ka: KeepAlive, until: float, *, answer: bool = True) -> list[tuple[float, str]]:
    """Drive ``ka`` from deadline to deadline; answer each ping at once when ``answer``."""
    log: list[tuple[float, str]] = []
    while (now := ka.next_deadline()) <= until:
        for action in ka.poll(now):
            log.append((now, action))
            if action == "ping" and answer:
                ka.pong()
    return log


def test_defaults_per_transport() -> None:
    assert DEFAULT_KEEPALIVE["udp"] == 25.0
    assert DEFAULT_KEEPALIVE["tcp"] == DEFAULT_KEEPALIVE["tls"] == 120.0
    assert PONG_TIMEOUT == 10.0


def test_udp_pings_every_80_to_100_percent_of_the_interval() -> None:
    ka = KeepAlive(25.0, now=0.0, expect_pong=False, rng=random.Random(5))
    log = run(ka, 1000.0, answer=False)
    times = [t for t, a in log if a == "ping"]
    assert all(a == "ping" for _t, a in log)  # no pong expected over UDP: never "failed"
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(20.0 <= g <= 25.0 for g in gaps), gaps
    assert len(set(round(g, 3) for g in gaps)) > 5  # really randomised, not a fixed 20 or 25
    assert ka.sent == len(times)


def test_no_ping_before_due() -> None:
    ka = KeepAlive(25.0, now=100.0, expect_pong=False, rng=random.Random(1))
    assert ka.poll(100.0 + 19.99) == []
    assert ka.next_deadline() >= 120.0


def test_stream_pong_in_time_keeps_the_flow() -> None:
    ka = KeepAlive(120.0, now=0.0, expect_pong=True, rng=random.Random(2))
    log = run(ka, 2000.0, answer=True)
    assert log and all(a == "ping" for _t, a in log)
    assert ka.failures == 0


def test_stream_missing_pong_fails_after_10_s() -> None:
    ka = KeepAlive(120.0, now=0.0, expect_pong=True, rng=random.Random(3))
    first = ka.next_deadline()
    assert ka.poll(first) == ["ping"]
    assert ka.next_deadline() == pytest.approx(first + PONG_TIMEOUT)
    assert ka.poll(first + PONG_TIMEOUT - 0.01) == []
    assert ka.poll(first + PONG_TIMEOUT) == ["failed"]
    assert ka.failures == 1
    ka.restart(first + 11.0)  # the phone opened a new flow
    assert ka.pong_due is None
    assert first + 11.0 + 96.0 <= ka.next_deadline() <= first + 11.0 + 120.0


def test_pings_keep_their_schedule_while_a_pong_is_outstanding() -> None:
    ka = KeepAlive(1.0, now=0.0, expect_pong=True, pong_timeout=10.0, rng=random.Random(4))
    ka.poll(ka.next_deadline())
    # pings keep their schedule while a pong is outstanding, without stacking deadlines
    t = ka.next_deadline()
    assert ka.poll(t) == ["ping"]
    assert ka.pong_due is not None and ka.pong_due < t + 10.0


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        KeepAlive(0.0, now=0.0, expect_pong=False)
