"""User store: who may register and what their digest secret is.

Mechanism apart from storage (Kamailio ``auth`` vs ``auth_db``): the digest code
(RFC 7616 / RFC 8760) asks :meth:`UserRecord.ha1` for ``H(username:realm:password)``
and never sees where users come from.  Users live in a text file or an SQLite
database; :func:`load_users` picks by file extension and returns a
:class:`UserStore` (an O(1) dict lookup, so authentication never touches disk).

Text format (one user per line; ``#`` starts a comment line; blank lines ignored)::

    alice:secret                          # plaintext password
    bob:example.com:<32 hex MD5 HA1>      # HA1 = md5("bob:example.com:password")
    carol:example.com:<64 hex>:SHA-256    # HA1 = sha256("carol:example.com:password")

Because ``:`` separates fields, neither passwords nor realms may contain one, and
leading/trailing whitespace of a line is ignored.  Usernames must be SIP user
tokens (RFC 3261 25.1 ``user``), so they can appear in a From/To URI as is.  A bad
line raises :class:`UserFileError` naming the file, the line and the problem;
a duplicate username is an error too (which of two passwords is meant?).

SQLite: table ``users(username TEXT PRIMARY KEY, password TEXT, realm TEXT,
ha1 TEXT, algorithm TEXT)``; a row has either ``password`` or ``realm`` + ``ha1``.

:func:`add_user`, :func:`remove_user` and :func:`list_users` edit either kind of
source (the text file is rewritten atomically, comments kept).  Concurrent edits
by two processes are not coordinated: last rewrite wins.
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias

from leansip.sip.digest_hash import compute_ha1

__all__ = [
    "DEMO_USERS_PATH",
    "UserFileError",
    "UserRecord",
    "UserStore",
    "add_user",
    "demo_users",
    "list_users",
    "load_users",
    "remove_user",
]

#: The demo users shipped with the package (alice, bob, carol, callee, callee-probe).
DEMO_USERS_PATH: Final = Path(__file__).resolve().parent.parent / "data" / "users.txt"

SQLITE_SUFFIXES: Final = frozenset({".db", ".sqlite", ".sqlite3"})

# RFC 3261 25.1: user = 1*( unreserved / escaped / user-unreserved )
_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]+")

# Digest algorithm token (RFC 7616 3.3, case-insensitive) -> hashlib name.  The
# "-sess" variants start from the same HA1; the digest code mixes in the nonces.
_HASH_OF: Final = {
    "MD5": "md5",
    "MD5-SESS": "md5",
    "SHA-256": "sha256",
    "SHA-256-SESS": "sha256",
    "SHA-512-256": "sha512_256",
    "SHA-512-256-SESS": "sha512_256",
}

# Algorithms a stored HA1 may be in, with the hex length that hash produces.
_STORED_ALGS: Final = {"MD5": 32, "SHA-256": 64}
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS users ("
    "username TEXT PRIMARY KEY, password TEXT, realm TEXT, ha1 TEXT, algorithm TEXT)"
)


class UserFileError(ValueError):
    """A users file or table is malformed; ``line`` is 1-based (``None`` for SQLite)."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


def _check_username(username: str) -> None:
    if not username:
        raise ValueError("empty username")
    if not _USER_RE.fullmatch(username):
        bad = next((c for c in username if not _USER_RE.fullmatch(c)), "%")
        raise ValueError(f"username {username!r} is not a SIP user token (bad character {bad!r})")


