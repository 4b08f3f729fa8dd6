"""The leansip command line: one-line errors with status 2, help, config precedence, dispatch."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from leansip.app import cli
from leansip.app.config import DEMO_USERS_FILE, FIELDS, TABLE_KINDS, Config, ListenSpec, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_leansip(*argv: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``python -m leansip`` as a user would, from the source tree."""
    return subprocess.run([sys.executable, "-m", "leansip", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("leansip: error: "), stderr
    return lines[0]


# --- errors ------------------------------------------------------------------------------------------

def test_bad_mode_is_one_line_and_status_2() -> None:
    result = run_leansip("serve", "--mode", "nonsense")
    assert result.returncode == 2
    assert result.stdout == ""
    line = one_error_line(result.stderr)
    assert "--mode" in line and "nonsense" in line and "proxy" in line


def test_bad_config_file_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('mode = "proxy"\nmin_expires = "soon"\n')
    result = run_leansip("serve", "--config", str(config))
    assert result.returncode == 2
    assert one_error_line(result.stderr) == (
        f"leansip: error: {config}:2: min_expires: must be an integer, got string 'soon'")


@pytest.mark.parametrize(("argv", "needle"), [
    (["serve", "--min-expires", "ten"], "argument --min-expires: 'ten' is not an integer"),
    (["serve", "--listen", "udp"], "argument --listen: bad listen spec 'udp'"),
    (["serve", "--listen", "sctp:127.0.0.1"], "transport must be one of"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--min-expires", "100000"], "--min-expires: need min_expires <= default_expires"),
    (["serve", "--t1", "9"], "--t2: must be >= t1 (9.0)"),
    (["serve", "--auth"], "--users: auth is on but no users file"),
    (["serve", "--admin", "8080"], "argument --admin: expected HOST:PORT"),
    (["serve", "--location", "mongo"], "argument --location: invalid choice: 'mongo'"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    ([], "the following arguments are required: COMMAND"),
    (["users", "add", "x"], "one of the arguments --password --ha1 is required"),
    (["users", "add", "x", "--ha1", "00"], "--ha1 needs --realm"),
])
def test_usage_errors_in_process(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors leave through _Parser.error
        status = exc.code
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert needle in one_error_line(captured.err)


# --- help ----------------------------------------------------------------------------------------------

def test_serve_help_documents_every_setting() -> None:
    result = run_leansip("serve", "--help")
    assert result.returncode == 0 and result.stderr == ""
    for name, info in FIELDS.items():
        if info.kind not in TABLE_KINDS:  # tables (gateway sets) are written in the config file only
            assert f"--{name.replace('_', '-')}" in result.stdout, name
    for flag in ("--config", "--demo", "--stateless", "--no-auth", "--print-config"):
        assert flag in result.stdout
    assert "alice/alice" in result.stdout
    # next to --auth-algorithms: which common clients need MD5 (they fail silently on a SHA-256 challenge)
    section = " ".join(result.stdout.split("\n  --auth-algorithms", 1)[1].split("\n  --fail-slow-after")[0].split())
    assert "baresip 1.0, sipsak and SIPp 3.6 need MD5 alone: --auth-algorithms MD5" in section, section


def test_version_prints_the_installed_version() -> None:
    """It answered "the following arguments are required: COMMAND"."""
    from importlib.metadata import version

    result = run_leansip("--version")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"leansip {version('leansip')}\n"


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "users", "status", "phone", "bench"):
        assert command in out


# --- serve ---------------------------------------------------------------------------------------------

def effective_config(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> Config:
    assert cli.main(["serve", *argv, "--print-config"]) == 0
    saved = tmp_path / "effective.toml"
    saved.write_text(capsys.readouterr().out)
    return load_config(saved)


def test_flags_override_config_file_which_overrides_demo(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('mode = "redirect"\nmin_expires = 120\nrealm = "file.example"\n')
    c = effective_config(capsys, tmp_path, "--demo", "--config", str(config), "--realm", "flag.example",
                         "--listen", "tcp:127.0.0.1:0", "--listen", "udp:[::1]", "--stateless",
                         "--admin", "off", "--auth-algorithms", "MD5", "--t1", "0.25")
    assert c.mode == "redirect" and c.min_expires == 120                      # from the file
    assert c.realm == "flag.example" and c.stateful is False and c.admin is None  # from flags
    assert c.listen == [ListenSpec("tcp", "127.0.0.1", 0), ListenSpec("udp", "::1", 5060)]
    assert c.auth_algorithms == ["MD5"] and c.t1 == 0.25
    assert c.port_fallback is True and c.users == DEMO_USERS_FILE            # from --demo


def test_without_flags_serve_uses_product_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    c = effective_config(capsys, tmp_path)
    expected = Config()
    assert c == expected


def test_serve_hands_the_config_to_serve_run(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[Config] = []
    fake = types.ModuleType("leansip.app.serve")

    def run(config: Config) -> int:
        received.append(config)
        return 3

    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "leansip.app.serve", fake)
    assert cli.main(["serve", "--demo", "--mode", "registrar", "--log-level", "error"]) == 3
    assert len(received) == 1
    assert received[0].mode == "registrar" and received[0].port_fallback is True


def test_missing_command_module_is_one_line_status_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "leansip.app.serve", None)  # import now raises ModuleNotFoundError
    assert cli.main(["serve"]) == 1
    assert "module leansip.app.serve is missing" in one_error_line(capsys.readouterr().err)


# --- dispatch to other modules --------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "module"), [("phone", "leansip.ua.cli"), ("bench", "leansip.app.bench")])
def test_passthrough_commands_get_their_argv_untouched(
        monkeypatch: pytest.MonkeyPatch, command: str, module: str) -> None:
    calls: list[list[str]] = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: calls.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module, fake)
    argv = ["--help", "call", "sip:bob@127.0.0.1", "--mode", "x", "--", "-z"]
    assert cli.main([command, *argv]) == 7
    assert calls == [argv]


def test_status_gets_parsed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[argparse.Namespace] = []
    fake = types.ModuleType("leansip.app.status")
    fake.main = lambda args: calls.append(args) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "leansip.app.status", fake)
    assert cli.main(["status", "--admin", "http://127.0.0.1:9999", "--json"]) == 0
    assert (calls[0].admin, calls[0].json, calls[0].admin_token) == ("http://127.0.0.1:9999", True, None)


# --- users -----------------------------------------------------------------------------------------------

def test_users_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("leansip.server.users", reason="leansip.server.users not written yet")
    users = str(tmp_path / "users.txt")
    assert cli.main(["users", "add", "dave", "--password", "pw", "--users", users]) == 0
    assert cli.main(["users", "add", "erin", "--password", "pw2", "--realm", "ex.com", "--users", users]) == 0
    capsys.readouterr()
    assert cli.main(["users", "list", "--users", users]) == 0
    assert capsys.readouterr().out == "dave\tpassword\nerin\tha1 MD5 realm=ex.com\n"
    # with --realm the HA1 is stored, not the password: md5("erin:ex.com:pw2")
    assert f"erin:ex.com:{hashlib.md5(b'erin:ex.com:pw2').hexdigest()}" in Path(users).read_text()

    assert cli.main(["users", "add", "dave", "--password", "x", "--users", users]) == 1
    assert "already exists" in one_error_line(capsys.readouterr().err)
    assert cli.main(["users", "add", "dave", "--password", "x", "--replace", "--users", users]) == 0

    assert cli.main(["users", "remove", "dave", "--users", users]) == 0
    assert cli.main(["users", "remove", "dave", "--users", users]) == 1
    assert f"no user 'dave' in {users}" in one_error_line(capsys.readouterr().err)
    capsys.readouterr()
    assert cli.main(["users", "list", "--users", users]) == 0
    assert capsys.readouterr().out == "erin\tha1 MD5 realm=ex.com\n"


def test_users_default_file_is_seeded_from_demo_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("leansip.server.users", reason="leansip.server.users not written yet")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["users", "list"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert {"alice", "bob", "carol"} <= set(names)
    assert (tmp_path / "var" / "users.txt").read_text() == DEMO_USERS_FILE.read_text()
    assert cli.main(["users", "add", "zoe", "--password", "z"]) == 0
    assert "zoe:z" in (tmp_path / "var" / "users.txt").read_text()
    assert "zoe" not in DEMO_USERS_FILE.read_text()  # the shipped file is never edited


def test_users_command_via_subprocess(tmp_path: Path) -> None:
    pytest.importorskip("leansip.server.users", reason="leansip.server.users not written yet")
    users = tmp_path / "u.txt"
    result = run_leansip("users", "add", "frank", "--password", "f", "--users", str(users))
    assert result.returncode == 0, result.stderr
    assert users.read_text() == "frank:f\n"


# --- --db: say which option, which file, what to do; never touch a file that is not ours -----------------

def test_db_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("alice:alice\nbob:bob\n")
    before = (users.read_bytes(), users.stat().st_mtime_ns)
    result = run_leansip("serve", "--db", str(users), "--admin", "off", "--listen", "udp:127.0.0.1:0",
                         cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith(f"leansip: error: --db {users}: {users} is not a SQLite database"), line
    assert "left untouched" in line and "--db var/leansip.db" in line
    assert (users.read_bytes(), users.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.txt"]  # no -wal, -shm or .secret beside it


def test_db_in_a_directory_that_cannot_be_made(tmp_path: Path) -> None:
    result = run_leansip("serve", "--db", "/proc/nope/x.db", "--admin", "off", "--listen", "udp:127.0.0.1:0",
                         cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("leansip: error: --db /proc/nope/x.db: cannot create its directory /proc/nope ("), line
    assert "give a path in a directory that exists or can be made" in line


def test_db_that_is_a_directory(tmp_path: Path) -> None:
    result = run_leansip("serve", "--db", str(tmp_path), "--admin", "off", "--listen", "udp:127.0.0.1:0",
                         cwd=tmp_path)
    assert result.returncode == 2
    assert f"--db {tmp_path}: {tmp_path} is a directory" in one_error_line(result.stderr)


def test_log_format_json_is_a_setting(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert effective_config(capsys, tmp_path, "--log-format", "json").log_format == "json"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--log-format", "xml"])
    assert exit_info.value.code == 2
    assert "argument --log-format: invalid choice: 'xml'" in capsys.readouterr().err
