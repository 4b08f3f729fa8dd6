"""User store: parsing (with exact errors), HA1 against RFC vectors, SQLite, editing."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from leansip.server.users import (
    DEMO_USERS_PATH,
    UserFileError,
    UserRecord,
    UserStore,
    add_user,
    demo_users,
    list_users,
    load_users,
    remove_user,
)

# RFC 2617 3.5: HA1 of Mufasa / testrealm@host.com / "Circle Of Life".
RFC2617_HA1 = "939e7578ed9e3c518a452acee763bce9"
MUFASA_SHA256 = hashlib.sha256(b"Mufasa:http-auth@example.org:Circle of Life").hexdigest()


def _rfc7616_response(ha1: str, hash_name: str) -> str:
    """RFC 7616 3.9.1 response for the example request, from a given HA1."""

    def h(s: str) -> str:
        return hashlib.new(hash_name, s.encode()).hexdigest()

    nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    return h(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{h('GET:/dir/index.html')}")


# -- HA1 -----------------------------------------------------------------------------


def test_ha1_from_password_matches_rfc_examples() -> None:
    u = UserRecord("Mufasa", password="Circle of Life")
    md5 = u.ha1("MD5", "http-auth@example.org")
    sha = u.ha1("SHA-256", "http-auth@example.org")
    assert md5 is not None and sha is not None
    assert _rfc7616_response(md5, "md5") == "8ca523f5e9506fed4657c9700eebdbec"
    assert (
        _rfc7616_response(sha, "sha256") == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert UserRecord("Mufasa", password="Circle Of Life").ha1("md5", "testrealm@host.com") == RFC2617_HA1
    assert u.ha1("MD5-sess", "http-auth@example.org") == md5
    assert u.ha1("SHA-512-256", "r") == hashlib.new("sha512_256", b"Mufasa:r:Circle of Life").hexdigest()
    assert u.ha1("SHA-1", "r") is None


def test_stored_ha1_only_for_its_realm_and_algorithm() -> None:
    u = UserRecord("Mufasa", realm="testrealm@host.com", stored_ha1=RFC2617_HA1.upper())
    assert u.ha1("MD5", "testrealm@host.com") == RFC2617_HA1
    assert u.ha1("MD5-sess", "testrealm@host.com") == RFC2617_HA1
    assert u.ha1("MD5", "other.realm") is None
    assert u.ha1("SHA-256", "testrealm@host.com") is None
    s = UserRecord("Mufasa", realm="http-auth@example.org", stored_ha1=MUFASA_SHA256, algorithm="sha-256")
    assert s.algorithm == "SHA-256"
    assert s.ha1("SHA-256", "http-auth@example.org") == MUFASA_SHA256
    assert s.ha1("MD5", "http-auth@example.org") is None


def test_secrets_not_in_repr() -> None:
    assert "hunter2" not in repr(UserRecord("a", password="hunter2"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": "x", "realm": "r"},
        {},
        {"realm": "r"},
        {"password": ""},
        {"realm": "r", "stored_ha1": "abc"},
        {"realm": "r", "stored_ha1": "g" * 32},
        {"realm": "r", "stored_ha1": "a" * 32, "algorithm": "SHA-256"},
        {"realm": "r", "stored_ha1": "a" * 32, "algorithm": "SHA-1"},
    ],
)
def test_inconsistent_record_rejected(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        UserRecord("u", **kwargs)  # type: ignore[arg-type]


# -- text files ----------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "users.txt") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


def test_parse_all_line_kinds(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "# comment\n\nalice:wonder land\n  bob:testrealm@host.com:" + RFC2617_HA1 + "  \n"
        f"carol:http-auth@example.org:{MUFASA_SHA256}:SHA-256\n"
        f"dave:r:{RFC2617_HA1}:MD5\n+1555%20x:pw\n",
    )
    store = load_users(p)
    assert store.usernames() == ["+1555%20x", "alice", "bob", "carol", "dave"]
    alice = store.get("alice")
    assert alice is not None and alice.password == "wonder land"
    bob = store.get("bob")
    assert bob is not None and bob.ha1("MD5", "testrealm@host.com") == RFC2617_HA1
    carol = store.get("carol")
    assert carol is not None and carol.algorithm == "SHA-256"
    assert store.get("Alice") is None and "alice" in store and len(store) == 5


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("alice:a\nbob\n", 2, "got 1 fields"),
        ("# c\n\nalice:a:b:c:d\n", 3, "got 5 fields"),
        ("al ice:x\n", 1, "not a SIP user token (bad character ' ')"),
        ("al@ice:x\n", 1, "bad character '@'"),
        (":x\n", 1, "empty username"),
        ("alice:\n", 1, "empty password"),
        ("a:b\nalice:x\n\n#\nalice:y\n", 5, "duplicate user 'alice' (first on line 2)"),
        ("bob:realm:1234\n", 1, "MD5 HA1 must be 32 hex digits"),
        ("bob:realm:" + "z" * 32 + "\n", 1, "MD5 HA1 must be 32 hex digits"),
        ("bob::" + "a" * 32 + "\n", 1, "empty realm"),
        ("bob:r:" + "a" * 32 + ":SHA-256\n", 1, "SHA-256 HA1 must be 64 hex digits"),
        ("bob:r:" + "a" * 32 + ":SHA1\n", 1, "unsupported HA1 algorithm 'SHA1'"),
        ("bob:pass:word\n", 1, "MD5 HA1 must be 32 hex digits"),  # ':' in a password
    ],
)
def test_parse_errors_name_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(UserFileError) as ei:
        load_users(p)
    assert ei.value.line == line
    assert ei.value.path == str(p)
    assert str(ei.value) == f"{p}:{line}: {ei.value.reason}"
    assert reason in ei.value.reason


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_users(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        load_users(tmp_path / "nope.db")


def test_text_add_remove_list_round_trip(tmp_path: Path) -> None:
    original = "# header comment\nalice:a\r\n\n# keep me\nbob:b\n"
    p = write(tmp_path, original)
    p.chmod(0o600)
    add_user(p, "carol", "c")
    rec = add_user(p, "dave", "secret", realm="example.com")  # stores HA1, not the password
    assert rec.password is None and rec.ha1("MD5", "example.com") == UserRecord(
        "dave", password="secret"
    ).ha1("MD5", "example.com")
    add_user(p, "erin", ha1=MUFASA_SHA256, realm="http-auth@example.org", algorithm="SHA-256")
    assert [u.username for u in list_users(p)] == ["alice", "bob", "carol", "dave", "erin"]
    with pytest.raises(ValueError, match="already exists"):
        add_user(p, "alice", "again")
    add_user(p, "alice", "new", replace=True)
    assert remove_user(p, "bob") is True
    assert remove_user(p, "bob") is False
    text = p.read_bytes().decode()
    assert text.startswith("# header comment\nalice:new\r\n\n# keep me\ncarol:c\n")
    assert f"erin:http-auth@example.org:{MUFASA_SHA256}:SHA-256\n" in text
    assert (p.stat().st_mode & 0o777) == 0o600
    assert [p.name] == [f.name for f in tmp_path.iterdir()]  # no temp file left behind
    with pytest.raises(ValueError):
        add_user(p, "frank", "has:colon")
    with pytest.raises(ValueError):
        add_user(p, "bad name", "x")
    assert [u.username for u in list_users(p)] == ["alice", "carol", "dave", "erin"]


def test_add_creates_file_and_appends_newline(tmp_path: Path) -> None:
    p = tmp_path / "new.txt"
    add_user(p, "alice", "a")
    assert p.read_text() == "alice:a\n"
    p.write_text("# no trailing newline\nalice:a")
    add_user(p, "bob", "b")
    assert p.read_text() == "# no trailing newline\nalice:a\nbob:b\n"


def test_edit_refuses_malformed_file(tmp_path: Path) -> None:
    p = write(tmp_path, "alice:a\nbroken\n")
    with pytest.raises(UserFileError):
        add_user(p, "bob", "b")
    with pytest.raises(UserFileError):
        remove_user(p, "alice")
    assert p.read_text() == "alice:a\nbroken\n"


# -- SQLite --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".db", ".sqlite", ".SQLITE3"])
def test_sqlite_round_trip(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"users{suffix}"
    add_user(p, "alice", "a")
    add_user(p, "bob", ha1=RFC2617_HA1, realm="testrealm@host.com")
    add_user(p, "carol", ha1=MUFASA_SHA256, realm="http-auth@example.org", algorithm="SHA-256")
    with pytest.raises(ValueError, match="already exists"):
        add_user(p, "alice", "x")
    row = sqlite3.connect(p).execute("SELECT * FROM users WHERE username='bob'").fetchone()
    assert row == ("bob", None, "testrealm@host.com", RFC2617_HA1, "MD5")
    store = load_users(p)
    assert store.usernames() == ["alice", "bob", "carol"]
    bob = store.get("bob")
    assert bob is not None and bob.ha1("MD5", "testrealm@host.com") == RFC2617_HA1
    carol = store.get("carol")
    assert carol is not None and carol.ha1("SHA-256", "http-auth@example.org") == MUFASA_SHA256
    assert remove_user(p, "alice") is True and remove_user(p, "alice") is False
    assert [u.username for u in list_users(p)] == ["bob", "carol"]


def test_sqlite_table_written_by_hand(tmp_path: Path) -> None:
    p = tmp_path / "u.db"
    db = sqlite3.connect(p)
    db.execute(
        "CREATE TABLE users(username TEXT PRIMARY KEY, password TEXT, realm TEXT, ha1 TEXT, algorithm TEXT)"
    )
    db.execute("INSERT INTO users VALUES ('alice', 'a', NULL, NULL, NULL)")
    db.execute(
        f"INSERT INTO users VALUES ('bob', NULL, 'r', '{RFC2617_HA1}', NULL)"
    )  # algorithm defaults to MD5
    db.execute("INSERT INTO users VALUES ('bad user', 'x', NULL, NULL, NULL)")
    db.commit()
    with pytest.raises(UserFileError, match="user 'bad user'") as ei:
        load_users(p)
    assert ei.value.line is None
    db.execute("DELETE FROM users WHERE username = 'bad user'")
    db.commit()
    db.close()
    bob = load_users(p).get("bob")
    assert bob is not None and bob.ha1("MD5", "r") == RFC2617_HA1


def test_sqlite_without_users_table(tmp_path: Path) -> None:
    p = tmp_path / "empty.sqlite"
    sqlite3.connect(p).close()
    with pytest.raises(UserFileError, match="no usable users table"):
        load_users(p)


# -- the runtime store ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["users.txt", "users.db"])
def test_store_writes_through(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    add_user(p, "alice", "a")
    store = load_users(p, bench_users=3)
    assert store.get("user2") is not None and len(store) == 4
    store.add(UserRecord("bob", password="b"))
    with pytest.raises(ValueError, match="already exists"):
        store.add(UserRecord("bob", password="x"))
    store.add(UserRecord("bob", password="b2"), replace=True)
    assert store.remove("alice") is True and store.remove("alice") is False
    assert store.remove("user1") is True  # generated: memory only, file untouched
    assert [(u.username, u.password) for u in list_users(p)] == [("bob", "b2")]
    store.add(UserRecord("tmp", password="t"), persist=False)
    assert [u.username for u in list_users(p)] == ["bob"]
    add_user(p, "zoe", "z")  # edited outside the server, then reloaded
    store.reload()
    assert store.usernames() == ["bob", "tmp", "user0", "user2", "zoe"]


def test_ha1_lookup_remembers_known_users_and_forgets_on_every_change(tmp_path: Path) -> None:
    p = tmp_path / "users.txt"
    add_user(p, "alice", "a")
    store = load_users(p)
    realm = "example.org"
    want = hashlib.md5(b"alice:example.org:a").hexdigest()
    assert store.ha1_lookup("alice", realm, "MD5") == want
    assert store.ha1_lookup("alice", realm, "MD5") == want  # from the memo
    assert store.ha1_lookup("alice", realm, "SHA-256") == hashlib.sha256(b"alice:example.org:a").hexdigest()
    assert store.ha1_lookup("alice", realm, "SHA-1") is None
    assert store.ha1_lookup("mallory", realm, "MD5") is None
    assert ("mallory", realm, "MD5") not in store.remembered()  # a guesser's names are not kept
    assert store.exists("alice") and not store.exists("mallory")
    # every way the users change: a new password, a removal, a reload of the file, bench users
    store.add(UserRecord("alice", password="b"), replace=True)
    assert store.ha1_lookup("alice", realm, "MD5") == hashlib.md5(b"alice:example.org:b").hexdigest()
    store.remove("alice")
    assert store.ha1_lookup("alice", realm, "MD5") is None
    add_user(p, "alice", "c")
    store.reload()
    assert store.ha1_lookup("alice", realm, "MD5") == hashlib.md5(b"alice:example.org:c").hexdigest()
    store.extend([UserRecord("alice", password="d")])
    assert store.ha1_lookup("alice", realm, "MD5") == hashlib.md5(b"alice:example.org:d").hexdigest()


def test_ha1_memo_starts_over_when_full() -> None:
    store = UserStore((UserRecord(f"u{i}", password="p") for i in range(5)), ha1_memo=3)
    for i in range(5):
        assert store.ha1_lookup(f"u{i}", "r", "MD5") == hashlib.md5(f"u{i}:r:p".encode()).hexdigest()
        assert len(store.remembered()) <= 3
    assert ("u4", "r", "MD5") in store.remembered()


def test_store_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        UserStore([UserRecord("a", password="1"), UserRecord("a", password="2")])


def test_demo_users_shipped_and_generated() -> None:
    store = load_users()
    assert store.source is None
    for name, pw in [
        ("alice", "alice"),
        ("bob", "bob"),
        ("carol", "carol"),
        ("callee", "callee"),
        ("callee-probe", "callee"),
    ]:
        rec = store.get(name)
        assert rec is not None and rec.password == pw
    assert len(store) == 5 and DEMO_USERS_PATH.read_text().startswith("#")
    store.add(UserRecord("mallory", password="m"))  # admin edits never touch the package
    assert "mallory" not in DEMO_USERS_PATH.read_text()
    gen = list(demo_users(10000))
    assert len(gen) == 10000 and gen[0].username == "user0" and gen[-1].username == "user9999"
    assert gen[42].password == "pass42"
    assert [u.username for u in demo_users(2, start=5)] == ["user5", "user6"]