def _check_field(what: str, value: str) -> None:
    """Reject what would break the one-line text format."""
    if ":" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} must not contain ':' or a line break")
    if value != value.strip():
        raise ValueError(f"{what} must not start or end with whitespace")


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user: a plaintext ``password``, or a precomputed ``stored_ha1`` for ``realm``.

    Storing HA1 instead of the password means a leaked file does not reveal
    passwords, at the price of binding the user to one realm and one algorithm.
    Construction raises ``ValueError`` if the fields are inconsistent.
    """

    username: str
    # repr=False: records end up in logs and tracebacks; secrets must not.
    password: str | None = field(default=None, repr=False)
    realm: str | None = None
    stored_ha1: str | None = field(default=None, repr=False)
    algorithm: str = "MD5"

    def __post_init__(self) -> None:
        _check_username(self.username)
        if self.password is not None:
            if self.stored_ha1 is not None or self.realm is not None:
                raise ValueError("give either a password or realm+HA1, not both")
            if self.password == "":
                raise ValueError("empty password")
            return
        if self.stored_ha1 is None or self.realm is None:
            raise ValueError("a user needs a password or both realm and HA1")
        if self.realm == "":
            raise ValueError("empty realm")
        alg = self.algorithm.upper()
        if alg not in _STORED_ALGS:
            raise ValueError(f"unsupported HA1 algorithm {self.algorithm!r} (MD5 or SHA-256)")
        want = _STORED_ALGS[alg]
        if len(self.stored_ha1) != want or not _HEX_RE.fullmatch(self.stored_ha1):
            raise ValueError(f"{alg} HA1 must be {want} hex digits")
        # Normalize so comparisons and rewrites are stable.
        object.__setattr__(self, "algorithm", alg)
        object.__setattr__(self, "stored_ha1", self.stored_ha1.lower())

    def ha1(self, algorithm: str, realm: str) -> str | None:
        """Lowercase hex ``H(username:realm:password)`` for a digest challenge.

        ``algorithm`` is the challenge's token (``MD5``, ``SHA-256``, their
        ``-sess`` forms, or ``SHA-512-256``).  Returns ``None`` when this user
        cannot answer it: unknown algorithm, or a stored HA1 made for another
        realm or algorithm.  The caller then fails authentication (403/401).
        """
        if self.password is not None:
            return _password_ha1(self.username, self.password, algorithm, realm)
        name = _HASH_OF.get(algorithm.upper())
        if name is None:
            return None
        if realm != self.realm or name != _HASH_OF[self.algorithm]:
            return None
        return self.stored_ha1

    def to_line(self) -> str:
        """The text-file line for this user (without newline)."""
        if self.password is not None:
            _check_field("password", self.password)
            return f"{self.username}:{self.password}"
        assert self.realm is not None and self.stored_ha1 is not None
        _check_field("realm", self.realm)
        line = f"{self.username}:{self.realm}:{self.stored_ha1}"
        return line if self.algorithm == "MD5" else f"{line}:{self.algorithm}"


def _password_ha1(username: str, password: str, algorithm: str, realm: str) -> str | None:
    """:meth:`UserRecord.ha1` of a user with a password."""
    if algorithm.upper() not in _HASH_OF:
        return None
    return compute_ha1(username, realm, password, algorithm)


#: a user as the store keeps one: the password of a password user (its name is the key: a UserRecord was 72
#: bytes more a user, 7 MB at 100,000), the record of a user with a stored HA1
_Stored: TypeAlias = UserRecord | str


def _stored(record: UserRecord) -> _Stored:
    return record.password if record.password is not None else record


def _record(username: str, stored: _Stored) -> UserRecord:
    return stored if isinstance(stored, UserRecord) else UserRecord(username, password=stored)


def demo_users(count: int, *, start: int = 0) -> Iterator[UserRecord]:
    """``userN`` / ``passN`` for N in [start, start+count): the benchmark convention.

    Generated rather than listed in ``users.txt`` so the shipped file stays small
    and the harness can ask for as many as it needs.
    """
    for i in range(start, start + count):
        yield UserRecord(f"user{i}", password=f"pass{i}")


class UserStore:
    """Users by name, O(1); optionally backed by the file/database they came from.

    ``add``/``remove`` (the admin page) write through to ``source`` first and only
    then change memory, so a failed write leaves both unchanged.  Records added
    with ``persist=False`` (e.g. generated bench users) live in memory only.

    Which users are in ``source`` is kept as the set of those that are *not* (``_memory_only``, usually empty):
    a set of every name was 60 bytes a user, 6 MB with 100,000 users.
    """

    __slots__ = ("_users", "_memory_only", "source", "_ha1", "_ha1_count", "_ha1_limit", "_memo", "_memo_realm",
                 "_memo_algorithm")

    def __init__(self, records: Iterable[UserRecord] = (), *, source: str | Path | None = None,
                 ha1_memo: int = 1 << 15):
        self._users: dict[str, _Stored] = {}
        #: names held in memory only (not in ``source``): bench users, ``add(persist=False)``
        self._memory_only: set[str] = set()
        #: (realm, algorithm) -> {username: HA1}: the HA1s ha1_lookup made (no key tuple an entry: 170 bytes where
        #: a (name, realm, algorithm) key made it 250)
        self._ha1: dict[tuple[str, str], dict[str, str | None]] = {}
        self._ha1_count = 0
        self._ha1_limit = ha1_memo  # HA1s kept by ha1_lookup; past this many the memo starts over
        #: the memo of the last (realm, algorithm) asked for: a server asks for one pair nearly always
        self._memo: dict[str, str | None] = {}
        self._memo_realm = ""
        self._memo_algorithm = ""
        self.source = Path(source) if source is not None else None
        for r in records:
            if r.username in self._users:
                raise ValueError(f"duplicate user {r.username!r}")
            self._users[r.username] = _stored(r)

    def get(self, username: str) -> UserRecord | None:
        """The user or ``None``; usernames are case-sensitive like SIP userinfo."""
        stored = self._users.get(username)
        return None if stored is None else _record(username, stored)

    def ha1_lookup(self, username: str, realm: str, algorithm: str) -> str | None:
        """The user's HA1 for a digest check (:meth:`UserRecord.ha1`), or None: the authenticator's lookup.

        A password user's HA1 is a hash of the password; it is made once and remembered (it is as secret as the
        password, which is in memory anyway), so a registration costs one hash (the response) instead of two.
        Unknown users are not remembered (a guesser would fill the memo); every change of users clears it."""
        if realm == self._memo_realm and algorithm == self._memo_algorithm:
            memo = self._memo
        else:
            memo = self._memo_of(realm, algorithm)
        if username in memo:
            return memo[username]
        stored = self._users.get(username)
        if stored is None:
            return None
        if isinstance(stored, str):
            ha1 = _password_ha1(username, stored, algorithm, realm)
        else:
            ha1 = stored.ha1(algorithm, realm)
        if self._ha1_count >= self._ha1_limit:
            self._forget_ha1s()
            memo = self._memo_of(realm, algorithm)
        memo[username] = ha1
        self._ha1_count += 1
        return ha1

    def _memo_of(self, realm: str, algorithm: str) -> dict[str, str | None]:
        memo = self._ha1.get((realm, algorithm))
        if memo is None:
            memo = self._ha1[(realm, algorithm)] = {}
        self._memo, self._memo_realm, self._memo_algorithm = memo, realm, algorithm
        return memo

    def remembered(self) -> dict[tuple[str, str, str], str | None]:
        """The HA1s remembered, by (username, realm, algorithm) (tests)."""
        return {(name, realm, alg): ha1 for (realm, alg), memo in self._ha1.items() for name, ha1 in memo.items()}

    def _forget_ha1s(self) -> None:
        """Every change of users forgets the HA1s made (and so does a full memo: it starts over)."""
        self._ha1 = {}
        self._ha1_count = 0
        self._memo, self._memo_realm, self._memo_algorithm = {}, "", ""

    def exists(self, username: str) -> bool:
        return username in self._users

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, username: object) -> bool:
        return username in self._users

    def __iter__(self) -> Iterator[UserRecord]:
        return iter([_record(name, stored) for name, stored in self._users.items()])

    def usernames(self) -> list[str]:
        """Sorted names, for the admin view."""
        return sorted(self._users)

    def extend(self, records: Iterable[UserRecord]) -> None:
        """Add memory-only users (bench users); existing names are replaced."""
        self._forget_ha1s()
        users, memory_only = self._users, self._memory_only
        for r in records:
            if r.username not in users:  # a name from source replaced in memory stays the source's
                memory_only.add(r.username)
            users[r.username] = _stored(r)

    def add(self, record: UserRecord, *, replace: bool = False, persist: bool = True) -> None:
        """Add (or with ``replace`` update) a user, writing through to ``source``.

        Raises ``ValueError`` if the user exists and ``replace`` is false, and
        whatever the write raises (``OSError``, ``sqlite3.Error``).
        """
        exists = record.username in self._users
        if exists and not replace:
            raise ValueError(f"user {record.username!r} already exists")
        if persist and self.source is not None:
            _write_record(self.source, record, replace=True)
            self._memory_only.discard(record.username)
        elif not exists:
            self._memory_only.add(record.username)
        self._users[record.username] = _stored(record)
        self._forget_ha1s()

    def remove(self, username: str) -> bool:
        """Remove a user (from ``source`` too); ``False`` if there was none."""
        if username not in self._users:
            return False
        if self.source is not None and username not in self._memory_only:
            remove_user(self.source, username)
        self._memory_only.discard(username)
        del self._users[username]
        self._forget_ha1s()
        return True

    def reload(self) -> None:
        """Re-read ``source`` (e.g. on SIGHUP), keeping memory-only users.

        Raises :class:`UserFileError` and leaves the store unchanged if the
        source is now malformed.
        """
        if self.source is None:
            return
        fresh = list_users(self.source)
        users = {r.username: _stored(r) for r in fresh}
        extra = {n: self._users[n] for n in self._memory_only if n in self._users and n not in users}
        self._users = {**extra, **users}
        self._memory_only = set(extra)
        self._forget_ha1s()


# -- sources -------------------------------------------------------------------------


def _read_exact(path: Path) -> str:
    """File text with line endings untouched, so a rewrite changes only our line."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _is_sqlite(path: Path) -> bool:
    return path.suffix.lower() in SQLITE_SUFFIXES


