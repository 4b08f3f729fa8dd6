"""Call detail records (leansip.app.cdr): the writer thread's rows, answered calls written twice (open, then
complete), open calls given back after a restart, queries with filters and pages, CSV, retention, times."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from leansip.app.cdr import CdrFilter, CdrWriter, next_id, open_calls, parse_since, query, to_csv
from leansip.server.calls import Call, CallTracker
from tests.unit.proxy_kit import ALICE, BOB1, as_request, as_response, request, response_to

T0 = 1_714_557_600.0  # 2024-05-01T10:00:00Z


def _call(tracker: CallTracker, n: int, start: float, *, caller: str = "alice", callee: str = "bob",
          answer: float | None = None, end: float | None = None, status: int = 486) -> Call:
    inv = as_request(request("INVITE", f"sip:{callee}@leansip", call_id=f"call-{n}", from_user=caller, to_user=callee))
    call = tracker.start(inv, ALICE, "udp", start)
    assert call is not None
    if answer is not None:
        tracker.answered(call, as_response(response_to(inv, 200)), BOB1, "udp", answer)
        if end is not None:
            bye = as_request(request("BYE", "sip:bob@192.0.2.21:5062", call_id=f"call-{n}", to_tag="callee1", cseq=2,
                               from_user=caller, to_user=callee))
            tracker.in_dialog(bye, end)
    elif end is not None:
        tracker.failed(call, status, "Busy Here", end, BOB1, "udp")
    return call


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cdr.db"


def _write(db: Path, tracker: CallTracker, **kw: int) -> CdrWriter:
    writer = CdrWriter(db, clock=lambda: T0 + 100, **kw)
    writer.submit(tracker.drain())
    assert writer.wait_idle()
    return writer


def test_records_are_written_with_every_field(db: Path) -> None:
    tracker = CallTracker()
    _call(tracker, 1, T0, answer=T0 + 2.5, end=T0 + 12.75)
    _call(tracker, 2, T0 + 1, caller="carol", callee="dave", end=T0 + 3)
    writer = _write(db, tracker)
    writer.close()
    rows, total = query(db, CdrFilter())
    assert total == 2 and [r["call_id"] for r in rows] == ["call-2", "call-1"]  # newest first
    busy, talk = rows
    assert (talk["caller"], talk["callee"], talk["status"], talk["end_reason"], talk["hangup"]) == (
        "alice@leansip", "bob@leansip", 200, "bye", "caller")
    assert (talk["start"], talk["answer"], talk["end"], talk["duration"], talk["setup"]) == (
        T0, T0 + 2.5, T0 + 12.75, 10.25, 2.5)
    assert (talk["caller_addr"], talk["caller_transport"], talk["callee_addr"], talk["callee_transport"]) == (
        "192.0.2.10:5062", "udp", "192.0.2.21:5062", "udp")
    assert (busy["status"], busy["reason"], busy["end_reason"], busy["hangup"], busy["duration"], busy["answer"]) == (
        486, "Busy Here", "rejected", "callee", 0.0, None)
    assert writer.written == 3 and writer.batches == 1 and writer.pending == 0  # the answered one twice


def test_an_answered_call_keeps_an_open_row_until_it_ends_and_comes_back_after_a_restart(db: Path) -> None:
    tracker = CallTracker()
    call = _call(tracker, 1, T0, answer=T0 + 1)
    call.add_field("account", "acme")
    writer = _write(db, tracker)
    (row,), _ = query(db, CdrFilter())
    assert row["end"] is None and row["end_reason"] == "in progress" and row["extra"] == {"account": "acme"}
    # the server stops (or is killed) with the call up; the next start takes it up again
    writer.close()
    (again,) = open_calls(db)
    assert (again.id, again.call_id, again.to_tag, again.answer, again.extra) == (
        call.id, "call-1", "callee1", T0 + 1, {"account": "acme"})
    assert next_id(db) == call.id + 1
    after = CallTracker(first_id=next_id(db))
    assert after.restore(again, T0 + 50)
    bye = as_request(request("BYE", "sip:bob@192.0.2.21:5062", call_id="call-1", to_tag="callee1", cseq=2))
    after.in_dialog(bye, T0 + 60)
    writer = CdrWriter(db, clock=lambda: T0 + 100, open_ids=[again.id])
    writer.submit(after.drain())
    assert writer.wait_idle()
    writer.close()
    (row,), total = query(db, CdrFilter())
    assert total == 1 and row["end"] == T0 + 60 and row["duration"] == 59.0 and row["hangup"] == "caller"
    assert open_calls(db) == []


def test_a_call_answered_in_one_batch_and_ended_in_a_later_one_is_one_complete_row(db: Path) -> None:
    tracker = CallTracker()
    call = _call(tracker, 1, T0, answer=T0 + 1)
    writer = CdrWriter(db, clock=lambda: T0)
    writer.submit(tracker.drain())
    assert writer.wait_idle()
    assert query(db, CdrFilter())[0][0]["end"] is None
    bye = as_request(request("BYE", "sip:bob@192.0.2.21:5062", call_id="call-1", to_tag="callee1", cseq=2))
    tracker.in_dialog(bye, T0 + 31)
    writer.submit(tracker.drain())
    assert writer.wait_idle()
    writer.close()
    (row,), total = query(db, CdrFilter())
    assert total == 1 and (row["id"], row["end"], row["duration"], row["end_reason"]) == (call.id, T0 + 31, 30.0,
                                                                                        "bye")
    assert open_calls(db) == []


def test_filters_by_user_and_time_and_pages(db: Path) -> None:
    tracker = CallTracker()
    for i in range(10):
        _call(tracker, i, T0 + i * 60, caller="alice" if i % 2 else "carol", callee="bob" if i < 5 else "erin",
              end=T0 + i * 60 + 1)
    _write(db, tracker).close()
    assert query(db, CdrFilter(user="alice"))[1] == 5
    assert query(db, CdrFilter(user="erin@leansip"))[1] == 5
    assert query(db, CdrFilter(user="bob", since=T0 + 120))[1] == 3
    assert query(db, CdrFilter(since=T0 + 120, until=T0 + 300))[1] == 3
    page1, total = query(db, CdrFilter(limit=4))
    page3, _ = query(db, CdrFilter(limit=4, offset=8))
    assert total == 10 and [r["call_id"] for r in page1] == ["call-9", "call-8", "call-7", "call-6"]
    assert [r["call_id"] for r in page3] == ["call-1", "call-0"]
    assert query(db, CdrFilter(user="nobody")) == ([], 0)


def test_a_missing_file_is_an_empty_result(tmp_path: Path) -> None:
    assert query(tmp_path / "none.db", CdrFilter()) == ([], 0)


def test_csv_has_a_header_iso_times_and_a_column_per_extra_field(db: Path) -> None:
    tracker = CallTracker()
    a = _call(tracker, 1, T0, answer=T0 + 1, end=T0 + 31)
    a.add_field("account", "acme, inc")
    b = _call(tracker, 2, T0 + 5, end=T0 + 6)
    b.add_field("route", "pstn")
    _write(db, tracker).close()
    rows = list(csv.reader(io.StringIO(to_csv(query(db, CdrFilter())[0]))))
    header = rows[0]
    assert header[:6] == ["id", "start", "answer", "end", "duration", "caller"] and header[-2:] == ["account", "route"]
    by_id = {r[1]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    first = by_id["2024-05-01T10:00:00.000Z"]
    assert first["end"] == "2024-05-01T10:00:31.000Z" and first["duration"] == "30.0"
    assert first["account"] == "acme, inc" and first["route"] == ""
    assert by_id["2024-05-01T10:00:05.000Z"]["answer"] == ""


def test_retention_deletes_old_records_but_not_open_calls(db: Path) -> None:
    tracker = CallTracker()
    _call(tracker, 1, T0 - 10 * 86400, end=T0 - 10 * 86400 + 5)
    _call(tracker, 2, T0 - 10 * 86400, answer=T0 - 10 * 86400 + 1)  # still up (no end)
    _call(tracker, 3, T0 - 86400, end=T0 - 86400 + 5)
    _write(db, tracker).close()
    writer = CdrWriter(db, retention_days=7, clock=lambda: T0)
    writer.close()
    assert writer.purged == 1
    assert sorted(r["call_id"] for r in query(db, CdrFilter())[0]) == ["call-2", "call-3"]


def test_a_write_error_keeps_the_batch_for_the_next_one(db: Path) -> None:
    tracker = CallTracker()
    _call(tracker, 1, T0, end=T0 + 1)
    writer = CdrWriter(db, clock=lambda: T0)
    # another connection holds the write lock: the writer's batch fails (after its busy timeout) and is kept
    blocker = sqlite3.connect(str(db), isolation_level=None)
    blocker.execute("PRAGMA busy_timeout=0")
    writer._db.execute("PRAGMA busy_timeout=0")
    blocker.execute("BEGIN IMMEDIATE")
    writer.submit(tracker.drain())
    assert not writer.wait_idle(timeout=0.5) and writer.pending == 1
    blocker.execute("ROLLBACK")
    blocker.close()
    _call(tracker, 2, T0, end=T0 + 1)
    writer.submit(tracker.drain())
    assert writer.wait_idle(timeout=10)
    writer.close()
    assert writer.errors >= 1 and query(db, CdrFilter())[1] == 2


def test_while_commits_fail_the_queue_is_bounded_and_drops_are_counted(db: Path) -> None:
    tracker = CallTracker()
    writer = CdrWriter(db, clock=lambda: T0, max_pending=3)
    blocker = sqlite3.connect(str(db), isolation_level=None)
    blocker.execute("PRAGMA busy_timeout=0")
    writer._db.execute("PRAGMA busy_timeout=0")
    blocker.execute("BEGIN IMMEDIATE")
    for n in range(1, 6):
        _call(tracker, n, T0, end=T0 + 1)
        writer.submit(tracker.drain())
    assert not writer.wait_idle(timeout=0.5)
    assert writer.pending == 3 and writer.dropped == 2
    blocker.execute("ROLLBACK")
    blocker.close()
    assert writer.wait_idle(timeout=10)
    _call(tracker, 6, T0, end=T0 + 1)  # room again once the queue is written
    writer.submit(tracker.drain())
    assert writer.wait_idle(timeout=10)
    writer.close()
    assert writer.dropped == 2 and query(db, CdrFilter())[1] == 4


@pytest.mark.parametrize(("text", "expected"), [
    ("1714557600", T0), ("1714557600.5", T0 + 0.5), ("2024-05-01", T0 - 10 * 3600),
    ("2024-05-01T10:00", T0), ("2024-05-01T12:00+02:00", T0), ("90s", T0 + 1000 - 90), ("30m", T0 + 1000 - 1800),
    ("12h", T0 + 1000 - 43200), ("7d", T0 + 1000 - 7 * 86400),
])
def test_times_are_epoch_iso_or_an_age(text: str, expected: float) -> None:
    assert parse_since(text, T0 + 1000) == expected


@pytest.mark.parametrize("text", ["yesterday", "5w", "", "12x"])
def test_bad_times_say_which_forms_work(text: str) -> None:
    with pytest.raises(ValueError, match="epoch seconds"):
        parse_since(text, T0)
