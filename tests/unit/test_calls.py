"""The call tracker (leansip.server.calls) fed the proxy's events by hand, with a fake clock: attempts, early and
confirmed dialogs, BYE from either side, CANCEL, rejections, re-INVITE, the call timeout, RFC 4028 session timers,
the bound and its counter, the records it leaves for the CDR writer."""

from __future__ import annotations

import pytest

from leansip.server.calls import (
    END_BYE,
    END_CANCEL,
    END_REJECTED,
    END_SESSION_EXPIRED,
    END_SHUTDOWN,
    END_TIMEOUT,
    MAX_EXTRA_FIELDS,
    SETUP_BOUNDS,
    Call,
    CallTracker,
    format_addr,
    parse_addr,
    party,
)
from leansip.sip.message import Request
from tests.unit.proxy_kit import ALICE, BOB1, BOB2, as_request, as_response, request, response_to

BOB_URI = "sip:bob@leansip"


def _invite(call_id: str = "c1@test", from_tag: str = "ftag1") -> Request:
    return as_request(request("INVITE", BOB_URI, call_id=call_id, from_tag=from_tag))


def _answer(tracker: CallTracker, inv: Request, now: float, *, extra: list[tuple[str, str]] = (),
            to_tag: str = "callee1") -> Call:
    call = tracker.start(inv, ALICE, "udp", now - 2)
    assert call is not None
    tracker.progress(call, 180, BOB1, "udp", now - 1)
    tracker.answered(call, as_response(response_to(inv, 200, to_tag=to_tag, extra=extra)), BOB1, "udp", now)
    return call


def _bye(call_id: str, from_tag: str, to_tag: str) -> Request:
    return as_request(request("BYE", "sip:bob@192.0.2.21:5062", call_id=call_id, from_tag=from_tag, to_tag=to_tag,
                        cseq=2))


def test_an_answered_call_hung_up_by_the_caller_leaves_one_complete_record() -> None:
    tracker = CallTracker()
    inv = _invite()
    call = tracker.start(inv, ALICE, "udp", 100.0)
    assert call is not None and call.state_name == "trying" and len(tracker) == 1
    tracker.progress(call, 100, BOB1, "udp", 100.01)  # a 100 Trying is not ringing
    assert call.state_name == "trying"
    tracker.progress(call, 180, BOB1, "udp", 100.2)
    assert call.state_name == "ringing" and call.ring == 100.2 and call.callee_addr == "192.0.2.21:5062"
    tracker.answered(call, as_response(response_to(inv, 200)), BOB1, "udp", 103.0)
    assert call.state_name == "answered" and call.to_tag == "callee1" and call.status == 200
    assert tracker.counts() == (0, 1)
    assert call.duration(110.0) == pytest.approx(7.0)
    assert tracker.in_dialog(_bye("c1@test", "ftag1", "callee1"), 113.5) is None
    assert len(tracker) == 0
    # written twice: when answered (a call up at a crash keeps its row) and when it ended
    assert tracker.drain() == [call, call] and tracker.drain() == []
    record = call
    assert (record.end_reason, record.hangup, record.end) == (END_BYE, "caller", 113.5)
    assert record.duration(999.0) == pytest.approx(10.5)
    assert (party(record.from_value), party(record.to_value)) == ("alice@leansip", "bob@leansip")
    assert (record.caller_addr, record.caller_transport) == ("192.0.2.10:5062", "udp")
    assert tracker.answered_count == 1 and sum(tracker.failed_by_class) == 0 and tracker.attempts == 1
    # INVITE -> 180 took 0.2 s: one sample, in the bucket of the first bound at or above it
    assert tracker.setup_count == 1 and tracker.setup_sum == pytest.approx(0.2)
    assert tracker.setup_buckets[SETUP_BOUNDS.index(0.25)] == 1


def test_the_callee_hangs_up_with_the_tags_the_other_way_round() -> None:
    tracker = CallTracker()
    call = _answer(tracker, _invite(), 10.0)
    # the callee's BYE: From carries its tag, To the caller's
    tracker.in_dialog(_bye("c1@test", "callee1", "ftag1"), 20.0)
    assert (call.end_reason, call.hangup) == (END_BYE, "callee")


