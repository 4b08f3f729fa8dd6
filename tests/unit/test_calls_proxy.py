"""The stateful proxy feeding the call tracker, and relaying to gateway sets with failover, driven through
ServerCore.receive/handle_timers with a fake clock (no sockets): what the tracker records for answered,
cancelled, rejected and locally refused calls, the bound, re-INVITEs; a gateway set's first destination failing
(503, silence, transport error) and the next one answering within the same transaction."""

from __future__ import annotations

from leansip.server.calls import CallTracker
from leansip.server.core import ServerCore
from leansip.server.gateways import Gateway, Gateways, GatewaySet, parse_gateways
from leansip.sip.message import Request
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    Out,
    feed,
    forwarded,
    make_core,
    parse_out,
    registered,
    request,
    requests,
    response_to,
    upstream,
)

BOB_URI = "sip:bob@leansip"
GW1 = ("192.0.2.51", 5060)
GW2 = ("192.0.2.52", 5060)


def _core(tracker: CallTracker | None = None, gateways: Gateways | None = None) -> ServerCore:
    core = make_core()
    core.services.calls = tracker if tracker is not None else CallTracker()
    core.services.gateways = gateways
    return core


_fwd = forwarded
_up = upstream


def _answered_call(core: ServerCore, call_id: str = "c1@test") -> Request:
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", BOB_URI, call_id=call_id), ALICE, 10.0)
    fwd = _fwd(out, BOB1)
    assert _up(feed(core, response_to(fwd, 180), BOB1, 10.5)) == [180]
    assert _up(feed(core, response_to(fwd, 200), BOB1, 12.0)) == [200]
    return fwd


def test_an_answered_call_and_its_bye_through_the_proxy() -> None:
    tracker = CallTracker()
    core = _core(tracker)
    _answered_call(core)
    (call,) = tracker.live()
    assert (call.state_name, call.caller_addr, call.callee_addr, call.ring, call.answer) == (
        "answered", "192.0.2.10:5062", "192.0.2.21:5062", 10.5, 12.0)
    assert tracker.setup_count == 1
    bye = request("BYE", f"sip:bob@{BOB1[0]}:{BOB1[1]}", call_id="c1@test", to_tag="callee1", cseq=2,
                  extra=[("Route", f"<sip:{'10.0.0.1'}:5060;lr>")])
    out = feed(core, bye, ALICE, 20.0)
    assert _fwd(out, BOB1, "BYE") is not None
    assert len(tracker) == 0 and (call.end_reason, call.hangup, call.end) == ("bye", "caller", 20.0)
    assert call.duration(0.0) == 8.0


def test_the_callee_hanging_up_is_recorded_as_the_callee() -> None:
    tracker = CallTracker()
    core = _core(tracker)
    _answered_call(core)
    (call,) = tracker.live()
    bye = request("BYE", f"sip:alice@{ALICE[0]}:{ALICE[1]}", src=BOB1, call_id="c1@test", from_user="bob",
                  to_user="alice", from_tag="callee1", to_tag="ftag1", cseq=1,
                  extra=[("Route", "<sip:10.0.0.1:5060;lr>")])
    feed(core, bye, BOB1, 30.0)
    assert (call.end_reason, call.hangup) == ("bye", "callee")


def test_cancel_and_rejection_end_the_attempt() -> None:
    tracker = CallTracker()
    core = _core(tracker)
    registered(core, "bob", BOB1)
    inv = request("INVITE", BOB_URI, call_id="cancelled", branch="z9hG4bKcancelme")
    fwd = _fwd(feed(core, inv, ALICE, 1.0), BOB1)
    feed(core, response_to(fwd, 180), BOB1, 1.1)
    feed(core, request("CANCEL", BOB_URI, call_id="cancelled", branch="z9hG4bKcancelme"), ALICE, 2.0)
    assert _up(feed(core, response_to(fwd, 487), BOB1, 2.1)) == [487]
    busy_fwd = _fwd(feed(core, request("INVITE", BOB_URI, call_id="busy"), ALICE, 3.0), BOB1)
    assert _up(feed(core, response_to(busy_fwd, 486), BOB1, 3.5)) == [486]
    cancelled, busy = tracker.drain()
    assert (cancelled.end_reason, cancelled.hangup, cancelled.status) == ("cancel", "caller", 487)
    assert (busy.end_reason, busy.hangup, busy.status, busy.callee_addr) == ("rejected", "callee", 486,
                                                                              "192.0.2.21:5062")
    assert len(tracker) == 0


