"""StepTimer: bucket maths, flow bookkeeping with a fake clock, and the core's hooks for REGISTER and INVITE."""

from __future__ import annotations

import random

import pytest

from leansip.server import timing as tm
from leansip.server.core import CoreSettings, ServerCore
from leansip.server.location import LocationService
from leansip.server.timing import (
    FLOW_INVITE,
    FLOW_REGISTER,
    STEP_AUTH,
    STEP_BUILD,
    STEP_LOCATION,
    STEP_PARSE,
    STEP_SEND,
    STEP_TOTAL,
    StepTimer,
    bucket_bounds_ns,
    bucket_of,
)


class FakeClock:
    """A clock that advances by the planned amount at each read."""

    def __init__(self, steps: list[int] | None = None, start: int = 1_000_000) -> None:
        self.t = start
        self.steps = list(steps or [])
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        if self.steps:
            self.t += self.steps.pop(0)
        return self.t


def test_bucket_of_matches_bounds_exhaustively_near_edges() -> None:
    bounds = bucket_bounds_ns()
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    rng = random.Random(7)
    samples = [1, 63, 64, 65, 79, 80, 81, 1000, 2**35, 2**35 + 1, 10**12]
    for b in bounds:
        samples += [b - 1, b, b + 1]
    samples += [rng.randrange(1, 2**36) for _ in range(2000)]
    for ns in samples:
        i = bucket_of(ns)
        if i < len(bounds):
            assert ns <= bounds[i], (ns, i)
        else:
            assert ns > bounds[-1]
        if i > 0:
            assert ns > bounds[i - 1], (ns, i)


def test_bucket_resolution_is_quarter_octave() -> None:
    bounds = bucket_bounds_ns()
    ratios = [b / a for a, b in zip(bounds[1:], bounds[2:], strict=False)]
    assert max(ratios) <= 1.25 + 1e-9


def test_register_flow_records_each_step() -> None:
    # reads: datagram_in, begin(+300), auth(+500), location(+700), build(+900), sent(+1100)
    clock = FakeClock([0, 300, 500, 700, 900, 1100])
    t = StepTimer(clock)
    t.datagram_in()
    t.start()  # uses the datagram_in time: no clock read
    t.begin_request("REGISTER", True)
    t.mark(STEP_AUTH)
    t.mark(STEP_LOCATION)
    t.mark(STEP_BUILD)
    t.sent()
    assert clock.reads == 6
    snap = t.snapshot()["register"]
    assert snap["parse"]["count"] == 1
    assert snap["parse"]["max_us"] == 0.3
    assert snap["auth"]["max_us"] == 0.5
    assert snap["location"]["max_us"] == 0.7
    assert snap["build"]["max_us"] == 0.9
    assert snap["send"]["max_us"] == 1.1
    assert snap["total"]["max_us"] == 3.5
    assert t.count(FLOW_INVITE, STEP_TOTAL) == 0


def test_untimed_methods_cost_one_clock_read_and_record_nothing() -> None:
    clock = FakeClock()
    t = StepTimer(clock)
    for method, initial in (("BYE", False), ("INVITE", False), ("OPTIONS", True)):
        t.start()
        t.begin_request(method, initial)
        t.mark(STEP_AUTH)
        t.mark(STEP_BUILD)
        t.sent()
    assert clock.reads == 3
    assert all(t.count(f, s) == 0 for f in (0, 1) for s in range(6))


def test_flow_without_build_is_not_committed() -> None:
    t = StepTimer(FakeClock([1, 10, 10, 10]))
    t.start()
    t.begin_request("REGISTER", True)  # e.g. answered with a 401 challenge: no BUILD mark
    t.sent()
    assert t.count(FLOW_REGISTER, STEP_PARSE) == 0
    t.start()
    t.begin_request("INVITE", True)
    t.mark(STEP_BUILD)
    t.abort()
    t.sent()
    assert t.count(FLOW_INVITE, STEP_TOTAL) == 0


def test_an_unfinished_flow_leaves_nothing_to_the_next() -> None:
    # first REGISTER: location marked (+5000), then no BUILD (a 4xx path); second: every step 100 ns
    t = StepTimer(FakeClock([0, 100, 5000, 0, 100, 100, 100, 100]))
    t.start()
    t.begin_request("REGISTER", True)
    t.mark(STEP_LOCATION)
    t.sent()
    t.start()
    t.begin_request("REGISTER", True)
    t.mark(STEP_LOCATION)
    t.mark(STEP_BUILD)
    t.sent()
    assert t.count(FLOW_REGISTER, STEP_LOCATION) == 1
    assert t.snapshot()["register"]["location"]["max_us"] == 0.1


def test_only_step_boundaries_can_be_marked() -> None:
    t = StepTimer(FakeClock())
    t.start()
    t.begin_request("REGISTER", True)
    with pytest.raises(ValueError):
        t.mark(STEP_SEND)


