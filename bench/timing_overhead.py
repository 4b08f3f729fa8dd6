"""Micro-benchmark: what the always-on step timings cost on the REGISTER path.

Runs ``ServerCore.receive()`` on distinct REGISTERs (fresh Call-ID each, so the reply cache never answers) with
``core.timing = None`` and with a :class:`~leansip.server.timing.StepTimer` on ``time.perf_counter_ns``,
including the shell's ``datagram_in()``/``sent()`` calls, and prints ns per REGISTER for both and the difference.
Rounds alternate between the two setups so machine noise hits both alike; the best round of each is reported
(the usual micro-benchmark convention: the minimum is the least disturbed run).  Because the difference is
small next to a REGISTER's cost (and so within the noise of a shared machine), the cost of the timer calls
alone is measured too: that number is the overhead per timed flow.

    python3 bench/timing_overhead.py [--n 20000] [--rounds 7] [--users 1000]
"""

from __future__ import annotations

import argparse
import gc
import time

from leansip.server.core import CoreSettings, ServerCore
from leansip.server.location import LocationService
from leansip.server.timing import FLOW_REGISTER, STEP_TOTAL, StepTimer

TEMPLATE = (
    "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user{u}@127.0.0.1>;tag={n}\r\n"
    "To: <sip:user{u}@127.0.0.1>\r\n"
    "Call-ID: {n}-bench\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user{u}@127.0.0.1:6000>\r\n"
    "Expires: 3600\r\n"
    "User-Agent: bench\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _messages(n: int, users: int, offset: int) -> list[bytes]:
    return [TEMPLATE.format(n=offset + i, u=i % users).encode() for i in range(n)]


def _run(core: ServerCore, messages: list[bytes]) -> float:
    """ns per message for one pass; like leansip.io.udp, datagram_in() before and sent() after receive()."""
    receive = core.receive
    timing = core.timing
    source = ("127.0.0.1", 6000)
    now = time.time()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        if timing is None:
            for data in messages:
                receive(data, source, "udp", now, None)
        else:
            datagram_in, sent = timing.datagram_in, timing.sent
            for data in messages:
                datagram_in()
                receive(data, source, "udp", now, None)
                sent()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / len(messages)


def _timer_only(n: int) -> float:
    """ns for the timer calls of one REGISTER flow alone (what the core and shell add), without the work."""
    timer = StepTimer(clock=time.perf_counter_ns)
    datagram_in, start, begin, mark, sent = timer.datagram_in, timer.start, timer.begin_request, timer.mark, timer.sent
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            datagram_in()
            start()
            begin("REGISTER", True)
            mark(2)
            mark(3)
            sent()
        elapsed = time.perf_counter_ns() - t0
    finally:
        gc.enable()
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="REGISTERs per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per setup (default 7)")
    parser.add_argument("--users", type=int, default=1000, help="distinct AORs (default 1000)")
    args = parser.parse_args()

    settings = CoreSettings(mode="registrar", auth=False)
    cores = {"off": ServerCore(settings, LocationService()), "on": ServerCore(settings, LocationService())}
    cores["on"].timing = StepTimer(clock=time.perf_counter_ns)
    best = {"off": float("inf"), "on": float("inf")}
    offset = 0
    _run(cores["off"], _messages(2000, args.users, 10**9))  # warm up imports and caches
    _run(cores["on"], _messages(2000, args.users, 2 * 10**9))
    for _ in range(args.rounds):
        for name in ("off", "on"):
            messages = _messages(args.n, args.users, offset)
            offset += args.n
            best[name] = min(best[name], _run(cores[name], messages))
    timing = cores["on"].timing
    assert timing is not None
    recorded = timing.count(FLOW_REGISTER, STEP_TOTAL)
    assert recorded >= args.n * args.rounds, "timing did not record the REGISTERs"
    overhead = best["on"] - best["off"]
    print(f"core.receive() REGISTER, {args.n} x {args.rounds} rounds, best round:")
    print(f"  timing off: {best['off']:8.0f} ns/op")
    print(f"  timing on:  {best['on']:8.0f} ns/op  (includes datagram_in/sent as the UDP shell calls them)")
    print(f"  overhead:   {overhead:8.0f} ns/op  ({100 * overhead / best['off']:.1f} %)")
    intrinsic = min(_timer_only(args.n) for _ in range(args.rounds))
    print(f"  timer calls alone: {intrinsic:5.0f} ns per REGISTER flow (datagram_in, start, begin, 2 marks, sent)")
    snap = timing.snapshot()["register"]
    steps = ", ".join(f"{step} {snap[step].get('p50_us', 0):.1f}" for step in ("parse", "location", "build", "total"))
    print(f"  recorded {recorded} REGISTER flows; p50 us: {steps}")


if __name__ == "__main__":
    main()
