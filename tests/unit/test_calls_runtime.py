"""The shell around calls (leansip.app.calls): when records reach the database (a short call once, at its end; a
call that lasts also while it is up), what a restart takes up again, and why a server tracks no calls."""

from __future__ import annotations

from pathlib import Path

from leansip.app.calls import OPEN_DELAY, CallsRuntime
from leansip.app.cdr import CdrFilter, query
from leansip.app.config import Config
from tests.unit.proxy_kit import ALICE, BOB1, as_request, as_response, request, response_to

T0 = 1_714_557_600.0


def _runtime(tmp_path: Path, **kw: object) -> CallsRuntime:
    return CallsRuntime(Config(cdr_db=tmp_path / "cdr.db", **kw), T0)  # type: ignore[arg-type]


def _answer(rt: CallsRuntime, call_id: str, at: float) -> None:
    tracker = rt.tracker
    assert tracker is not None
    inv = as_request(request("INVITE", "sip:bob@leansip", call_id=call_id))
    call = tracker.start(inv, ALICE, "udp", at - 1)
    assert call is not None
    tracker.answered(call, as_response(response_to(inv, 200)), BOB1, "udp", at)


def _bye(rt: CallsRuntime, call_id: str, at: float) -> None:
    assert rt.tracker is not None
    rt.tracker.in_dialog(as_request(request("BYE", "sip:bob@192.0.2.21:5062", call_id=call_id, to_tag="callee1",
                                            cseq=2)), at)


def _rows(rt: CallsRuntime) -> dict[str, str]:
    assert rt.writer is not None and rt.writer.wait_idle() and rt.cdr_path is not None
    return {r["call_id"]: r["end_reason"] for r in query(rt.cdr_path, CdrFilter())[0]}


def test_a_short_call_is_written_once_at_its_end_and_a_long_one_also_while_it_is_up(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    _answer(rt, "short", T0)
    _answer(rt, "long", T0)
    rt.flush(T0 + 0.25)
    assert _rows(rt) == {}  # both young: nothing written yet
    _bye(rt, "short", T0 + 1.0)
    rt.flush(T0 + 1.0)
    assert _rows(rt) == {"short": "bye"}
    rt.flush(T0 + OPEN_DELAY)
    assert _rows(rt) == {"short": "bye", "long": "in progress"}
    _bye(rt, "long", T0 + 60)
    rt.flush(T0 + 60)
    assert _rows(rt) == {"short": "bye", "long": "bye"}
    assert rt.writer is not None and rt.writer.written == 3  # short once, long twice
    rt.close(T0 + 61)


def test_a_call_up_at_a_restart_is_taken_up_again(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    _answer(rt, "kept", T0)
    rt.flush(T0 + OPEN_DELAY + 1)
    rt.close(T0 + OPEN_DELAY + 2)  # a restart: the answered call is not ended by it
    again = _runtime(tmp_path)
    assert again.restored == 1 and again.tracker is not None
    (live,) = again.tracker.live()
    assert (live.call_id, live.caller_addr, live.callee_addr) == ("kept", "192.0.2.10:5062", "192.0.2.21:5062")
    _bye(again, "kept", T0 + 100)
    again.flush(T0 + 100)
    assert _rows(again) == {"kept": "bye"}
    (record,) = query(tmp_path / "cdr.db", CdrFilter())[0]
    assert (record["caller"], record["duration"], record["hangup"]) == ("alice@leansip", 100.0, "caller")
    again.close(T0 + 101)


def test_servers_that_track_no_calls_say_why(tmp_path: Path) -> None:
    for kw, words in (({"stateful": False}, "stateless proxy"), ({"mode": "registrar"}, "registrar mode"),
                      ({"calls": False}, "calls = false")):
        rt = _runtime(tmp_path, **kw)
        assert rt.tracker is None and rt.writer is None and words in rt.why_not
        assert rt.calls_doc(T0) == {"tracking": False, "reason": rt.why_not, "calls_in_progress": 0, "calls": []}
    without_records = _runtime(tmp_path, cdr=False)
    assert without_records.tracker is not None and without_records.writer is None
    assert not without_records.tracker.record
