"""Call detail records: one SQLite row per call attempt, written by a thread off the straight path.

Theory of operation
-------------------
The core's :class:`~leansip.server.calls.CallTracker` only appends a call to a list when it is answered and when
it ends. The runtime hands that list to :class:`CdrWriter` a few times a second (:meth:`CdrWriter.submit`, a
queue put); the writer's own thread turns the calls into rows and commits each batch as one transaction. So the
event loop never waits on the disk, and what a ``kill -9`` loses is only what was not committed yet: the
calls of the last fraction of a second.

A call is written once, when it ends, unless it lasts: a call still up :data:`leansip.app.calls.OPEN_DELAY`
seconds after its answer gets its row then (without an end), and its end is an ``UPDATE`` of that row. So a
call up when the server stops (or is killed) keeps a row without an end, and :func:`open_calls` gives those back
at the next start for the tracker to carry on with: the BYE that comes later ends the call and completes its
record, or the call timeout does. Short calls, most of a busy proxy's, cost one insert.

The database is its own file (``cdr_db``, by default ``cdr.db`` beside the location database), in WAL mode with
``synchronous=NORMAL`` like the location store: a committed batch survives the process being killed (it is in
the WAL file); only an OS crash can lose the last commits. A separate file means the writer thread never holds
a lock the location store's flush on the event loop would wait for. The table has no index but the key and the
open calls: the key is the start time in milliseconds (times 1,024, plus a count), so a time range is a key
range, and a search by user scans that range. Every index would cost each call a B-tree insert (~6,000
instructions, about 1 % of a stateful call: bench/analysis.md), paid by the server for queries an operator runs
now and then.

Rows older than ``retention_days`` are deleted at start and then hourly by the writer thread (0 keeps them
forever). Reads (:func:`query`, the admin API, ``leansip cdr``) open their own connection: WAL lets them read
while the writer writes.

Threading: a :class:`~leansip.server.calls.Call` is written only on the event loop thread. The writer reads it in
its thread: the tracker sets a call's state to ended *last*, so a call seen as ended has all its end fields, and
the fields of an answered call do not change until it ends (the answer-time row reads only those).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leansip.io.affinity import helper_thread
from leansip.server.calls import ROW_COLUMNS, STATE_ANSWERED, Call, parse_addr, record_rows

log = logging.getLogger("leansip.cdr")

__all__ = ["COLUMNS", "CdrFilter", "CdrWriter", "next_id", "open_calls", "parse_since", "query", "render", "to_csv"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cdrs (
    id INTEGER PRIMARY KEY,  -- the start in milliseconds times 1024 plus a count: a time range is a key range
    call_id TEXT NOT NULL,
    from_tag TEXT NOT NULL,
    to_tag TEXT NOT NULL,
    caller TEXT NOT NULL,    -- user@host of the From
    callee TEXT NOT NULL,    -- user@host of the To
    start_time REAL NOT NULL,
    ring_time REAL,
    answer_time REAL,
    end_time REAL,           -- NULL: the call is up (its row was written when it had lasted OPEN_DELAY)
    duration REAL NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    end_reason TEXT NOT NULL,
    hangup TEXT NOT NULL,
    caller_leg TEXT NOT NULL,  -- "udp 192.0.2.10:5062"
    callee_leg TEXT NOT NULL,
    session_expires INTEGER NOT NULL,
    extra TEXT               -- JSON object of a route script's fields
);
CREATE INDEX IF NOT EXISTS cdrs_open ON cdrs (end_time) WHERE end_time IS NULL;
PRAGMA user_version = 1;
"""

_ROW_COLUMNS = ROW_COLUMNS
_INSERT = f"INSERT OR REPLACE INTO cdrs ({', '.join(_ROW_COLUMNS)}) VALUES ({', '.join('?' * len(_ROW_COLUMNS))})"
#: the end of a call whose row was written while it was up
_END = "UPDATE cdrs SET end_time = ?, duration = ?, end_reason = ?, hangup = ?, extra = ? WHERE id = ?"

#: The record as the API, the page, the CSV file and ``leansip cdr`` show it, in this order (plus ``extra``).
COLUMNS = (
    "id", "start", "answer", "end", "duration", "caller", "callee", "status", "reason", "end_reason", "hangup",
    "call_id", "caller_addr", "caller_transport", "callee_addr", "callee_transport", "ring", "setup",
)  # fmt: skip

