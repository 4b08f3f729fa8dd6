"""Build hook: compiles the core modules listed in ``leansip/_build.py`` with mypyc (everything else is in
pyproject.toml). With ``LEANSIP_PURE=1``, or when mypyc or a C compiler is missing, the package installs as
pure Python and works the same, only slower. ``LEANSIP_REQUIRE_COMPILED=1`` makes a failed compile fail the
install with the compiler's or mypy's own message (``make test`` tells you to run that when the build fell
back)."""

from __future__ import annotations

import json
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from leansip import _build  # noqa: E402


def _remove_compiled() -> None:
    """Delete the extensions of an earlier build, so a failed build leaves a clean pure-Python package."""
    for module in _build.COMPILED:
        for path in _build.extension_paths(module):
            path.unlink(missing_ok=True)
    _build.MANIFEST.unlink(missing_ok=True)


def _required() -> bool:
    return os.environ.get("LEANSIP_REQUIRE_COMPILED", "") not in ("", "0")


def _extensions() -> list[object]:
    if os.environ.get("LEANSIP_PURE", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("leansip: mypyc not available, installing pure Python", file=sys.stderr)
        return []
    paths = [str(_build.source_path(m).relative_to(_build.ROOT)) for m in _build.COMPILED]
    try:
        # third-party modules (redis, ...) are imported by modules that stay interpreted: no stubs needed
        extensions = mypycify(["--ignore-missing-imports", *paths],
                              opt_level=os.environ.get("MYPYC_OPT_LEVEL", "3"), group_name="leansip_core")
    except (Exception, SystemExit) as exc:  # a type error mypyc refuses to compile: say it, stay pure
        if _required():
            raise
        print(f"leansip: mypyc could not compile the core ({exc!r}); installing pure Python", file=sys.stderr)
        _remove_compiled()
        return []
    _build.MANIFEST.write_text(json.dumps({m: _build.source_hash(m) for m in _build.COMPILED}, indent=1) + "\n")
    return extensions


class _BuildOrFallBack(build_ext):
    """Compile the extensions; if the C compiler fails, say so and leave a working pure-Python package."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - CompileError, LinkError, a missing compiler: all mean "no C"
            if _required():
                raise
            _remove_compiled()
            print(f"leansip: compiling the core failed ({exc}); installing pure Python", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": _BuildOrFallBack})