def _parse_line(path: Path, lineno: int, line: str) -> UserRecord:
    fields = line.split(":")
    try:
        if len(fields) == 2:
            _check_username(fields[0])
            return UserRecord(fields[0], password=fields[1])
        if len(fields) in (3, 4):
            _check_username(fields[0])
            alg = fields[3] if len(fields) == 4 else "MD5"
            return UserRecord(fields[0], realm=fields[1], stored_ha1=fields[2], algorithm=alg)
    except ValueError as e:
        raise UserFileError(path, lineno, str(e)) from None
    raise UserFileError(
        path,
        lineno,
        f"expected username:password or username:realm:HA1[:algorithm], got {len(fields)} fields",
    )


def _parse_text(path: Path, text: str) -> list[tuple[int, UserRecord]]:
    """(0-based line index, record) for every user line; raises UserFileError."""
    out: list[tuple[int, UserRecord]] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rec = _parse_line(path, i + 1, line)
        if rec.username in seen:
            raise UserFileError(
                path, i + 1, f"duplicate user {rec.username!r} (first on line {seen[rec.username]})"
            )
        seen[rec.username] = i + 1
        out.append((i, rec))
    return out


def _record_from_row(
    path: Path, row: tuple[str, str | None, str | None, str | None, str | None]
) -> UserRecord:
    username, password, realm, ha1, algorithm = row
    try:
        if password is not None:
            return UserRecord(username, password=password)
        return UserRecord(username, realm=realm, stored_ha1=ha1, algorithm=algorithm or "MD5")
    except ValueError as e:
        raise UserFileError(path, None, f"user {username!r}: {e}") from None


