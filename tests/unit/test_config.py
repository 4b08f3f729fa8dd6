"""Config: defaults, listen specs, TOML loading with file:line errors, overrides, validation."""

from __future__ import annotations

import argparse
import dataclasses
import math
import socket
from pathlib import Path

import pytest

from leansip.app.config import (
    ADMIN_OFF,
    DEMO_USERS_FILE,
    FIELDS,
    Config,
    ConfigError,
    ListenSpec,
    apply_overrides,
    config_to_toml,
    convert_cli,
    load_config,
    parse_listen,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leansip.toml"
    path.write_text(text)
    return path


# --- defaults ----------------------------------------------------------------------------------------

def test_defaults_match_the_product() -> None:
    c = Config()
    assert c.listen == [ListenSpec("udp", "127.0.0.1", 5060)]
    assert (c.mode, c.stateful, c.auth, c.location, c.log_level) == ("proxy", True, False, "sqlite", "warning")
    assert c.realm == socket.gethostname()
    assert c.db == Path("var/leansip.db")
    assert (c.min_expires, c.default_expires, c.max_expires) == (60, 3600, 86400)
    assert c.auth_algorithms == ["SHA-256", "MD5"]
    assert (c.fail_slow_after, c.fail_block_after, c.block_seconds) == (5, 20, 300)
    assert c.admin == "127.0.0.1:8080" and c.admin_address == ("127.0.0.1", 8080)
    assert (c.t1, c.t2, c.t4) == (0.5, 4.0, 5.0)
    assert (c.max_transactions, c.max_connections, c.max_connections_per_ip) == (100000, 10000, 100)
    assert c.max_transaction_memory == 256
    assert c.validate() is c


def test_demo_config() -> None:
    c = Config.demo().validate()
    assert c.port_fallback is True
    assert c.listen == [ListenSpec("udp", "127.0.0.1", 5060), ListenSpec("tcp", "127.0.0.1", 5060),
                        ListenSpec("tls", "127.0.0.1", 5061)]
    assert c.tls_cert is None and c.tls_key is None  # a development certificate is made under ./var/
    assert (c.mode, c.stateful, c.auth, c.location) == ("proxy", True, True, "sqlite")
    assert c.users == DEMO_USERS_FILE and c.users.parts[-2:] == ("data", "users.txt")
    assert c.db.parts[0] == "var"


def test_every_field_has_a_field_info_and_back() -> None:
    assert [f.name for f in dataclasses.fields(Config)] == list(FIELDS)


def test_instances_do_not_share_lists() -> None:
    a, b = Config(), Config()
    a.listen.append(ListenSpec("tcp", "127.0.0.1", 5060))
    a.auth_algorithms.append("SHA-512-256")
    assert b.listen == [ListenSpec("udp", "127.0.0.1", 5060)] and b.auth_algorithms == ["SHA-256", "MD5"]


# --- listen specs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
    ("tcp:0.0.0.0:15060", ListenSpec("tcp", "0.0.0.0", 15060)),
    ("UDP:example.com", ListenSpec("udp", "example.com", 5060)),
    ("tls:127.0.0.1", ListenSpec("tls", "127.0.0.1", 5061)),
    ("ws:127.0.0.1", ListenSpec("ws", "127.0.0.1", 80)),
    ("wss:127.0.0.1", ListenSpec("wss", "127.0.0.1", 443)),
    ("udp:[::1]:5070", ListenSpec("udp", "::1", 5070)),
    ("tls:[2001:db8::1]", ListenSpec("tls", "2001:db8::1", 5061)),
    ("udp:127.0.0.1:0", ListenSpec("udp", "127.0.0.1", 0)),
])
def test_parse_listen(text: str, expected: ListenSpec) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize(("text", "reason"), [
    ("127.0.0.1:5060", "transport must be one of"),
    ("sctp:127.0.0.1:5060", "transport must be one of"),
    ("udp:", "expected transport:host[:port]"),
    ("udp", "expected transport:host[:port]"),
    ("udp:127.0.0.1:70000", "out of range"),
    ("udp:127.0.0.1:50x", "not a number"),
    ("udp:::1:5060", "brackets"),
    ("udp:[::1", "expected transport:host[:port]"),
    ("udp:[nothex]:5060", "not an IPv6 address"),
    ("udp:[::1]5060", "expected transport:host[:port]"),
    ("udp::5060", "missing or invalid host"),
    ("udp:bad host:5060", "missing or invalid host"),
])
def test_parse_listen_rejects(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="bad listen spec") as info:
        parse_listen(text)
    assert reason in str(info.value)


def test_listen_spec_str_brackets_ipv6() -> None:
    assert str(ListenSpec("udp", "::1", 5060)) == "udp:[::1]:5060"
    assert str(ListenSpec("tcp", "10.0.0.1", 5060)) == "tcp:10.0.0.1:5060"


