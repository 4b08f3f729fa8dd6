"""The shared test helpers behave as documented: skip vs fail, usable ports, output directories."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import (
    REPO_ROOT,
    free_tcp_port,
    free_udp_port,
    require_program,
    test_output_dir,  # imported on purpose: it must not be collected as a test here
)

MISSING = "leansip-no-such-program-xyz"


def test_require_program_finds_a_program() -> None:
    path = require_program("sh")
    assert Path(path).name == "sh" and Path(path).exists()


def test_require_program_skips_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEANSIP_REQUIRE_EXTERNAL", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"external program '{MISSING}' not found"):
        require_program(MISSING)


def test_require_program_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEANSIP_REQUIRE_EXTERNAL", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("tests.conftest._EXTRA_DIRS", ())
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y sip-tester"):
        require_program("sipp")


def test_require_program_fails_when_external_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANSIP_REQUIRE_EXTERNAL", "1")
    with pytest.raises(pytest.fail.Exception, match="LEANSIP_REQUIRE_EXTERNAL=1"):
        require_program(MISSING)


def test_require_program_fixture_is_the_function(require_program: object) -> None:
    assert require_program("sh")  # type: ignore[operator]


def test_free_ports_can_be_bound() -> None:
    for kind, port in ((socket.SOCK_DGRAM, free_udp_port()), (socket.SOCK_STREAM, free_tcp_port())):
        assert 1024 <= port <= 65535
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", port))


def test_port_fixtures(free_udp_port: int, free_tcp_port: int) -> None:
    assert isinstance(free_udp_port, int) and isinstance(free_tcp_port, int)


def test_tmp_var_is_a_fresh_directory(tmp_var: Path) -> None:
    assert tmp_var.is_dir() and list(tmp_var.iterdir()) == []


@pytest.mark.parametrize("case", ["a b/c"])
def test_output_dir_fixture(test_output_dir: Path, case: str) -> None:
    assert test_output_dir.is_dir()
    assert test_output_dir.parent == REPO_ROOT / "test-output"
    assert test_output_dir.name == "test_conftest.test_output_dir_fixture_a_b_c"
    (test_output_dir / "log.txt").write_text("x")


def test_output_dir_is_emptied_for_each_run(request: pytest.FixtureRequest) -> None:
    first = test_output_dir(request)
    (first / "stale.png").write_bytes(b"old")
    second = test_output_dir(request)
    assert first == second and list(second.iterdir()) == []