def _sqlite_rows(path: Path) -> list[UserRecord]:
    if not path.exists():
        raise FileNotFoundError(path)
    db = sqlite3.connect(path)
    try:
        try:
            rows = db.execute(
                "SELECT username, password, realm, ha1, algorithm FROM users ORDER BY rowid"
            ).fetchall()
        except sqlite3.OperationalError as e:
            raise UserFileError(path, None, f"no usable users table ({e})") from None
    finally:
        db.close()
    return [_record_from_row(path, r) for r in rows]


def list_users(path: str | Path) -> list[UserRecord]:
    """Every user of a text file (file order) or SQLite database.

    Raises ``FileNotFoundError`` and :class:`UserFileError`.
    """
    p = Path(path)
    if _is_sqlite(p):
        return _sqlite_rows(p)
    return _read_records(p)


def _read_records(path: Path) -> list[UserRecord]:
    """The records of a users file, read a line at a time: what :func:`_parse_text` finds in its whole text.

    Why not the whole text: its lines, their numbers and a dict of names to lines were all alive at once, between
    the records that stay, and left the heap that much bigger (42 MB of RSS for 100,000 users against 24 MB). A
    duplicate is found by a set of the names; its message (with the first one's line) comes from the slow way."""
    out: list[UserRecord] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", newline="") as f:
        lineno = 0
        for raw in f:
            for part in raw.splitlines():  # a line of the file may hold more lines for str.splitlines
                lineno += 1
                line = part.strip()
                if not line or line.startswith("#"):
                    continue
                rec = _parse_line(path, lineno, line)
                if rec.username in seen:
                    _parse_text(path, _read_exact(path))  # raises UserFileError naming both lines
                    raise UserFileError(path, lineno, f"duplicate user {rec.username!r}")  # the file changed
                seen.add(rec.username)
                out.append(rec)
    return out