def test_a_bye_with_a_wrong_tag_or_call_id_ends_nothing() -> None:
    tracker = CallTracker()
    call = _answer(tracker, _invite(), 10.0)
    for bye in (_bye("c1@test", "ftag1", "other"), _bye("c2@test", "ftag1", "callee1"),
                _bye("c1@test", "other", "callee1"), _bye("c1@test", "callee1", "other")):
        assert tracker.in_dialog(bye, 11.0) is None
    assert call.state_name == "answered" and len(tracker) == 1


def test_a_rejected_attempt_ends_with_its_status_and_the_callee_as_the_one_who_declined() -> None:
    tracker = CallTracker()
    call = tracker.start(_invite(), ALICE, "udp", 5.0)
    assert call is not None
    tracker.progress(call, 183, BOB1, "udp", 5.5)
    tracker.failed(call, 486, "Busy Here", 7.0, BOB1, "udp")
    assert (call.status, call.reason, call.end_reason, call.hangup) == (486, "Busy Here", END_REJECTED, "callee")
    assert call.duration(100.0) == 0.0 and len(tracker) == 0 and tracker.failed_by_class[4] == 1
    assert tracker.drain() == [call]


def test_cancel_ends_the_attempt_with_the_487_that_follows_and_names_the_caller() -> None:
    tracker = CallTracker()
    call = tracker.start(_invite(), ALICE, "udp", 5.0)
    assert call is not None
    tracker.progress(call, 180, BOB1, "udp", 5.1)
    tracker.cancelled(call)
    assert call.state_name == "ringing"  # still up until the final response
    tracker.failed(call, 487, "Request Terminated", 6.0)
    assert (call.end_reason, call.hangup, call.status) == (END_CANCEL, "caller", 487)


def test_a_2xx_crossing_the_cancel_makes_it_a_call_after_all() -> None:
    tracker = CallTracker()
    inv = _invite()
    call = tracker.start(inv, ALICE, "udp", 5.0)
    assert call is not None
    tracker.cancelled(call)
    tracker.answered(call, as_response(response_to(inv, 200)), BOB1, "udp", 5.2)
    tracker.failed(call, 487, "Request Terminated", 5.3)  # another fork's 487: the call stays
    assert call.state_name == "answered" and len(tracker) == 1


def test_a_second_fork_answering_does_not_change_the_call() -> None:
    tracker = CallTracker()
    inv = _invite()
    call = tracker.start(inv, ALICE, "udp", 1.0)
    assert call is not None
    tracker.answered(call, as_response(response_to(inv, 200, to_tag="fork1")), BOB1, "udp", 2.0)
    tracker.answered(call, as_response(response_to(inv, 200, to_tag="fork2")), BOB2, "udp", 2.1)
    assert (call.to_tag, call.callee_addr, call.answer) == ("fork1", "192.0.2.21:5062", 2.0)
    assert tracker.answered_count == 1 and tracker.setup_count == 1
    # the caller hangs up the second fork itself: that BYE matches no call
    assert tracker.in_dialog(_bye("c1@test", "ftag1", "fork2"), 2.5) is None
    assert call.state_name == "answered"


def test_a_lost_bye_ends_the_call_at_the_timeout_and_the_record_says_so() -> None:
    tracker = CallTracker(call_timeout=60.0)
    call = _answer(tracker, _invite(), 10.0)
    assert tracker.expire(69.0) == 0 and call.state_name == "answered"
    assert tracker.expire(70.0) == 1
    assert (call.end_reason, call.hangup, call.end) == (END_TIMEOUT, "proxy", 70.0)
    assert call.duration(1000.0) == pytest.approx(60.0) and tracker.timed_out == 1


def test_a_reinvite_keeps_the_call_and_moves_its_timeout() -> None:
    tracker = CallTracker(call_timeout=60.0)
    inv = _invite()
    call = _answer(tracker, inv, 10.0)
    reinv = as_request(request("INVITE", "sip:bob@192.0.2.21:5062", call_id="c1@test", to_tag="callee1", cseq=2))
    assert tracker.in_dialog(reinv, 50.0) is call
    tracker.refreshed(call, as_response(response_to(reinv, 200)), 50.1)
    assert tracker.expire(80.0) == 0  # the first deadline (70) came and went: the entry was put back
    assert call.state_name == "answered"
    assert tracker.expire(111.0) == 1 and call.end == 111.0


