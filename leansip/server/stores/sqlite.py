"""SQLite-persisted binding store: memory reads, writes committed in batches behind the straight path.

Theory of operation
-------------------
A :class:`~leansip.server.stores.replica.ReplicaStore`: reads (``get``/``lookup``) are served by the in-memory
replica and never touch SQLite, so the proxy's hot path costs the same as the plain memory store; writes update
the replica at once and are recorded as pending changes (one per ``(aor, contact_key)``), which
:meth:`SqliteStore.write_batch` writes in a single transaction.  At start-up the table is loaded into memory,
dropping rows that expired while the server was down.

Durability (``durability``; ``leansip serve --durability``)
-----------------------------------------------------------
``durable`` (the server's default): **no acknowledged registration is lost.**  The registrar's 200 OK is held
until the batch holding its binding is committed (the core marks the reply with
:meth:`~leansip.server.stores.replica.ReplicaStore.write_ticket`, the shell's group committer,
:mod:`leansip.io.commit`, sends it once the commit returns).  Commits run in a writer thread, one at a time:
while one commits, the changes of every REGISTER arriving meanwhile gather into the next batch (group commit),
so the number of commits per second falls as the load rises and the event loop never waits for the disk.
The database runs in WAL mode with ``synchronous=FULL``: the WAL is fsynced at each commit, so a 200 OK means
the binding is on disk, surviving not only ``kill -9`` (which ``NORMAL`` already survives: the WAL is in the
OS page cache when COMMIT returns) but also an OS crash or a power cut, which ``NORMAL`` may lose.  That is
the point of holding the reply at all; group commit makes the price one fsync per batch (0.3-20 ms on the
development VM, paid in the writer thread), not one per REGISTER.  A batch waits 2 ms before its commit starts
(:data:`leansip.io.commit.COMMIT_GATHER`), so that at moderate rates an fsync serves several REGISTERs.

Under ``serve --bare`` the polling thread commits the batches itself (:class:`leansip.io.commit.PolledCommitter`)
and the WAL's sync is taken out of the commit: :meth:`SqliteStore.sync_by_caller` sets ``synchronous=NORMAL``,
whose commit only writes the WAL (tens of microseconds, no sync), and the caller syncs the WAL file before it
counts the batch as committed (``fdatasync`` on a thread with no Python in it, :mod:`leansip.io.diskflush`).
That is ``FULL`` exactly: "With synchronous=FULL in WAL mode, an additional sync operation of the WAL file
happens after each transaction commit" is the whole difference from ``NORMAL``
(https://www.sqlite.org/pragma.html#pragma_synchronous); every other sync (the WAL header's when the WAL is
reused, a checkpoint's) SQLite still does itself under ``NORMAL``.  The automatic checkpoint, which would run
inside a commit on the polling thread (two syncs and the copy of about 1,000 pages), is turned off:
:meth:`SqliteStore.checkpoint` runs it from a helper thread on a second connection.

``relaxed`` (the behaviour before durable became the default): replies go out at once; the server calls
:meth:`flush` every ``flush_interval`` seconds (default 50 ms) on its event loop, with
``synchronous=NORMAL``.  A SIGKILL loses what changed in the last ``flush_interval`` seconds, an OS crash
possibly a little more; registrations that UAs refresh anyway, for the cheapest writes.
``flush_interval=0`` commits every change synchronously (tests).  Bindings reaped by :meth:`expire` are
deleted with the next batch; if that batch is lost, the load-time purge drops them anyway.

Connection ids (``conn_id``) name TCP/TLS/WS connections of the process that
stored them, so they are cleared on load: after a restart, the proxy must fall
back to ``source``/``received`` (or the UA re-registers over a new connection).

Threads: the connection is opened with ``check_same_thread=False`` because :meth:`write_batch` runs in the
group committer's writer thread; only one batch is written at a time and the loading (start-up) and
``close`` happen when none is, so the connection is never used by two threads at once.  :meth:`checkpoint`
has a connection of its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from leansip.server.location import Binding
from leansip.server.stores.replica import Batch, ReplicaStore

__all__ = ["DURABILITIES", "NotADatabase", "SqliteStore", "check_database_file"]

#: ``durability`` values: see the module docstring
DURABILITIES = ("durable", "relaxed")

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
-- no index on expires_at: only the load reads by it (one scan at start-up), and keeping an index costs every
-- write of a binding about 40 % more (4.5 of 11.6 us a row in a batch of ten, measured)
DROP INDEX IF EXISTS bindings_expires_at;
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
        b.transport, b.user_agent, b.registered_at, b.instance, b.reg_id, json.dumps(b.path) if b.path else "[]",
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


class SqliteStore(ReplicaStore):
    """A :class:`ReplicaStore` whose changes are committed to SQLite in batches.

    ``path`` is the database file (created if missing; ``":memory:"`` works for tests).  ``now`` is the current
    wall-clock time, used to drop rows that expired while the server was down.  ``durability`` is ``durable``
    (replies wait for the commit; batches come from the shell's group committer) or ``relaxed`` (batches every
    ``flush_interval`` seconds).  Raises :class:`NotADatabase` (without opening it) for a file that is not a
    SQLite database, ``sqlite3.Error`` if the database is not usable.
    """

    __slots__ = ("_db", "path", "flushes", "_wal_fd", "_checkpointer")

    def __init__(self, path: str | Path, *, now: float, durability: str = "relaxed",
                 flush_interval: float = 0.05) -> None:
        if flush_interval < 0:
            raise ValueError("flush_interval must be >= 0")
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, got {durability!r}")
        durable = durability == "durable"
        super().__init__(durable=durable, flush_interval=0.0 if durable else float(flush_interval))
        self.path = str(path)
        check_database_file(path)
        #: Number of batches committed (for tests and metrics).
        self.flushes = 0
        #: the WAL file, open for syncing it, once :meth:`sync_by_caller` handed its sync to the caller
        self._wal_fd: int | None = None
        #: the second connection :meth:`checkpoint` uses
        self._checkpointer: sqlite3.Connection | None = None
        # Autocommit mode: we issue BEGIN/COMMIT ourselves so a batch is one transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=" + ("FULL" if durable else "NORMAL"))
            self._db.executescript(_SCHEMA)
            self._load(now)
        except BaseException:
            self._db.close()
            raise

    def _load(self, now: float) -> None:
        self._db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
        mem = self.memory
        for row in self._db.execute(f"SELECT {_COLUMNS} FROM bindings"):
            key, b = _from_row(row)
            mem.put(b, key)

    # -- writes: the replica now; SQLite with the next batch (at once when relaxed with interval 0) --------
    def _synchronous(self) -> None:
        if self.flush_interval == 0 and not self.durable:
            self.flush()

    def put(self, binding: Binding, key: str) -> None:
        """Store in memory now; persist with the next batch."""
        super().put(binding, key)
        self._synchronous()

    def remove(self, aor: str, key: str) -> Binding | None:
        """Remove from memory now; delete the row with the next batch."""
        b = super().remove(aor, key)
        if b is not None:
            self._synchronous()
        return b

    def remove_all(self, aor: str) -> list[Binding]:
        """Remove every binding of ``aor``; rows go with the next batch."""
        removed = super().remove_all(aor)
        if removed:
            self._synchronous()
        return removed

    def expire(self, now: float) -> list[Binding]:
        """Reap from memory (O(expired)); row deletes go with the next batch."""
        reaped = super().expire(now)
        if reaped:
            self._synchronous()
        return reaped

    # -- batches -------------------------------------------------------------------
    def write_batch(self, batch: Batch) -> None:
        """Write one batch in one transaction, durably (any thread; one batch at a time): the commit, and the
        WAL's sync when it is the caller's (:meth:`sync_by_caller`).  On a database or disk error the error
        propagates: the caller hands the batch to :meth:`batch_failed` so the next batch retries it."""
        self.commit_batch(batch)
        if self._wal_fd is not None:
            os.fdatasync(self._wal_fd)

    def commit_batch(self, batch: Batch) -> None:
        """Write one batch in one transaction (rolled back on an error, which propagates).  Durable when it
        returns unless the WAL's sync is the caller's: then only once the caller has synced :meth:`wal_fd`."""
        changes = batch.changes
        upserts = [_to_row(k, b) for (_, k), b in changes.items() if b is not None]
        deletes = [ak for ak, b in changes.items() if b is None]
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
            raise

    # -- the WAL's sync handed to the caller (serve --bare) ---------------------------------
    def sync_by_caller(self) -> bool:
        """From now on :meth:`commit_batch` does not sync the WAL (``synchronous=NORMAL``) and SQLite makes no
        automatic checkpoints: the caller syncs :meth:`wal_fd` after each commit before it counts the batch
        as committed, and calls :meth:`checkpoint` now and then (see the module docstring).  False (nothing
        changed) for a database that is not a file in WAL mode (``:memory:``)."""
        if self._wal_fd is not None:
            return True
        mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            return False
        try:
            # SQLite made the WAL at the first statement in WAL mode (the schema's) and syncs its directory
            # entry itself, with the file's first sync; it stays until the last connection closes
            fd = os.open(self.path + "-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._wal_fd = fd
        return True

    def wal_fd(self) -> int:
        """The WAL file's descriptor, for the caller's sync (only after :meth:`sync_by_caller`)."""
        if self._wal_fd is None:
            raise RuntimeError("the WAL's sync is SQLite's: call sync_by_caller() first")
        return self._wal_fd

    def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL's committed pages into the database (``wal_checkpoint(PASSIVE)``: it never waits for
        the writer, nor the writer for it), on a second connection, from any one thread at a time; SQLite
        syncs the WAL before and the database after.  Returns (pages in the WAL, pages copied)."""
        conn = self._checkpointer
        if conn is None:
            conn = self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        _busy, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log_pages), int(copied)

    def batch_done(self, batch: Batch) -> None:
        """Committed: count it."""
        super().batch_done(batch)
        self.flushes += 1

    def close(self) -> None:
        """Flush pending changes and close the database."""
        try:
            self.flush()
        finally:
            if self._checkpointer is not None:
                self._checkpointer.close()
            self._db.close()  # the last connection: SQLite checkpoints and removes the WAL
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            self.memory.close()