# --- TOML loading -----------------------------------------------------------------------------------

GOOD = """\
# a comment
listen = ["udp:127.0.0.1:15060", "tcp:[::1]:15061"]
mode = "redirect"
stateful = false
auth = true
realm = "example.com"
users = "/etc/leansip/users.txt"
location = "memory"
min_expires = 30
default_expires = 600
max_expires = 7200
t1 = 1            # an integer is fine for a float setting
admin = "127.0.0.1:9090"
auth_algorithms = ["MD5"]
"""


def test_load_good_file(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, GOOD))
    assert c.listen == [ListenSpec("udp", "127.0.0.1", 15060), ListenSpec("tcp", "::1", 15061)]
    assert (c.mode, c.stateful, c.auth, c.realm, c.location) == ("redirect", False, True, "example.com", "memory")
    assert c.users == Path("/etc/leansip/users.txt")
    assert (c.min_expires, c.default_expires, c.max_expires) == (30, 600, 7200)
    assert c.t1 == 1.0 and isinstance(c.t1, float)
    assert c.admin_address == ("127.0.0.1", 9090)
    assert c.auth_algorithms == ["MD5"]
    # untouched settings keep their defaults
    assert c.max_transactions == 100000 and c.record_route is True


def test_load_uses_base_for_unset_fields(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, 'mode = "registrar"\n'), base=Config.demo())
    assert c.mode == "registrar" and c.port_fallback is True and c.users == DEMO_USERS_FILE


def test_listen_may_be_a_single_string_and_admin_false_turns_it_off(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, 'listen = "tcp:127.0.0.1"\nadmin = false\n'))
    assert c.listen == [ListenSpec("tcp", "127.0.0.1", 5060)] and c.admin is None and c.admin_address is None


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "proxy"\n\nmin_expires = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: TOML syntax error: ")
    assert "\n" not in message and info.value.line == 3


def test_unknown_key_names_file_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "proxy"\n# comment\n  min_expire = 30\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:3: min_expire: unknown setting (did you mean 'min_expires'?)"


def test_unknown_table_points_at_its_header(tmp_path: Path) -> None:
    path = write(tmp_path, 'mode = "proxy"\n\n[server]\nmode = "proxy"\n')
    with pytest.raises(ConfigError, match=rf"^{path}:3: server: unknown setting"):
        load_config(path)


def test_key_line_ignores_same_name_inside_a_table(tmp_path: Path) -> None:
    # "mode" inside [server] is not the top-level key: the error must point at the real one.
    path = write(tmp_path, '[server]\nmode = 1\n')
    with pytest.raises(ConfigError, match=rf"^{path}:1: server: "):
        load_config(path)


