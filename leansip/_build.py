"""Which modules of the core run compiled with mypyc, and the switch back to pure Python.

The protocol core (message model, parser, digest, transactions, registrar, proxy) is plain typed Python.
``setup.py`` compiles the modules listed in :data:`COMPILED` to C extensions with mypyc when it can (``pip
install`` / ``make``); Python then imports the ``.so`` beside each ``.py`` instead of the source. The
source stays the single definition: the compiled module is the same code, about twice as fast.

Two guards keep the compiled build from ever running code that differs from the source next to it:

* ``LEANSIP_PURE=1`` in the environment makes every listed module load from its ``.py`` (for debugging,
  profiling with Python tools, and comparing the two builds: ``bench/core_micro.py``);
* the build records a hash of each compiled source in ``_compiled.json``; if a source no longer matches
  (edited since the last build), all listed modules load from source, with one warning saying to rebuild.

It is all or nothing: compiled modules call each other's native classes directly, so a pure ``message``
next to a compiled ``core`` would hand it objects of the wrong type.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: Modules compiled by mypyc: those on the path from a datagram to its reply. ``errors`` stays interpreted
#: because the phone subclasses its exception (mypyc classes cannot be subclassed from interpreted code).
COMPILED: tuple[str, ...] = (
    "leansip.io.bareloop",
    "leansip.io.udpserver",
    "leansip.sip.digest",
    "leansip.sip.digest_auth",
    "leansip.sip.digest_hash",
    "leansip.sip.digest_parse",
    "leansip.sip.framing",
    "leansip.sip.message",
    "leansip.sip.message_headers",
    "leansip.sip.message_model",
    "leansip.sip.message_parse",
    "leansip.sip.ratelimit",
    "leansip.sip.send",
    "leansip.sip.transaction",
    "leansip.sip.txstate",
    "leansip.sip.txtable",
    "leansip.sip.uri",
    "leansip.server.calls",
    "leansip.server.context",
    "leansip.server.core",
    "leansip.server.flows",
    "leansip.server.gateways",
    "leansip.server.handler",
    "leansip.server.location",
    "leansip.server.proxy",
    "leansip.server.redirect",
    "leansip.server.registrar",
    "leansip.server.replycache",
    "leansip.server.routing",
    "leansip.server.services",
    "leansip.server.stateful",
    "leansip.server.stats",
    "leansip.server.stores.memory",
    "leansip.server.timing",
    "leansip.server.users",
)

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).resolve().parent / "_compiled.json"


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_hash(module: str) -> str:
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def extension_paths(module: str) -> list[Path]:
    """The compiled extension files present for ``module`` (normally zero or one)."""
    base = str(source_path(module).with_suffix(""))
    return [p for p in (Path(base + s) for s in importlib.machinery.EXTENSION_SUFFIXES) if p.exists()]


def _extension_present(module: str) -> bool:
    return bool(extension_paths(module))


def stale_modules() -> list[str]:
    """Compiled modules whose source changed since the build (or with no record of the build)."""
    built = [m for m in COMPILED if _extension_present(m)]
    if not built:
        return []
    try:
        recorded = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        recorded = {}
    return [m for m in built if recorded.get(m) != source_hash(m)]


def _pure_requested() -> bool:
    return os.environ.get("LEANSIP_PURE", "") not in ("", "0")


class _PureFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules as source files only, so their compiled extensions are never loaded."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def use_pure_python() -> None:
    if not any(isinstance(f, _PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureFinder())


def select() -> None:
    """Called once by ``leansip/__init__.py``, before any listed module is imported."""
    if _pure_requested():
        use_pure_python()
        return
    stale = stale_modules()
    if stale:
        warnings.warn(f"leansip: compiled modules are older than their source ({', '.join(stale[:3])}"
                      f"{' ...' if len(stale) > 3 else ''}); running pure Python. Rebuild with: make build",
                      RuntimeWarning, stacklevel=2)
        use_pure_python()


def compiled_modules() -> list[str]:
    """The listed modules that are loaded, and loaded from a compiled extension."""
    return [m for m in COMPILED if m in sys.modules and not str(getattr(sys.modules[m], "__file__", "")
                                                                 ).endswith(".py")]


def describe() -> str:
    """One line for logs and benchmark reports: which build of the core this process runs."""
    if compiled_modules():
        built = sum(1 for m in COMPILED if _extension_present(m))
        return f"mypyc-compiled ({built} of {len(COMPILED)} core modules built)"
    return "pure Python" + (" (LEANSIP_PURE)" if _pure_requested() else "")



def report() -> str:
    """:func:`describe` after importing every listed module: which build this environment runs (printed by
    ``make test`` and recorded by ``make bench``)."""
    for module in COMPILED:
        importlib.import_module(module)
    return describe()


def c_compiler() -> str | None:
    """The C compiler this Python builds extensions with, when it and Python's headers are installed (so mypyc
    can compile the core here); None when the pure-Python fallback is expected."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    compiler = shutil.which(cc[0]) if cc else None
    if compiler is None or not python_headers():
        return None
    return compiler


def python_headers() -> bool:
    """Are the headers of this Python installed (``python3-dev`` on Debian)? mypyc's C needs them."""
    return os.path.exists(os.path.join(sysconfig.get_paths().get("include", ""), "Python.h"))


def check_complete() -> tuple[bool, str]:
    """(ok, line) for ``make test``: on a machine with a C compiler every listed module must run compiled.

    A type error mypyc refuses, a failed C build or an edit since the build all make the install fall back to
    pure Python quietly (pip -q), and the suite would then test code 5-7x slower than BENCHMARKS.md describes.
    ``LEANSIP_PURE=1`` asks for pure Python, and a machine without a compiler cannot do better: both pass.
    """
    text = report()
    if _pure_requested():
        return True, text
    compiler = c_compiler()
    loaded = compiled_modules()
    if compiler is None or len(loaded) == len(COMPILED):
        return True, text
    missing = [m for m in COMPILED if m not in loaded]
    return False, (f"{text}, but {compiler} is here: {len(missing)} of {len(COMPILED)} core modules run "
                   f"uncompiled ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}). See why with: "
                   "LEANSIP_REQUIRE_COMPILED=1 .venv/bin/python -m pip install --no-deps -e .")



def main() -> int:
    """``make test``'s first check: prints ``core: ...`` and returns 1 when :func:`check_complete` fails."""
    ok, line = check_complete()
    print("core:", line, flush=True)
    return 0 if ok else 1
