"""The call and gateway settings of the TOML config: the gateway tables load, errors name the file, the line and
the nested key, the tables survive --print-config, and the ``leansip cdr`` command reads a records file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leansip.app import cli
from leansip.app.cdr import CdrWriter
from leansip.app.config import Config, ConfigError, config_to_toml, load_config
from leansip.server.calls import CallTracker
from tests.unit.proxy_kit import ALICE, BOB1, as_request, as_response, request, response_to

GATEWAYS = """\
mode = "proxy"
max_calls = 500

[gateways.pstn]
policy = "priority"
probe_interval = 5
timeout = 1.5

[[gateways.pstn.destinations]]
address = "192.0.2.10:5070"
priority = 1

[[gateways.pstn.destinations]]
address = "192.0.2.11"
transport = "tcp"
priority = 2

[gateways.sip-trunk]
destinations = ["198.51.100.1", "198.51.100.2:5080"]

[[gateway_routes]]
prefix = "+49"
set = "pstn"

[[gateway_routes]]
domain = "trunk.example.com"
set = "sip-trunk"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leansip.toml"
    path.write_text(text)
    return path


def test_gateway_tables_load_and_come_back_from_print_config(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, GATEWAYS))
    assert c.max_calls == 500 and set(c.gateways) == {"pstn", "sip-trunk"}
    assert c.gateways["pstn"]["destinations"][1] == {"address": "192.0.2.11", "transport": "tcp", "priority": 2}
    assert [r["set"] for r in c.gateway_routes] == ["pstn", "sip-trunk"]
    again = load_config(write(tmp_path, config_to_toml(c)))
    assert again == c


def test_call_settings_defaults() -> None:
    c = Config()
    assert (c.calls, c.max_calls, c.call_timeout, c.cdr, c.cdr_retention_days) == (True, 100000, 14400.0, True, 90)
    assert c.cdr_path == Path("var/cdr.db") and c.gateways == {} and c.gateway_routes == []
    assert Config(cdr_db=Path("/x/y.db")).cdr_path == Path("/x/y.db")


@pytest.mark.parametrize(("change", "line", "key", "words"), [
    ('policy = "priority"', 5, "gateways.pstn.policy", None),  # control: no error
    ('policy = "fastest"', 5, "gateways.pstn.policy", "must be one of"),
    ("timeout = 1.5", 7, "gateways.pstn.timeout", None),
    ("timeout = -1", 7, "gateways.pstn.timeout", "> 0 seconds"),
    ('address = "192.0.2.11"', 14, "gateways.pstn.destinations[1].address", None),
    ('address = "192.0.2.11:0"', 14, "gateways.pstn.destinations[1].address", "1-65535"),
    ('domain = "trunk.example.com"', 26, "gateway_routes[1].domain", None),
    ('set = "sip-trunk"', 27, "gateway_routes[1].set", None),
])
def test_mistakes_name_the_file_line_and_nested_key(tmp_path: Path, change: str, line: int, key: str,
                                                     words: str | None) -> None:
    lines = GATEWAYS.splitlines()
    original = next(i for i, text in enumerate(lines) if text.split("=")[0] == change.split("=")[0]
                    and (i + 1 == line))
    if words is None:  # the line numbers this table relies on
        assert lines[original] == change
        return
    lines[original] = change
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:{line}: {key}: ") and words in str(info.value)


def test_a_route_to_an_unknown_set_points_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GATEWAYS.replace('set = "sip-trunk"', 'set = "trunk"'))
    with pytest.raises(ConfigError, match=rf"^{path}:27: gateway_routes\[1\]\.set: no gateway set 'trunk'"):
        load_config(path)


def test_gateways_must_be_tables(tmp_path: Path) -> None:
    path = write(tmp_path, 'gateways = "pstn"\n')
    with pytest.raises(ConfigError, match=rf"^{path}:1: gateways: must be a table"):
        load_config(path)


def test_tables_have_no_command_line_flags() -> None:
    parser = cli.build_parser()
    text = parser._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    assert "--max-calls" in text and "--no-calls" in text and "--cdr-db" in text
    assert "--gateways" not in text and "--gateway-routes" not in text


def test_cdr_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="^cdr_retention_days: must be >= 0"):
        Config(cdr_retention_days=-1).validate()
    with pytest.raises(ConfigError, match="^call_timeout: must be > 0"):
        Config(call_timeout=0).validate()
    with pytest.raises(ConfigError, match="^max_calls: must be >= 1"):
        Config(max_calls=0).validate()


# --- leansip cdr ----------------------------------------------------------------------------------------
def _records(path: Path) -> None:
    tracker = CallTracker()
    for i, (caller, start) in enumerate([("alice", 1_714_557_600.0), ("carol", 1_714_557_700.0)]):
        inv = as_request(request("INVITE", "sip:bob@leansip", call_id=f"c{i}", from_user=caller))
        call = tracker.start(inv, ALICE, "udp", start)
        assert call is not None
        tracker.answered(call, as_response(response_to(inv, 200)), BOB1, "udp", start + 1)
        tracker.in_dialog(as_request(request("BYE", "sip:bob@192.0.2.21", call_id=f"c{i}", from_user=caller,
                                             to_tag="callee1", cseq=2)), start + 61)
    writer = CdrWriter(path)
    writer.submit(tracker.drain())
    writer.close()


def test_cdr_command_prints_a_table_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cdr.db"
    _records(db)
    assert cli.main(["cdr", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["START", "(local)", "TALK", "CALLER"]
    assert "carol@leansip" in out[1] and "0:01:00" in out[1] and "bye" in out[1] and "caller" in out[1]
    assert cli.main(["cdr", "--db", str(db), "--user", "alice", "--csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert len(csv_lines) == 2 and csv_lines[1].split(",")[5] == "alice@leansip"
    assert cli.main(["cdr", "--db", str(db), "--since", "2024-05-01T10:01", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["total"] == 1 and doc["cdrs"][0]["caller"] == "carol@leansip"


def test_cdr_command_finds_the_database_through_the_config(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "records.db"
    _records(db)
    config = write(tmp_path, f'cdr_db = "{db}"\n')
    assert cli.main(["cdr", "--config", str(config), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "carol@leansip" in out and "(1 of 2; --limit N for more)" in out


@pytest.mark.parametrize(("args", "status", "words"), [
    (["--since", "last tuesday"], 2, "bad time"),
    (["--limit", "0"], 2, "--limit must be >= 1"),
    (["--db", "/nonexistent/cdr.db"], 1, "no such file"),
])
def test_cdr_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                        status: int, words: str) -> None:
    db = tmp_path / "cdr.db"
    _records(db)
    assert cli.main(["cdr", "--db", str(db), *args] if "--db" not in args else ["cdr", *args]) == status
    err = capsys.readouterr().err
    assert err.startswith("leansip: error: ") and words in err and err.count("\n") == 1
