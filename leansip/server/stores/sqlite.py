"""SQLite-persisted binding store: memory reads, batched write-through.

Theory of operation
-------------------
Reads (``get``/``lookup``) are served by an embedded
:class:`~leansip.server.stores.memory.MemoryStore` and never touch SQLite, so the
proxy's hot path costs the same as the plain memory store.  Writes update memory at
once and record the change in ``_pending`` (one entry per ``(aor, contact_key)``,
so a binding refreshed ten times between flushes is written once).  :meth:`flush`
writes all pending changes in a single transaction.  At start-up the table is
loaded into memory, dropping rows that expired while the server was down.

Durability trade-off (the product requires surviving ``kill -9``)
---------------------------------------------------------------
The database runs in WAL mode with ``synchronous=NORMAL``: a committed transaction
is in the WAL file (the OS page cache) when ``COMMIT`` returns, so it survives the
process being killed; only an OS crash or power cut can lose the last commits,
which is acceptable for registrations that UAs refresh anyway.  What is *not*
yet committed is lost on SIGKILL: at most the changes of the last
``flush_interval`` seconds (default 50 ms).  The server must call :meth:`flush`
every ``flush_interval`` seconds from its timer and on shutdown (``close`` does
it).  ``flush_interval=0`` commits every ``put``/``remove`` synchronously: no loss
window, but one fsync-free commit (~tens of microseconds to a millisecond) per
REGISTER on the event loop.  Bindings reaped by :meth:`expire` are deleted with
the next flush; if that flush is lost, the load-time purge drops them anyway.

Connection ids (``conn_id``) name TCP/TLS/WS connections of the process that
stored them, so they are cleared on load: after a restart, the proxy must fall
back to ``source``/``received`` (or the UA re-registers over a new connection).

Not thread-safe: use it from the event loop thread only (sqlite3's default
``check_same_thread`` enforces this).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leansip.server.location import Binding
from leansip.server.stores.memory import MemoryStore

__all__ = ["NotADatabase", "SqliteStore", "check_database_file"]

#: the first 16 bytes of every SQLite 3 database file (https://www.sqlite.org/fileformat.html, 1.3)
SQLITE_HEADER = b"SQLite format 3\x00"


class NotADatabase(ValueError):
    """The path names something that is not a SQLite database (a typo, a users file): it was not opened."""


def check_database_file(path: str | Path) -> None:
    """Refuse, before SQLite opens it, a path that exists and is not a SQLite database (or is a directory).

    SQLite would open any file and fail only at the first statement, after making ``-wal``/``-shm`` files next
    to it; a file that is not ours is never opened. A missing or empty file is fine: it becomes the database.
    Raises :class:`NotADatabase`, or ``OSError`` if the file cannot be read.
    """
    p = Path(path)
    if str(path) == ":memory:" or not p.exists():
        return
    if p.is_dir():
        raise NotADatabase(f"{p} is a directory")
    with p.open("rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise NotADatabase(f"{p} is not a SQLite database (it does not start with the SQLite header)")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    contact TEXT NOT NULL,
    q REAL NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    source_ip TEXT NOT NULL,
    source_port INTEGER NOT NULL,
    transport TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    registered_at REAL NOT NULL,
    instance TEXT,
    reg_id INTEGER,
    path TEXT NOT NULL,
    received TEXT,
    conn_id TEXT,
    PRIMARY KEY (aor, contact_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bindings_expires_at ON bindings (expires_at);
"""

_COLUMNS = (
    "aor, contact_key, contact, q, expires_at, call_id, cseq, source_ip, source_port, transport, "
    "user_agent, registered_at, instance, reg_id, path, received, conn_id"
)
_UPSERT = f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES ({', '.join('?' * 17)})"
_DELETE = "DELETE FROM bindings WHERE aor = ? AND contact_key = ?"

_Row = tuple[object, ...]


def _to_row(key: str, b: Binding) -> _Row:
    return (
        b.aor, key, b.contact, b.q, b.expires_at, b.call_id, b.cseq, b.source[0], b.source[1],
        b.transport, b.user_agent, b.registered_at, b.instance, b.reg_id, json.dumps(b.path),
        b.received, b.conn_id,
    )  # fmt: skip


