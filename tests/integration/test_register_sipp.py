"""1000 distinct users register through sipp against a real ``leansip serve``, with and without digest auth.

sipp 3.6.1 answers only the *first* WWW-Authenticate of a 401 and only for MD5: offered
``SHA-256`` then ``MD5`` (our default) it stops the whole run with "createAuthHeader: authentication must use
MD5 or AKAv1-MD5" (exit 255) instead of using the MD5 challenge. The auth test therefore runs the server with
``--auth-algorithms MD5`` (and a separate check pins down the default two-challenge 401 itself).
"""

from __future__ import annotations

import csv
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_udp_port, require_program
from tests.integration.helpers import (
    SERVING,
    ServerProcess,
    contacts_in,
    register,
    send_recv,
    sip_request,
    status_of,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "sipp"
USERS = 1000


def run_sipp(port: int, scenario: str, workdir: Path, *, calls: int = USERS,
             rate: int = 500) -> tuple[int, int, int, int]:
    """Run sipp as UAC against 127.0.0.1:``port``; return (exit status, successful calls, failed calls, sipp's
    local port), the port being in the contacts it registers."""
    sipp = require_program("sipp")
    stat = workdir / "sipp-stat.csv"
    local_port = free_udp_port()
    cmd = [
        sipp, f"127.0.0.1:{port}", "-sf", str(DATA / scenario), "-inf", str(DATA / "users1000.csv"),
        "-m", str(calls), "-r", str(rate), "-l", "200", "-i", "127.0.0.1", "-p", str(local_port),
        "-recv_timeout", "5000", "-timeout", "20s", "-timeout_error", "-nostdin",
        "-trace_stat", "-stf", str(stat), "-trace_err", "-error_file", str(workdir / "sipp-errors.log"),
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=40)
    (workdir / "sipp.stdout").write_bytes(proc.stdout)
    ok, failed = _stat_totals(stat)
    return proc.returncode, ok, failed, local_port


def _stat_totals(path: Path) -> tuple[int, int]:
    """SuccessfulCall(C) and FailedCall(C) of the last row of sipp's ``-trace_stat`` file."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, last = rows[0], rows[-1]
    return int(last[header.index("SuccessfulCall(C)")]), int(last[header.index("FailedCall(C)")])


def _stored_aors(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT aor FROM bindings")}


def _diagnose(workdir: Path, srv: ServerProcess) -> str:
    err = workdir / "sipp-errors.log"
    text = err.read_text(errors="replace")[-2000:] if err.exists() else ""
    return f"sipp errors:\n{text}\nsipp stdout tail:\n{(workdir / 'sipp.stdout').read_text()[-1500:]}\n" \
           f"{srv.output()}"


@pytest.mark.parametrize("serving", ["loop", "bare"])
def test_sipp_registers_1000_users_then_query_and_remove(tmp_path: Path, serving: str) -> None:
    require_program("sipp")
    db = tmp_path / "loc.db"
    srv = ServerProcess(["--no-auth", "--location", "sqlite", "--db", str(db), "--stateless", *SERVING[serving]],
                        tmp_path)
    with srv:
        rc, ok, failed, sipp_port = run_sipp(srv.port, "register.xml", tmp_path)
        assert (rc, ok, failed) == (0, USERS, 0), _diagnose(tmp_path, srv)

        # query without Contact: the binding sipp made for user5 is listed
        [reply] = register(srv.port, "user5")
        assert status_of(reply) == 200
        listed = contacts_in(reply)
        assert list(listed) == [f"sip:user5@127.0.0.1:{sipp_port}"]
        assert 3590 < listed[f"sip:user5@127.0.0.1:{sipp_port}"] <= 3600

        # remove user7's binding with expires=0 (new Call-ID, so no CSeq ordering applies) and check it is gone
        [reply] = register(srv.port, "user7", (f"<sip:user7@127.0.0.1:{sipp_port}>;expires=0",))
        assert status_of(reply) == 200 and contacts_in(reply) == {}
        [reply] = register(srv.port, "user7")
        assert status_of(reply) == 200 and contacts_in(reply) == {}
        # others untouched
        [reply] = register(srv.port, "user999")
        assert list(contacts_in(reply)) == [f"sip:user999@127.0.0.1:{sipp_port}"]
        assert srv.alive()
    assert srv.proc is not None and srv.proc.returncode == 0, srv.output()
    # a clean stop flushed everything: 1000 users registered, one removed
    assert _stored_aors(db) == {f"user{i}" for i in range(USERS)} - {"user7"}


def _users_file(path: Path) -> Path:
    path.write_text("".join(f"user{i}:pass{i}\n" for i in range(USERS)))
    return path


def test_default_challenge_offers_sha256_then_md5(tmp_path: Path) -> None:
    """The 401 that sipp cannot use: two WWW-Authenticate headers, SHA-256 first (RFC 8760 3)."""
    users = _users_file(tmp_path / "users.txt")
    with ServerProcess(["--auth", "--users", str(users), "--realm", "leansip", "--location", "memory",
                        "--stateless"], tmp_path) as srv:
        [reply] = send_recv(srv.port, sip_request("REGISTER", f"sip:127.0.0.1:{srv.port}", user="user1",
                                                  contacts=("<sip:user1@127.0.0.1:9>",)))
        assert status_of(reply) == 401
        challenges = [line for line in reply.decode().split("\r\n") if line.lower().startswith("www-authenticate:")]
        assert len(challenges) == 2
        assert "algorithm=SHA-256" in challenges[0] and "algorithm=MD5" in challenges[1]


@pytest.mark.parametrize("serving", ["loop", "bare-spin"])
def test_sipp_registers_1000_users_with_digest_md5(tmp_path: Path, serving: str) -> None:
    require_program("sipp")
    users = _users_file(tmp_path / "users.txt")
    db = tmp_path / "loc.db"
    srv = ServerProcess(["--auth", "--users", str(users), "--realm", "leansip", "--auth-algorithms", "MD5",
                         "--location", "sqlite", "--db", str(db), "--stateless", *SERVING[serving]], tmp_path)
    with srv:
        rc, ok, failed, sipp_port = run_sipp(srv.port, "register-auth.xml", tmp_path)
        assert (rc, ok, failed) == (0, USERS, 0), _diagnose(tmp_path, srv)
        # an unauthenticated query is challenged, not answered
        [reply] = register(srv.port, "user3")
        assert status_of(reply) == 401
    assert _stored_aors(db) == {f"user{i}" for i in range(USERS)}
