"""The compiled/pure switch (leansip/_build.py): LEANSIP_PURE forces source modules, and a compiled module whose
source changed since the build is never loaded (all core modules then run from source, with a warning).

Each case runs in a fresh interpreter on a copy of the package, so it does not disturb the modules this test
process has loaded and it works the same whether or not this checkout has been compiled."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import leansip
from leansip import _build

PACKAGE = Path(leansip.__file__).resolve().parent
PROBE = ("import leansip.sip.message as m, leansip.server.core as c, leansip._build as b; "
         "print(m.__file__); print(c.__file__); print(b.describe())")


def _copy_package(tmp_path: Path) -> Path:
    """The package source tree (no compiled files) under tmp_path; returns the directory to put on sys.path."""
    shutil.copytree(PACKAGE, tmp_path / "leansip",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled.json"))
    return tmp_path


def _probe(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "always", "-c", PROBE], cwd=root, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", **env})


def _plant_fake_extension(root: Path, module: str) -> Path:
    """A file where the compiled extension of ``module`` would be: loading it would fail, so a run that
    succeeds proves it was not loaded."""
    base = root.joinpath(*module.split("."))
    fake = Path(str(base) + importlib.machinery.EXTENSION_SUFFIXES[0])
    fake.write_bytes(b"not an extension")
    return fake


def test_every_listed_module_exists_as_source() -> None:
    for module in _build.COMPILED:
        assert _build.source_path(module).is_file(), module
    assert "leansip.sip.errors" not in _build.COMPILED  # the phone subclasses SipParseError


def test_source_tree_without_extensions_runs_pure(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    result = _probe(root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("message.py") and lines[1].endswith("core.py")
    assert lines[2] == "pure Python"
    assert "older than their source" not in result.stderr


def test_leansip_pure_skips_present_extensions(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    _plant_fake_extension(root, "leansip.sip.message")
    _plant_fake_extension(root, "leansip.server.core")
    result = _probe(root, LEANSIP_PURE="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2] == "pure Python (LEANSIP_PURE)"


def test_extension_older_than_its_source_is_not_loaded(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    _plant_fake_extension(root, "leansip.sip.message")
    # the build's record says message.py had other content: it was edited after compiling
    manifest = {m: "0" * 64 for m in _build.COMPILED}
    (root / "leansip" / "_compiled.json").write_text(json.dumps(manifest))
    result = _probe(root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith("message.py")
    assert "compiled modules are older than their source (leansip.sip.message)" in result.stderr
    assert "make build" in result.stderr


def test_matching_manifest_means_not_stale(tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    _plant_fake_extension(root, "leansip.sip.message")
    code = ("import json, leansip._build as b; "
            "b.MANIFEST.write_text(json.dumps({m: b.source_hash(m) for m in b.COMPILED})); "
            "print(b.stale_modules())")
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "LEANSIP_PURE": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_this_process_runs_and_reports_the_build_its_checkout_holds() -> None:
    """Compiled where this checkout has a current build of every listed module, pure Python where it has none,
    is stale, or LEANSIP_PURE asks for it; and the one-line report says which, with the count."""
    _build.report()  # every listed module imported
    built = [m for m in _build.COMPILED if _build.extension_paths(m)]
    pure = bool(os.environ.get("LEANSIP_PURE", "") not in ("", "0") or _build.stale_modules() or not built)
    expected = [] if pure else built
    assert _build.compiled_modules() == expected
    for module in _build.COMPILED:
        assert str(sys.modules[module].__file__).endswith(".py") == (module not in expected), module
    if pure:
        assert _build.describe() in ("pure Python", "pure Python (LEANSIP_PURE)")
    else:
        assert _build.describe() == f"mypyc-compiled ({len(built)} of {len(_build.COMPILED)} core modules built)"


def test_make_test_fails_when_a_compiler_is_here_and_the_core_runs_pure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A type error mypyc refuses made the install fall back to pure Python quietly, and CI stayed green on
    code 5-7x slower than BENCHMARKS.md describes: ``make test`` now stops on it (``_build.main``)."""
    monkeypatch.delenv("LEANSIP_PURE", raising=False)
    monkeypatch.setattr(_build, "c_compiler", lambda: "/usr/bin/gcc")
    monkeypatch.setattr(_build, "compiled_modules", lambda: [m for m in _build.COMPILED if "server" not in m])
    ok, line = _build.check_complete()
    servers = [m for m in _build.COMPILED if "server" in m]
    assert not ok
    assert f"/usr/bin/gcc is here: {len(servers)} of {len(_build.COMPILED)} core modules run uncompiled" in line
    assert servers[0] in line and "LEANSIP_REQUIRE_COMPILED=1" in line

    monkeypatch.setattr(_build, "compiled_modules", lambda: list(_build.COMPILED))
    assert _build.check_complete()[0]  # all compiled
    monkeypatch.setattr(_build, "compiled_modules", lambda: [])
    monkeypatch.setattr(_build, "c_compiler", lambda: None)
    assert _build.check_complete()[0]  # no compiler: pure Python is the best this machine can do
    monkeypatch.setattr(_build, "c_compiler", lambda: "/usr/bin/gcc")
    monkeypatch.setenv("LEANSIP_PURE", "1")
    assert _build.check_complete()[0]  # asked for


def test_make_test_runs_the_check_and_stops_on_it() -> None:
    makefile = (PACKAGE.parent / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "sys.exit(b.main())" in recipe and "$(VENV)/bin/mypy" in recipe
    assert recipe.index("b.main()") < recipe.index("-m pytest")  # before the suite, not after it


def test_c_compiler_needs_the_python_headers_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_build, "python_headers", lambda: False)  # a compiler without python3-dev
    assert _build.c_compiler() is None