#: Seconds between retention purges by the writer thread.
PURGE_EVERY = 3600.0
#: Most rows one JSON page returns, and one CSV download (narrow it by time for more: ?since=&until=).
MAX_LIMIT = 10_000
MAX_CSV = 100_000
#: records waiting for the writer past which new ones are dropped (counted, logged once): the queue only grows
#: while commits fail (a full disk, a locked or broken file); ~1 kB a record, so about 100 MB at the limit
MAX_PENDING = 100_000
#: ids run ahead of the start time only past 1,024 calls in a millisecond: this much slack (in ids) is plenty
_ID_SLACK = 60_000 * 1024


def _id_at(t: float) -> int:
    """The smallest id of a call that started at ``t`` (epoch seconds)."""
    return int(t * 1000.0) * 1024


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the CDR database (created with its table), in WAL mode, committing only when told. A
    table of another layout (a development version's) is kept under another name, and a new one made."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        columns = [r[1] for r in db.execute("PRAGMA table_info(cdrs)")]
        if columns and columns != list(_ROW_COLUMNS):
            old = f"cdrs_before_{int(time.time())}"
            db.execute(f"ALTER TABLE cdrs RENAME TO {old}")
            db.execute("DROP INDEX IF EXISTS cdrs_open")
            log.warning("event=cdr_table_kept_aside table=%s reason=%r", old, "another column layout")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def next_id(path: str | Path) -> int:
    """The id the next call gets (one past the largest in the file): ids stay unique across restarts."""
    db = connect(path)
    try:
        (largest,) = db.execute("SELECT COALESCE(MAX(id), -1) FROM cdrs").fetchone()
    finally:
        db.close()
    return int(largest) + 1


def open_calls(path: str | Path) -> list[Call]:
    """The answered calls whose row has no end: up when the server last stopped, to be tracked again."""
    db = connect(path)
    try:
        rows = db.execute(
            "SELECT id, call_id, from_tag, to_tag, caller, callee, caller_leg, callee_leg, start_time, ring_time, "
            "answer_time, status, reason, session_expires, extra FROM cdrs "
            "WHERE end_time IS NULL AND answer_time IS NOT NULL ORDER BY id").fetchall()
    finally:
        db.close()
    calls = []
    for (id_, call_id, from_tag, to_tag, caller, callee, caller_leg, callee_leg, start, ring, answer, status,
         reason, session_expires, extra) in rows:
        caller_transport, _, caller_addr = caller_leg.partition(" ")
        callee_transport, _, callee_addr = callee_leg.partition(" ")
        # the From/To as a name-addr of the user@host kept: what the live view shows of them again
        call = Call(int(id_), call_id, from_tag, f"<sip:{caller}>", f"<sip:{callee}>", parse_addr(caller_addr),
                    caller_transport, float(start))
        call.to_tag = to_tag
        call.callee_dest = parse_addr(callee_addr)
        call.callee_transport = callee_transport
        call.ring = float(ring or 0.0)
        call.answer = float(answer)
        call.status = int(status)
        call.reason = reason
        call.session_expires = int(session_expires)
        call.state = STATE_ANSWERED
        if extra:
            for name, value in json.loads(extra).items():
                call.add_field(str(name), str(value))
        calls.append(call)
    return calls


class CdrWriter:
    """The thread that writes CDRs: :meth:`submit` batches from the event loop, :meth:`close` at shutdown.
    ``open_ids``: the ids of the calls :func:`open_calls` returned (their rows exist, without an end).

    ``retention_days`` (0: keep forever) is applied at start and every :data:`PURGE_EVERY` seconds. Counters
    (``written``, ``batches``, ``errors``, ``pending``) are read by the admin view; a database error is logged,
    counted, and the batch retried with the next one. While commits fail the queue grows; past ``max_pending``
    records new ones are dropped (``dropped``, logged once until a commit succeeds again), so a dead disk costs
    a bounded amount of memory.
    """

    def __init__(self, path: str | Path, *, retention_days: int = 0, clock: Any = time.time,
                 open_ids: Iterable[int] = (), max_pending: int = MAX_PENDING) -> None:
        self.path = Path(path)
        self.max_pending = max_pending
        self.dropped = 0
        #: ids of the calls whose row is written without an end (their end is an UPDATE): the calls answered
        #: since the start, and ``open_ids``, those :func:`open_calls` gave back at the start
        self._open: set[int] = set(open_ids)
        self.retention_days = retention_days
        self.clock = clock
        self.written = 0
        self.batches = 0
        self.errors = 0
        self.purged = 0
        self._pending = 0
        self._thread_ns = 0
        self._failing = False
        self._failing_logged = False
        self._queue: queue.SimpleQueue[list[Call] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = connect(self.path)  # opened here so a bad path fails at start, not in the thread
        self._last_purge = 0.0
        self._purge()
        self._thread = threading.Thread(target=self._run, name="leansip-cdr", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records submitted and not committed yet (what a kill -9 now would lose)."""
        return self._pending

    def submit(self, calls: list[Call]) -> None:
        """Queue records to write (from the event loop: returns at once)."""
        if calls:
            with self._idle:
                if self._pending + len(calls) > self.max_pending:
                    if not self._failing_logged:  # once until a commit succeeds again
                        log.error("event=cdr_dropped reason=queue_full pending=%d limit=%d", self._pending,
                                  self.max_pending)
                        self._failing_logged = True
                    self.dropped += len(calls)
                    return
                self._pending += len(calls)
            self._queue.put(calls)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Until everything submitted is committed (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the thread, close the database."""
        self._queue.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._db.close()

    @property
    def thread_ns(self) -> int:
        """CPU time the writer thread has used, ns (benchmarks: bench/core_micro.py)."""
        return self._thread_ns

    def _run(self) -> None:
        helper_thread()  # off a --cpu pinned serving thread's CPU
        try:
            self._loop()
        finally:
            self._thread_ns = time.thread_time_ns()

    def _loop(self) -> None:
        retry: list[Call] = []
        while True:
            # a failed batch is tried again after a second (a locked or full disk), with whatever came since;
            # otherwise wake at least each minute, for the hourly purge
            try:
                item = self._queue.get(timeout=1.0 if retry else 60.0)
            except queue.Empty:
                item = []
            stop = item is None
            batch = retry + (item or [])
            while True:  # whatever else is queued goes into the same transaction
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.extend(more)
            retry = batch if batch and not self._write(batch) else []
            if self.retention_days and self.clock() - self._last_purge >= PURGE_EVERY:
                self._purge()
            if stop:
                if retry:
                    log.error("event=cdr_lost count=%d reason=%r", len(retry), "database error at shutdown")
                return

    def _write(self, batch: list[Call]) -> bool:
        """One transaction: a row per new call (whole when it ended, the answer-time part while it is up), an
        UPDATE of its end for a call whose row was written when it was answered. A call that appears twice in
        the batch (answered, then ended) is written once, as it is now."""
        db = self._db
        rows = record_rows(batch, self._open)
        try:
            db.execute("BEGIN")
            if rows.inserts:
                db.executemany(_INSERT, rows.inserts)
            if rows.ends:
                db.executemany(_END, rows.ends)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.errors += 1
            if not self._failing:  # once, not at every retry; the recovery is logged too
                log.error("event=cdr_write_failed count=%d error=%r retry_every=1s", len(batch), str(exc))
            self._failing = True
            return False
        if self._failing:
            self._failing = False
            log.warning("event=cdr_write_recovered count=%d", len(batch))
        self._open.update(rows.opened)
        self._open.difference_update(rows.closed)
        self.written += len(batch)
        self.batches += 1
        with self._idle:
            self._pending -= len(batch)
            self._failing_logged = False
            self._idle.notify_all()
        return True

    def _purge(self) -> None:
        self._last_purge = self.clock()
        if not self.retention_days:
            return
        cutoff = self._last_purge - self.retention_days * 86400.0
        try:
            cur = self._db.execute("DELETE FROM cdrs WHERE end_time IS NOT NULL AND start_time < ?", (cutoff,))
        except sqlite3.Error as exc:
            log.error("event=cdr_purge_failed error=%r", str(exc))
            return
        if cur.rowcount > 0:
            self.purged += cur.rowcount
            log.info("event=cdr_purged rows=%d older_than_days=%d", cur.rowcount, self.retention_days)


# --------------------------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Which records a query returns: a user (caller or callee, ``alice`` or ``alice@host``), a time range on
    the start (epoch seconds), a page (newest first)."""

    user: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    offset: int = 0


def query(path: str | Path, flt: CdrFilter) -> tuple[list[dict[str, Any]], int]:
    """The records ``flt`` selects (newest first) and how many match in all. Raises sqlite3.Error (e.g. when
    ``path`` is not a database); a missing file is an empty result."""
    if not Path(path).exists():
        return [], 0
    where, args = _where(flt)
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        (total,) = db.execute(f"SELECT COUNT(*) FROM cdrs{where}", args).fetchone()
        limit = max(0, min(flt.limit, MAX_CSV))
        cur = db.execute(f"SELECT {', '.join(_ROW_COLUMNS)} FROM cdrs{where} ORDER BY id DESC LIMIT ? OFFSET ?",
                         [*args, limit, max(0, flt.offset)])
        rows = [_record(dict(zip(_ROW_COLUMNS, r, strict=True))) for r in cur]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return [], 0
        raise
    finally:
        db.close()
    return rows, int(total)


def _where(flt: CdrFilter) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter. Times bound the key first (the id is the start time: a key range), then
    the start itself; a user is found by a scan of that range (no index per user: each would cost every call
    a B-tree insert on the straight path's budget)."""
    clauses: list[str] = []
    args: list[Any] = []
    if flt.since is not None:
        clauses.append("id >= ? AND start_time >= ?")
        args += [_id_at(flt.since), flt.since]
    if flt.until is not None:
        clauses.append("id < ? AND start_time < ?")
        args += [_id_at(flt.until) + _ID_SLACK, flt.until]
    if flt.user:
        if "@" in flt.user:
            clauses.append("(caller = ? OR callee = ?)")
            args += [flt.user, flt.user]
        else:
            pattern = flt.user.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%"
            clauses.append("(caller LIKE ? ESCAPE '\\' OR callee LIKE ? ESCAPE '\\' OR caller = ? OR callee = ?)")
            args += [pattern, pattern, flt.user, flt.user]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _split_leg(leg: str) -> tuple[str, str]:
    transport, _, addr = leg.partition(" ")
    return transport, addr


def _record(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the API shows it (times in epoch seconds; None where there is none)."""
    start = row["start_time"]
    ring = row["ring_time"]
    answer = row["answer_time"]
    first = min(t for t in (ring, answer) if t is not None) if (ring or answer) else None
    caller_transport, caller_addr = _split_leg(row["caller_leg"])
    callee_transport, callee_addr = _split_leg(row["callee_leg"])
    return {
        "id": row["id"],
        "start": start,
        "answer": answer,
        "end": row["end_time"],
        "duration": round(row["duration"], 3),
        "caller": row["caller"],
        "callee": row["callee"],
        "status": row["status"],
        "reason": row["reason"],
        "end_reason": row["end_reason"] or ("in progress" if row["end_time"] is None else ""),
        "hangup": row["hangup"],
        "call_id": row["call_id"],
        "caller_addr": caller_addr,
        "caller_transport": caller_transport,
        "callee_addr": callee_addr,
        "callee_transport": callee_transport,
        "ring": ring,
        "setup": round(first - start, 3) if first is not None else None,
        "extra": json.loads(row["extra"]) if row["extra"] else {},
    }


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    """Records as CSV (RFC 4180): :data:`COLUMNS`, then one column per extra field any record has. Times are
    ISO 8601 UTC, so a spreadsheet reads them as dates."""
    records = list(records)
    extra_names = sorted({name for r in records for name in r.get("extra", {})})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*COLUMNS, *extra_names])
    for r in records:
        row = []
        for name in COLUMNS:
            value = r.get(name)
            if name in ("start", "answer", "end", "ring"):
                value = _iso(value)
            row.append("" if value is None else value)
        extra = r.get("extra", {})
        row.extend(extra.get(name, "") for name in extra_names)
        writer.writerow(row)
    return out.getvalue()


def parse_since(text: str, now: float) -> float:
    """A point in time from the command line or the API: epoch seconds (``1714557600``), an ISO date or date
    and time (``2024-05-01``, ``2024-05-01T10:00``, UTC unless it says otherwise), or an age (``90s``, ``30m``,
    ``12h``, ``7d``: that long before ``now``). Raises ValueError with the accepted forms."""
    text = text.strip()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    if len(text) > 1 and text[-1] in units and text[:-1].isascii() and text[:-1].isdigit():
        return now - int(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"bad time {text!r}: give epoch seconds, an ISO date/time like 2024-05-01T10:00, "
                         "or an age like 30m, 12h, 7d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _local(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _talk(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def render(records: list[dict[str, Any]], total: int) -> str:
    """Records as a table for a person (``leansip cdr``): local start time, talk time, who, how it ended."""
    if not records:
        return "no call records match"
    headers = ["START (local)", "TALK", "CALLER", "CALLEE", "STATUS", "ENDED BY", "HANGUP", "CALL-ID"]
    rows = [[_local(r["start"]), _talk(r["duration"]), r["caller"], r["callee"],
             f"{r['status']} {r['reason']}".strip() if r["status"] else "-", r["end_reason"] or "-",
             r["hangup"] or "-", r["call_id"]] for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if total > len(records):
        lines.append(f"({len(records)} of {total}; --limit N for more)")
    return "\n".join(lines)