def _from_row(r: Any) -> tuple[str, Binding]:
    (aor, key, contact, q, expires_at, call_id, cseq, ip, port, transport, ua, registered_at,
     instance, reg_id, path, received, _conn_id) = r  # fmt: skip
    return key, Binding(
        aor=aor, contact=contact, q=q, expires_at=expires_at, call_id=call_id, cseq=cseq,
        source=(ip, port), transport=transport, user_agent=ua, registered_at=registered_at,
        instance=instance, reg_id=reg_id, path=list(json.loads(path)), received=received,
        conn_id=None,  # process-local; see the module docstring
    )  # fmt: skip


class SqliteStore:
    """A :class:`MemoryStore` whose changes are persisted to SQLite in batches.

    ``path`` is the database file (created if missing; ``":memory:"`` works for
    tests).  ``now`` is the current wall-clock time, used to drop rows that
    expired while the server was down.  Raises :class:`NotADatabase` (without
    opening it) for a file that is not a SQLite database, ``sqlite3.Error`` if
    the database is not usable.
    """

    __slots__ = ("_mem", "_db", "_pending", "flush_interval", "path", "flushes")

    def __init__(self, path: str | Path, *, now: float, flush_interval: float = 0.05) -> None:
        if flush_interval < 0:
            raise ValueError("flush_interval must be >= 0")
        self.path = str(path)
        check_database_file(path)
        self.flush_interval = float(flush_interval)
        self._mem = MemoryStore()
        # (aor, key) -> binding to write, or None to delete.
        self._pending: dict[tuple[str, str], Binding | None] = {}
        #: Number of transactions committed by flush() (for tests and metrics).
        self.flushes = 0
        # Autocommit mode: we issue BEGIN/COMMIT ourselves so a batch is one transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._load(now)
        except BaseException:
            self._db.close()
            raise

    def _load(self, now: float) -> None:
        self._db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM bindings"):
            key, b = _from_row(row)
            self._mem.put(b, key)

    # -- reads: memory only ------------------------------------------------------
    def get(self, aor: str, key: str) -> Binding | None:
        """From memory, O(1)."""
        return self._mem.get(aor, key)

    def lookup(self, aor: str) -> Iterable[Binding]:
        """From memory, no SQL."""
        return self._mem.lookup(aor)

    def count(self) -> int:
        """Bindings in memory (flushed or not)."""
        return self._mem.count()

    def aors(self) -> Iterable[str]:
        """AORs in memory."""
        return self._mem.aors()

    @property
    def memory(self) -> MemoryStore:
        """The in-memory copy that answers every read (the location service reads it directly)."""
        return self._mem

    @property
    def pending(self) -> int:
        """Changes not yet written to SQLite (what a SIGKILL now would lose)."""
        return len(self._pending)

    @property
    def heap_ops(self) -> int:
        """Heap operations of the embedded memory store."""
        return self._mem.heap_ops

    # -- writes ------------------------------------------------------------------
    def put(self, binding: Binding, key: str) -> None:
        """Store in memory now; persist at the next flush (or now if interval is 0)."""
        self._mem.put(binding, key)
        self._pending[(binding.aor, key)] = binding
        if self.flush_interval == 0:
            self.flush()

    def remove(self, aor: str, key: str) -> Binding | None:
        """Remove from memory now; delete the row at the next flush."""
        b = self._mem.remove(aor, key)
        if b is not None:
            self._pending[(aor, key)] = None
            if self.flush_interval == 0:
                self.flush()
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor``; rows go at the next flush."""
        removed = self._mem.pop_aor(aor)
        for k in removed:
            self._pending[(aor, k)] = None
        if removed and self.flush_interval == 0:
            self.flush()
        return list(removed.values())

    def expire(self, now: float) -> list[Binding]:
        """Reap from memory (O(expired)); row deletes go at the next flush."""
        reaped = self._mem.expire_with_keys(now)
        for key, b in reaped:
            self._pending[(b.aor, key)] = None
        if reaped and self.flush_interval == 0:
            self.flush()
        return [b for _, b in reaped]

    def flush(self) -> None:
        """Write all pending changes in one transaction.

        On a database error the batch is kept (newer changes win) and the error
        propagates, so the next flush retries it.
        """
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        upserts = [_to_row(k, b) for (_, k), b in batch.items() if b is not None]
        deletes = [ak for ak, b in batch.items() if b is None]
        db = self._db
        try:
            db.execute("BEGIN")
            if deletes:
                db.executemany(_DELETE, deletes)
            if upserts:
                db.executemany(_UPSERT, upserts)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            batch.update(self._pending)
            self._pending = batch
            raise
        self.flushes += 1

    def close(self) -> None:
        """Flush pending changes and close the database."""
        try:
            self.flush()
        finally:
            self._db.close()
            self._mem.close()
