"""The server freezes surviving objects once a second (leansip.app.serve.age_gc) and relies on reference
counting to free transactions and bindings: that is only sound while the core makes no reference cycles.
These tests run whole calls and registrations through the core, let every timer fire, and check that the
collector finds nothing to collect and that nothing the calls made is left alive."""

from __future__ import annotations

import gc

import pytest

from leansip.app.serve import FULL_COLLECT_EVERY, age_gc
from leansip.sip.message import Request

from .proxy_kit import ALICE, BOB1, feed, make_core, register, registered, request, response_to


def _call(core: object, n: int, now: float) -> None:
    """INVITE / 180 / 200 / ACK / BYE / 200 between alice and bob through the proxy."""
    invite = request("INVITE", "sip:bob@leansip", call_id=f"gc-{n}@test", from_tag=f"f{n}")
    fwd = next(o.msg for o in feed(core, invite, ALICE, now) if isinstance(o.msg, Request))
    feed(core, response_to(fwd, 180, to_tag=f"t{n}"), BOB1, now)
    ok = next(o.msg for o in feed(core, response_to(fwd, 200, to_tag=f"t{n}"), BOB1, now))
    to = ok.header("to")
    contact = f"sip:bob@{BOB1[0]}:{BOB1[1]}"
    route = [("Route", v) for v in ok.header_values("record-route")]
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        data = request(method, contact, call_id=f"gc-{n}@test", from_tag=f"f{n}", to_tag=to.split("tag=")[1],
                       cseq=cseq, extra=route)
        out = feed(core, data, ALICE, now)
    bye = next(o.msg for o in out if isinstance(o.msg, Request))
    feed(core, response_to(bye, 200, to_tag=f"t{n}"), BOB1, now)


@pytest.mark.parametrize("stateful", [True, False])
def test_calls_leave_no_cycles_and_nothing_alive(stateful: bool) -> None:
    core = make_core(stateful=stateful)
    registered(core, "bob", BOB1)
    _call(core, 0, 1.0)  # warm the caches and the lazily built parts first
    now = 2.0
    for _ in range(200):
        core.handle_timers(now)
        now += 1.0
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for n in range(1, 51):
            _call(core, n, now)
        if stateful:
            assert len(core.proxy.table) > 0  # the transactions are alive until their timers end
        for _ in range(100):  # Timers J, L, K, D ... all end within 64*T1 = 32 s
            now += 1.0
            core.handle_timers(now)
        if stateful:
            assert len(core.proxy.table) == 0
            assert not core.proxy.branch_of
        assert gc.collect() == 0, "the core made reference cycles: age_gc's freezing would leak them"
        # what stays are bounded caches (parsed URIs, replies to absorb retransmissions), not the calls
        assert len(gc.get_objects()) - before < 50 * 40
    finally:
        gc.enable()


def test_registrations_leave_no_cycles() -> None:
    core = make_core(stateful=False)
    gc.collect()
    gc.disable()
    try:
        for n in range(200):
            feed(core, register(f"user{n % 20}", ("192.0.2.50", 6000 + n % 20), call_id=f"r{n}@test"),
                 ("192.0.2.50", 6000 + n % 20), 1.0 + n)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_age_gc_freezes_each_tick_and_collects_everything_now_and_then() -> None:
    try:
        gc.unfreeze()
        age_gc(1)
        assert gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        junk: list[object] = []
        junk.append(junk)  # a cycle, made after the freeze: young, so an ordinary collection would see it
        del junk
        age_gc(FULL_COLLECT_EVERY)  # unfreezes, collects everything (the cycle goes), freezes again
        assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() <= frozen + 1000
    finally:
        gc.unfreeze()