@pytest.mark.parametrize(("body", "line", "key", "reason"), [
    ('mode = "proxy"\nmin_expires = "60"\n', 2, "min_expires", "must be an integer, got string '60'"),
    ("auth = 1\n", 1, "auth", "must be a boolean (true/false), got integer 1"),
    ("max_transactions = true\n", 1, "max_transactions", "must be an integer, got boolean True"),
    ("t1 = \"fast\"\n", 1, "t1", "must be a number"),
    ("listen = [5060]\n", 1, "listen", "must be a list of strings"),
    ('\n\nlisten = ["udp:127.0.0.1:99999"]\n', 3, "listen", "out of range"),
    ('realm = ["a"]\n', 1, "realm", "must be a string, got array"),
    ("users = 3\n", 1, "users", "must be a path string"),
    ('admin = 8080\n', 1, "admin", 'must be a "HOST:PORT" string or false'),
    ("cpu = true\n", 1, "cpu", "must be an integer"),
    ('bare_spin = "forever"\n', 1, "bare_spin", "must be a number"),
])
def test_bad_type_names_file_key_and_line(tmp_path: Path, body: str, line: int, key: str, reason: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: ")
    assert reason in str(info.value)
    assert (info.value.key, info.value.line) == (key, line)


@pytest.mark.parametrize(("body", "line", "key", "reason"), [
    ('mode = "nonsense"\n', 1, "mode", "must be one of proxy, redirect, registrar, got 'nonsense'"),
    ('location = "mongo"\n', 1, "location", "must be one of memory, sqlite, redis"),
    ("min_expires = 7200\n", 1, "min_expires", "need min_expires <= default_expires <= max_expires"),
    ("\nmax_expires = 100\n", 2, "max_expires", "need min_expires <= default_expires"),
    ("t1 = 5.0\nt2 = 4.0\n", 2, "t2", "must be >= t1"),
    ("workers = 0\n", 1, "workers", "must be >= 1"),
    ("workers = 2\n", 1, "workers", "only 1 worker per node is supported"),
    ('auth_algorithms = ["SHA-1"]\n', 1, "auth_algorithms", "must be one of SHA-256"),
    ("auth = true\n", None, "users", "auth is on but no users file"),
    ('listen = ["tls:127.0.0.1"]\ntls_key = "k.pem"\n', None, "tls_cert",
     "listen tls:127.0.0.1:5061 needs both tls_cert and tls_key"),
    ('admin = "localhost"\n', 1, "admin", "expected HOST:PORT"),
    ('log_level = "loud"\n', 1, "log_level", "must be one of debug"),
    ("bare_spin = -0.5\n", 1, "bare_spin", "must be >= 0 seconds (or inf: never sleep)"),
    ("bare_spin = nan\n", 1, "bare_spin", "must be >= 0 seconds"),
    ('bare = true\nlisten = ["tcp:127.0.0.1"]\n', 1, "bare", "bare mode polls the UDP listeners"),
    ("cpu = -1\n", 1, "cpu", "must be a CPU number >= 0"),
])
def test_invalid_values_name_the_key(tmp_path: Path, body: str, line: int | None, key: str, reason: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(info.value).startswith(f"{where}{key}: "), str(info.value)
    assert reason in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot read config file"):
        load_config(path)


def test_toml_round_trip(tmp_path: Path) -> None:
    c = Config.demo()
    c.listen.append(ListenSpec("wss", "::1", 8443))
    c.tls_cert, c.tls_key = Path("cert.pem"), Path('odd "name".pem')
    c.admin, c.admin_token, c.realm = None, "s3cret", "réalm"
    assert load_config(write(tmp_path, config_to_toml(c))) == c
    c.bare, c.bare_spin, c.cpu = True, 0.25, 1
    assert load_config(write(tmp_path, config_to_toml(c))) == c


def test_bare_mode_spins_forever_unless_limited(tmp_path: Path) -> None:
    """`bare = true` alone is the full bare-PC behaviour (never sleeps); TOML's inf says so explicitly."""
    c = load_config(write(tmp_path, "bare = true\n"))
    assert c.bare and c.bare_spin == math.inf and c.cpu is None
    c = load_config(write(tmp_path, "bare = true\nbare_spin = 0.002\ncpu = 1\n"))
    assert (c.bare, c.bare_spin, c.cpu) == (True, 0.002, 1)
    assert load_config(write(tmp_path, "bare_spin = inf\n")).bare_spin == math.inf


# --- overrides ----------------------------------------------------------------------------------------

def test_apply_overrides_replaces_only_given_fields() -> None:
    base = Config.demo()
    args = argparse.Namespace(mode="redirect", stateful=False, listen=[parse_listen("tcp:127.0.0.1:0")],
                              min_expires=None, admin=ADMIN_OFF, unrelated="x")
    c = apply_overrides(base, args)
    assert (c.mode, c.stateful, c.listen, c.admin) == ("redirect", False, [ListenSpec("tcp", "127.0.0.1", 0)], None)
    assert c.min_expires == 60 and c.users == base.users
    assert base.mode == "proxy"  # the input is not modified


def test_apply_overrides_validates() -> None:
    with pytest.raises(ConfigError, match="^max_expires: need"):
        apply_overrides(Config(), argparse.Namespace(max_expires=10))


def test_validate_catches_wrong_python_types() -> None:
    with pytest.raises(ConfigError, match="^min_expires: must be an integer"):
        dataclasses.replace(Config(), min_expires="60").validate()


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("min_expires", "30", 30),
    ("t1", "0.25", 0.25),
    ("users", "u.txt", Path("u.txt")),
    ("admin", "off", ADMIN_OFF),
    ("admin", "127.0.0.1:0", "127.0.0.1:0"),
    ("auth_algorithms", "SHA-256, MD5", ["SHA-256", "MD5"]),
    ("listen", "udp:[::1]", ListenSpec("udp", "::1", 5060)),
    ("bare_spin", "inf", math.inf),
    ("bare_spin", "0.002", 0.002),
    ("cpu", "1", 1),
    ("max_transaction_memory", "2048", 2048),
])
def test_convert_cli(name: str, text: str, expected: object) -> None:
    assert convert_cli(name, text) == expected


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("min_expires", "ten", "'ten' is not an integer"),
    ("t1", "x", "'x' is not a number"),
    ("admin", "8080", "expected HOST:PORT"),
    ("listen", "udp", "bad listen spec"),
])
def test_convert_cli_rejects(name: str, text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        convert_cli(name, text)


def test_shipped_example_file_loads_and_states_the_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "leansip.example.toml"
    assert load_config(example) == Config()
    text = example.read_text()
    for name in FIELDS:  # every setting is at least mentioned, commented out or not
        assert f"{name} = " in text, name