def test_a_call_the_proxy_refuses_itself_is_recorded_too() -> None:
    tracker = CallTracker()
    core = _core(tracker)
    assert _up(feed(core, request("INVITE", "sip:nobody@leansip"), ALICE, 1.0)) == [100, 404]
    (record,) = tracker.drain()
    assert (record.status, record.end_reason, record.callee_addr) == (404, "rejected", "")


def test_past_max_calls_a_new_call_is_answered_503() -> None:
    tracker = CallTracker(max_calls=1)
    core = _core(tracker)
    _answered_call(core)
    out = feed(core, request("INVITE", BOB_URI, call_id="c2@test"), ALICE, 13.0)
    assert _up(out) == [100, 503] and requests(out) == [] and tracker.refused == 1


def test_a_reinvite_through_the_proxy_refreshes_the_session_timer() -> None:
    tracker = CallTracker(call_timeout=60.0)
    core = _core(tracker)
    _answered_call(core)
    (call,) = tracker.live()
    reinv = request("INVITE", f"sip:bob@{BOB1[0]}:{BOB1[1]}", call_id="c1@test", to_tag="callee1", cseq=2,
                    extra=[("Route", "<sip:10.0.0.1:5060;lr>")])
    fwd = _fwd(feed(core, reinv, ALICE, 40.0), BOB1)
    feed(core, response_to(fwd, 200, extra=[("Session-Expires", "120;refresher=uac")]), BOB1, 40.1)
    assert call.session_expires == 120
    assert tracker.expire(159.0) == 0 and tracker.expire(161.0) == 1 and call.end_reason == "session-expired"


def test_without_a_tracker_nothing_is_tracked() -> None:
    core = make_core()
    assert core.services.calls is None
    registered(core, "bob", BOB1)
    fwd = _fwd(feed(core, request("INVITE", BOB_URI), ALICE, 1.0), BOB1)
    assert _up(feed(core, response_to(fwd, 200), BOB1, 1.1)) == [200]


# --------------------------------------------------------------------------------------------- gateways
def _gateways(policy: str = "round-robin", timeout: float = 2.0) -> Gateways:
    return parse_gateways({"pstn": {"policy": policy, "timeout": timeout, "destinations": [
        f"{GW1[0]}:{GW1[1]}", f"{GW2[0]}:{GW2[1]}"]}}, [{"prefix": "+1", "set": "pstn"}])


def _pstn_call(core: ServerCore, now: float = 1.0, call_id: str = "pstn-1") -> list[Out]:
    return feed(core, request("INVITE", "sip:+15551234@leansip", call_id=call_id,
                              branch=f"z9hG4bK{call_id}"), ALICE, now)


def test_a_number_prefix_goes_to_the_gateway_set_round_robin() -> None:
    core = _core(gateways=_gateways())
    first = _fwd(_pstn_call(core, call_id="a"), GW1)
    assert first.uri == "sip:+15551234@leansip"  # the next hop is the gateway; the Request-URI stays
    _fwd(_pstn_call(core, call_id="b"), GW2)
    pstn = core.services.gateways.sets["pstn"]  # type: ignore[union-attr]
    assert [g.selected for g in pstn.gateways] == [1, 1]


def test_a_503_from_the_first_gateway_fails_over_to_the_next_within_the_transaction() -> None:
    tracker = CallTracker()
    core = _core(tracker, _gateways())
    out = _pstn_call(core)
    assert _up(out) == [100]
    first = _fwd(out, GW1)
    over = feed(core, response_to(first, 503), GW1, 1.2)
    assert _up(over) == []  # the caller hears nothing of the failure
    second = _fwd(over, GW2)
    assert second.header_values("via")[0] != first.header_values("via")[0]  # a new branch
    assert _up(feed(core, response_to(second, 200, to_tag="gw2"), GW2, 1.5)) == [200]
    (call,) = tracker.live()
    assert call.callee_addr == f"{GW2[0]}:{GW2[1]}" and call.to_tag == "gw2"
    pstn = core.services.gateways.sets["pstn"]  # type: ignore[union-attr]
    assert [(g.selected, g.failed) for g in pstn.gateways] == [(1, 1), (1, 0)]