def load_users(path: str | Path | None = None, *, bench_users: int = 0) -> UserStore:
    """Load a :class:`UserStore` from a text file or SQLite database (by extension).

    ``path=None`` loads the shipped demo users read-only (admin changes stay in
    memory, the package is never modified).  ``bench_users=N`` adds the generated
    ``user0..user{N-1}`` / ``passN`` users in memory.
    Raises ``FileNotFoundError`` and :class:`UserFileError`.
    """
    if path is None:
        store = UserStore(list_users(DEMO_USERS_PATH))
    else:
        store = UserStore(list_users(path), source=path)
    if bench_users:
        store.extend(demo_users(bench_users))
    return store


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never half."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_record(path: Path, record: UserRecord, *, replace: bool) -> None:
    if _is_sqlite(path):
        db = sqlite3.connect(path)
        try:
            with db:
                db.execute(_SCHEMA)
                verb = "INSERT OR REPLACE" if replace else "INSERT"
                try:
                    db.execute(
                        f"{verb} INTO users (username, password, realm, ha1, algorithm) VALUES (?, ?, ?, ?, ?)",
                        (record.username, record.password, record.realm, record.stored_ha1,
                         None if record.password is not None else record.algorithm),
                    )  # fmt: skip
                except sqlite3.IntegrityError:
                    raise ValueError(f"user {record.username!r} already exists in {path}") from None
        finally:
            db.close()
        return
    new_line = record.to_line()
    text = _read_exact(path) if path.exists() else ""
    lines = text.splitlines(keepends=True)
    for i, rec in _parse_text(path, text):
        if rec.username == record.username:
            if not replace:
                raise ValueError(f"user {record.username!r} already exists in {path}")
            ending = lines[i][len(lines[i].rstrip("\r\n")) :] or "\n"
            lines[i] = new_line + ending
            break
    else:
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += "\n"
        lines.append(new_line + "\n")
    _atomic_write(path, "".join(lines))


def add_user(
    path: str | Path,
    username: str,
    password: str | None = None,
    *,
    ha1: str | None = None,
    realm: str | None = None,
    algorithm: str = "MD5",
    replace: bool = False,
) -> UserRecord:
    """Add a user to a text file (created if missing) or SQLite database.

    Give ``password``, or ``realm`` and ``ha1`` (hex, in ``algorithm``).  With
    ``realm`` and ``password`` but no ``ha1``, the HA1 is computed so the
    password itself is not stored.  Raises ``ValueError`` for invalid values or an
    existing user (unless ``replace``), :class:`UserFileError` if the existing
    file is malformed.  Returns the stored record.
    """
    if password is not None and realm is not None and ha1 is None:
        alg = algorithm.upper()
        if alg not in _STORED_ALGS:
            raise ValueError(f"unsupported HA1 algorithm {algorithm!r} (MD5 or SHA-256)")
        computed = UserRecord(username, password=password).ha1(alg, realm)
        assert computed is not None
        record = UserRecord(username, realm=realm, stored_ha1=computed, algorithm=alg)
    elif password is not None and ha1 is None:
        record = UserRecord(username, password=password)
    else:
        record = UserRecord(username, realm=realm, stored_ha1=ha1, algorithm=algorithm)
    _write_record(Path(path), record, replace=replace)
    return record


def remove_user(path: str | Path, username: str) -> bool:
    """Remove a user from a text file (comments and other lines kept) or SQLite.

    Returns ``False`` if the user was not there.  Raises :class:`UserFileError`
    if the text file is malformed (it is not rewritten then).
    """
    p = Path(path)
    if _is_sqlite(p):
        if not p.exists():
            return False
        db = sqlite3.connect(p)
        try:
            with db:
                db.execute(_SCHEMA)
                cur = db.execute("DELETE FROM users WHERE username = ?", (username,))
                return cur.rowcount > 0
        finally:
            db.close()
    if not p.exists():
        return False
    text = _read_exact(p)
    lines = text.splitlines(keepends=True)
    for i, rec in _parse_text(p, text):
        if rec.username == username:
            del lines[i]
            _atomic_write(p, "".join(lines))
            return True
    return False