def test_histogram_is_cumulative_and_quantiles_land_in_bucket() -> None:
    t = StepTimer(FakeClock())
    series_values = [100, 1_000, 1_000, 10_000, 100_000]
    for v in series_values:
        t._series[FLOW_INVITE * 6 + STEP_TOTAL].add(v)
    buckets, total, count = t.histogram(FLOW_INVITE, STEP_TOTAL)
    assert count == 5 and total == pytest.approx(sum(series_values) / 1e9)
    counts = [c for _b, c in buckets]
    assert counts == sorted(counts) and counts[-1] == 5
    bounds = [b for b, _c in buckets]
    assert bounds[0] == pytest.approx(64e-9) and all(b2 == pytest.approx(2 * b1) for b1, b2 in zip(bounds, bounds[1:], strict=False))
    p50 = t.quantile(FLOW_INVITE, STEP_TOTAL, 0.5)
    assert p50 is not None and 800 < p50 <= 1024
    assert t.quantile(FLOW_REGISTER, STEP_TOTAL, 0.5) is None
    t.reset()
    assert t.count(FLOW_INVITE, STEP_TOTAL) == 0


REGISTER = (
    "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@127.0.0.1>;tag=a{n}\r\n"
    "To: <sip:alice@127.0.0.1>\r\n"
    "Call-ID: reg-{n}\r\n"
    "CSeq: {n} REGISTER\r\n"
    "Contact: <sip:alice@127.0.0.1:5999>\r\n"
    "Expires: 600\r\n"
    "Content-Length: 0\r\n\r\n"
)

INVITE = (
    "INVITE sip:alice@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bK-inv{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:bob@127.0.0.1>;tag=b{n}\r\n"
    "To: <sip:alice@127.0.0.1>\r\n"
    "Call-ID: inv-{n}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:bob@127.0.0.1:5998>\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _core(mode: str = "proxy") -> ServerCore:
    core = ServerCore(CoreSettings(mode=mode, stateful=False), LocationService(),
                      local_addresses=[("udp", "127.0.0.1", 5060)])
    return core


def test_core_without_timer_works_and_with_timer_records_register_and_invite() -> None:
    core = _core()
    assert core.timing is None
    assert core.receive(REGISTER.format(n=1).encode(), ("127.0.0.1", 5999), "udp", 1000.0)
    core.timing = StepTimer(FakeClock([10] * 1000))
    for n in range(2, 5):
        out = core.receive(REGISTER.format(n=n).encode(), ("127.0.0.1", 5999), "udp", 1000.0 + n)
        assert out and out[0].data.startswith(b"SIP/2.0 200")
        core.timing.sent()
    out = core.receive(INVITE.format(n=1).encode(), ("127.0.0.1", 5998), "udp", 1010.0)
    assert any(s.data.startswith(b"INVITE ") for s in out)
    core.timing.sent()
    snap = core.timing.snapshot()
    for step in ("parse", "location", "build", "send", "total"):
        assert snap["register"][step]["count"] == 3, step
        assert snap["invite"][step]["count"] == 1, step
    assert snap["register"]["auth"]["count"] == 0  # auth is off
    # a retransmission answered from the reply cache is not a timed flow
    core.receive(REGISTER.format(n=4).encode(), ("127.0.0.1", 5999), "udp", 1005.0)
    core.timing.sent()
    assert core.timing.count(FLOW_REGISTER, STEP_TOTAL) == 3
    assert tm.STEPS[STEP_SEND] == "send"


def test_stateful_proxy_invites_are_timed_through_the_core_fallback() -> None:
    core = ServerCore(CoreSettings(mode="proxy", stateful=True), LocationService(),
                      local_addresses=[("udp", "127.0.0.1", 5060)])
    core.timing = StepTimer(FakeClock([10] * 1000))
    core.receive(REGISTER.format(n=1).encode(), ("127.0.0.1", 5999), "udp", 1000.0)
    core.timing.sent()
    out = core.receive(INVITE.format(n=7).encode(), ("127.0.0.1", 5998), "udp", 1001.0)
    assert any(s.data.startswith(b"INVITE ") for s in out)
    core.timing.sent()
    assert core.timing.count(FLOW_INVITE, STEP_TOTAL) == 1
    assert core.timing.count(FLOW_INVITE, STEP_BUILD) == 1
    # an INVITE to nobody is answered (404/480), not forwarded: not a timed flow
    core.receive(INVITE.format(n=8).encode().replace(b"alice@", b"nobody@"), ("127.0.0.1", 5998), "udp", 1002.0)
    core.timing.sent()
    assert core.timing.count(FLOW_INVITE, STEP_TOTAL) == 1


def test_forwarded_keeps_a_proxy_own_build_mark() -> None:
    t = StepTimer(FakeClock([0, 5, 7, 100]))
    t.start()
    t.begin_request("INVITE", True)
    t.mark(STEP_BUILD)
    t.forwarded()  # no clock read, no change
    t.sent()
    assert t.snapshot()["invite"]["build"]["max_us"] == 0.007


def test_counts_include_the_overflow_bucket() -> None:
    """A step longer than the last bound (about 34 s: a stalled process) still counts in every view."""
    t = StepTimer(FakeClock([0, 100, 2**36, 100, 100]))
    t.datagram_in()
    t.start()
    t.begin_request("REGISTER", True)
    t.mark(STEP_LOCATION)  # 2**36 ns: past the last bound
    t.mark(STEP_BUILD)
    t.sent()
    assert t.count(FLOW_REGISTER, STEP_LOCATION) == 1
    buckets, total_s, count = t.histogram(FLOW_REGISTER, STEP_LOCATION)
    assert count == 1 and buckets[-1][1] == 0 and total_s == pytest.approx(2**36 / 1e9)
    assert t.snapshot()["register"]["location"]["count"] == 1
    t.reset()
    assert t.count(FLOW_REGISTER, STEP_LOCATION) == 0 and t.histogram(FLOW_REGISTER, STEP_TOTAL)[2] == 0