def test_session_timers_end_a_silent_call_earlier_and_refreshes_keep_it() -> None:
    tracker = CallTracker(call_timeout=14_400.0)
    inv = _invite()
    call = _answer(tracker, inv, 0.0, extra=[("Session-Expires", "120;refresher=uac"), ("Require", "timer")])
    assert call.session_expires == 120
    upd = as_request(request("UPDATE", "sip:bob@192.0.2.21:5062", call_id="c1@test", to_tag="callee1", cseq=2))
    assert tracker.in_dialog(upd, 60.0) is call
    tracker.refreshed(call, as_response(response_to(upd, 200, extra=[("x", "120;refresher=uac")])), 60.0)  # compact
    assert tracker.expire(150.0) == 0
    assert tracker.expire(180.0) == 1
    assert (call.end_reason, call.hangup) == (END_SESSION_EXPIRED, "proxy")


def test_a_session_interval_below_rfc_4028s_minimum_is_raised_to_it() -> None:
    tracker = CallTracker()
    call = _answer(tracker, _invite(), 0.0, extra=[("Session-Expires", "5")])
    assert call.session_expires == 90
    assert tracker.expire(60.0) == 0 and tracker.expire(90.0) == 1


@pytest.mark.parametrize("value", ["abc", "", "\xb2", "99999999999999", "-5"])
def test_garbage_session_expires_is_no_session_timer(value: str) -> None:
    tracker = CallTracker(call_timeout=600.0)
    call = _answer(tracker, _invite(), 0.0, extra=[("Session-Expires", value)])
    assert call.session_expires == 0
    assert tracker.expire(599.0) == 0 and tracker.expire(600.0) == 1


def test_refreshes_do_not_grow_the_deadline_queue() -> None:
    tracker = CallTracker(call_timeout=60.0)
    inv = _invite()
    call = _answer(tracker, inv, 0.0)
    reinv = as_request(request("INVITE", "sip:bob@192.0.2.21:5062", call_id="c1@test", to_tag="callee1", cseq=2))
    for i in range(1, 1000):
        tracker.refreshed(call, as_response(response_to(reinv, 200)), float(i))
    assert len(tracker._deadlines) <= 2  # the attempt's entry and the answer's
    assert tracker.expire(2000.0) == 1 and call.end == 2000.0


def test_the_bound_refuses_new_attempts_and_counts_them() -> None:
    tracker = CallTracker(max_calls=2)
    assert tracker.start(_invite("a"), ALICE, "udp", 1.0) is not None
    assert tracker.start(_invite("b"), ALICE, "udp", 1.0) is not None
    assert tracker.start(_invite("c"), ALICE, "udp", 1.0) is None
    assert tracker.refused == 1 and len(tracker) == 2


def test_unanswered_attempts_end_at_the_timeout_too() -> None:
    tracker = CallTracker(call_timeout=30.0)
    call = tracker.start(_invite(), ALICE, "udp", 1.0)
    assert call is not None
    tracker.expire(31.0)
    assert (call.end_reason, call.status, tracker.failed_by_class[0]) == (END_TIMEOUT, 0, 1)


def test_shutdown_ends_attempts_and_leaves_answered_calls_open_to_be_restored() -> None:
    tracker = CallTracker(call_timeout=100.0)
    a = _answer(tracker, _invite("a"), 5.0)
    b = tracker.start(_invite("b"), ALICE, "udp", 6.0)
    assert b is not None
    tracker.drain()
    tracker.shutdown(7.0)
    assert (b.end_reason, b.hangup) == (END_SHUTDOWN, "proxy") and a.state_name == "answered"
    assert tracker.drain() == [b]
    # the next process takes the open call up again: its BYE ends it
    after = CallTracker(call_timeout=100.0)
    assert after.restore(a, 50.0) and after.live() == [a]
    assert after.in_dialog(_bye("a", "ftag1", "callee1"), 60.0) is None
    assert (a.end_reason, a.hangup, a.end) == (END_BYE, "caller", 60.0) and after.drain() == [a]
    # a restored call no BYE comes for ends at the timeout counted from the restart
    c = _answer(CallTracker(), _invite("c"), 5.0)
    again = CallTracker(call_timeout=100.0)
    assert again.restore(c, 50.0)
    assert again.expire(149.0) == 0 and again.expire(150.0) == 1 and c.end_reason == END_TIMEOUT
    new = again.start(_invite("d"), ALICE, "udp", 151.0)
    assert new is not None and new.id > c.id