def test_a_silent_gateway_fails_over_after_the_set_timeout() -> None:
    core = _core(gateways=_gateways(timeout=2.0))
    _fwd(_pstn_call(core, now=1.0), GW1)
    assert core.next_deadline() is not None and core.next_deadline() <= 3.0  # type: ignore[operator]
    fired: list[Out] = []
    while (at := core.next_deadline()) is not None and at <= 3.0:
        fired += parse_out(core.handle_timers(at))
    second = _fwd(fired, GW2)
    assert _up(fired) == [] and second.method == "INVITE"
    # the first gateway answering late changes nothing: its transaction is over
    assert _up(feed(core, response_to(second, 180), GW2, 3.2)) == [180]


def test_a_gateway_that_answers_with_a_provisional_is_not_timed_out() -> None:
    core = _core(gateways=_gateways(timeout=2.0))
    first = _fwd(_pstn_call(core, now=1.0), GW1)
    feed(core, response_to(first, 100), GW1, 1.1)
    fired: list[Out] = []
    while (at := core.next_deadline()) is not None and at <= 5.0:
        fired += parse_out(core.handle_timers(at))
    assert requests(fired, "INVITE") == []


def test_a_busy_gateway_is_an_answer_not_a_failover() -> None:
    core = _core(gateways=_gateways())
    first = _fwd(_pstn_call(core), GW1)
    out = feed(core, response_to(first, 486), GW1, 1.2)
    assert _up(out) == [486] and requests(out, "INVITE") == []


def test_the_last_gateways_failure_is_what_the_caller_hears() -> None:
    core = _core(gateways=_gateways())
    first = _fwd(_pstn_call(core), GW1)
    second = _fwd(feed(core, response_to(first, 503), GW1, 1.2), GW2)
    assert _up(feed(core, response_to(second, 503), GW2, 1.4)) == [500]  # 16.7 step 6: a 503 goes up as 500


def test_no_failover_after_the_caller_cancelled() -> None:
    core = _core(gateways=_gateways())
    first = _fwd(_pstn_call(core, call_id="x"), GW1)
    feed(core, response_to(first, 180), GW1, 1.1)
    feed(core, request("CANCEL", "sip:+15551234@leansip", call_id="x", branch="z9hG4bKx"), ALICE, 1.5)
    out = feed(core, response_to(first, 503), GW1, 1.6)
    assert requests(out, "INVITE") == [] and _up(out) == [500]


def test_every_gateway_down_is_answered_503_at_once_and_recorded() -> None:
    tracker = CallTracker()
    gateways = _gateways()
    for g in gateways.sets["pstn"].gateways:
        g.state = "down"
    core = _core(tracker, gateways)
    out = _pstn_call(core)
    assert _up(out) == [100, 503] and requests(out) == []
    (record,) = tracker.drain()
    assert (record.status, record.reason) == (503, "No Gateway Available")


def test_a_transport_error_on_the_first_gateway_fails_over() -> None:
    gateways = Gateways({"pstn": GatewaySet("pstn", [Gateway("pstn", GW1[0], GW1[1], "tcp"),
                                                     Gateway("pstn", GW2[0], GW2[1], "udp")])},
                        parse_gateways(None, None).routes)
    gateways.routes = parse_gateways({"pstn": {"destinations": ["h"]}}, [{"prefix": "+1", "set": "pstn"}]).routes
    core = _core(gateways=gateways)
    out = _pstn_call(core)
    (tcp,) = [o for o in requests(out, "INVITE") if o.dest == GW1]
    assert tcp.send.transport == "tcp"
    over = parse_out(core.transport_error(tcp.send.data, 1.1, "connection refused"))
    assert _fwd(over, GW2).method == "INVITE" and _up(over) == []
