"""Helpers shared by every test, usable both as plain functions and as pytest fixtures.

Import them where a fixture does not fit (module level, helpers, several ports)::

    from tests.conftest import free_udp_port, require_program

or ask for the fixture of the same name: ``require_program`` (the function itself),
``free_udp_port`` / ``free_tcp_port`` (one port number), ``tmp_var`` (a per-test directory standing
in for ./var) and ``test_output_dir`` (where to keep screenshots and logs).

External programs: a missing one skips the test with the reason and the Debian package to install,
except when ``LEANSIP_REQUIRE_EXTERNAL=1`` (CI, see .ci/run) where it fails, so a broken CI image
cannot pass by skipping everything.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

#: Debian package that provides each external program, for the skip message.
PACKAGES = {
    "sipp": "sip-tester",
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "baresip": "baresip baresip-core",
    "sox": "sox",
    "kamailio": "kamailio",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "sipsak": "sipsak",
}
#: Daemons such as kamailio live in sbin, which is not on a normal user's PATH.
_EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
REPO_ROOT = Path(__file__).resolve().parent.parent


def external_required() -> bool:
    """True when missing external programs must fail tests instead of skipping them."""
    return os.environ.get("LEANSIP_REQUIRE_EXTERNAL") == "1"


def require_program(name: str) -> str:
    """Return the full path of program ``name``, or skip (fail under LEANSIP_REQUIRE_EXTERNAL=1)."""
    path = shutil.which(name)
    if path is None:
        search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_DIRS])
        path = shutil.which(name, path=search)
    if path is not None:
        return path
    package = PACKAGES.get(name, name)
    reason = f"external program {name!r} not found (install: apt-get install -y {package})"
    if external_required():
        pytest.fail(f"{reason}; LEANSIP_REQUIRE_EXTERNAL=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


def _free_port(kind: socket.SocketKind, host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago on ``host`` (the kernel's pick for port 0)."""
    return _free_port(socket.SOCK_DGRAM, host)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the kernel's pick for port 0)."""
    return _free_port(socket.SOCK_STREAM, host)


def test_output_dir(request: pytest.FixtureRequest) -> Path:
    """``./test-output/<module>.<test name>/``, emptied and created: keep screenshots and logs here.

    Unlike tmp_path it survives the run at a predictable place, so CI can upload it and a person can
    look at the screenshot of a failed browser test.  The module stem is part of the name because
    two files may well both have a ``test_register``.
    """
    module = Path(str(request.node.path)).stem if getattr(request.node, "path", None) else "session"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{module}.{request.node.name}").strip("_")
    path = REPO_ROOT / "test-output" / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# Importing the helper into a test module must not make pytest collect it as a test.
test_output_dir.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(name="require_program")
def _require_program_fixture() -> object:
    """The :func:`require_program` function, for tests that prefer fixtures to imports."""
    return require_program


@pytest.fixture(name="free_udp_port")
def _free_udp_port_fixture() -> int:
    return free_udp_port()


@pytest.fixture(name="free_tcp_port")
def _free_tcp_port_fixture() -> int:
    return free_tcp_port()


@pytest.fixture(name="test_output_dir")
def _test_output_dir_fixture(request: pytest.FixtureRequest) -> Path:
    return test_output_dir(request)


@pytest.fixture
def tmp_var(tmp_path: Path) -> Path:
    """A fresh per-test directory to use where the server would use ./var (db, users file)."""
    path = tmp_path / "var"
    path.mkdir()
    return path


def pytest_report_header(config: pytest.Config) -> str:
    mode = "fail" if external_required() else "skip"
    return f"leansip: missing external programs will {mode} tests (LEANSIP_REQUIRE_EXTERNAL)"