def test_without_records_the_counters_still_count() -> None:
    tracker = CallTracker(record=False)
    call = _answer(tracker, _invite(), 5.0)
    tracker.in_dialog(_bye("c1@test", "ftag1", "callee1"), 6.0)
    assert call.end_reason == END_BYE and tracker.drain() == [] and tracker.answered_count == 1


def test_uncollected_records_are_bounded() -> None:
    tracker = CallTracker(max_finished=3)
    for i in range(5):
        call = tracker.start(_invite(f"c{i}"), ALICE, "udp", 1.0)
        assert call is not None
        tracker.failed(call, 404, "Not Found", 2.0)
    assert [c.call_id for c in tracker.drain()] == ["c2", "c3", "c4"] and tracker.dropped_records == 2


def test_a_new_attempt_of_the_same_caller_and_call_id_takes_over_the_key() -> None:
    tracker = CallTracker()
    first = tracker.start(_invite(), ALICE, "udp", 1.0)
    second = tracker.start(_invite(), ALICE, "udp", 2.0)
    assert first is not None and second is not None and first.id != second.id
    tracker.failed(first, 302, "Moved", 2.5)  # the older one ends without taking the newer out
    assert len(tracker) == 1 and tracker.live() == [second]


def test_extra_fields_are_bounded() -> None:
    call = Call(1, "c", "t", "<sip:a@h>", "<sip:b@h>", ("1.2.3.4", 5), "udp", 0.0)
    for i in range(MAX_EXTRA_FIELDS):
        assert call.add_field(f"k{i}", "v")
    assert not call.add_field("one-more", "v")
    assert call.add_field("k0", "x" * 1000) and call.extra is not None and len(call.extra["k0"]) == 256
    assert not call.add_field("", "v")


@pytest.mark.parametrize(("value", "expected"), [
    ('"Alice" <sip:alice@example.com>;tag=1', "alice@example.com"),
    ("<sip:%61lice@example.com>", "alice@example.com"),
    ("<sip:example.com>", "example.com"),
    ("<tel:+4930123>", "tel:+4930123"),
    ("not a uri <", "not a uri <"),
    ('"Bob" <sip:bob@example.com>;tag=77;x=1', "bob@example.com"),
])
def test_party_names_the_user_at_host(value: str, expected: str) -> None:
    assert party(value) == expected
    assert party(value) == expected  # remembered


@pytest.mark.parametrize(("addr", "text"), [(("192.0.2.1", 5060), "192.0.2.1:5060"),
                                            (("2001:db8::1", 5061), "[2001:db8::1]:5061"), (("", 0), "")])
def test_addresses_are_formatted_and_read_back(addr: tuple[str, int], text: str) -> None:
    assert format_addr(addr) == text and parse_addr(text) == addr


def test_ids_are_unique_and_follow_the_start_time() -> None:
    tracker = CallTracker()
    a = tracker.start(_invite("a"), ALICE, "udp", 1000.0)
    b = tracker.start(_invite("b"), ALICE, "udp", 1000.0)  # the same millisecond
    c = tracker.start(_invite("c"), ALICE, "udp", 999.0)  # a clock set back
    d = tracker.start(_invite("d"), ALICE, "udp", 1000.5)
    assert a is not None and b is not None and c is not None and d is not None
    assert a.id == 1_000_000 * 1024 and b.id == a.id + 1 and c.id == b.id + 1 and d.id == 1_000_500 * 1024
    assert CallTracker(first_id=d.id + 5).start(_invite("e"), ALICE, "udp", 1000.0).id == d.id + 5  # type: ignore[union-attr]


def test_the_to_tag_is_read_from_the_2xx_in_every_form() -> None:
    for to, tag in (("<sip:bob@leansip>;tag=abc", "abc"), ("<sip:bob@leansip>;TAG=Up", "Up"),
                    ("<sip:bob@leansip>;tag=abc;x=y", "abc"), ("sip:bob@leansip;tag=plain", "plain")):
        tracker = CallTracker()
        inv = _invite()
        call = tracker.start(inv, ALICE, "udp", 1.0)
        assert call is not None
        ok = response_to(inv, 200, to_tag=None).replace(b"To: <sip:bob@leansip>", f"To: {to}".encode())
        tracker.answered(call, as_response(ok), BOB1, "udp", 2.0)
        assert call.to_tag == tag, to
