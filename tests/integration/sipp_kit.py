"""Running SIPp scenarios from tests/data/sipp against a ``leansip serve`` process (see helpers.ServerProcess).

:class:`Sipp` runs one client scenario to completion and reads its statistics file; :class:`SippServer` keeps a
UAS scenario running in the background and stops it by its own process id.
"""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path
from types import TracebackType

from tests.conftest import REPO_ROOT, free_udp_port

SCENARIOS = REPO_ROOT / "tests" / "data" / "sipp"


def scenario(name: str, workdir: Path, **replace: str) -> Path:
    """Path of a scenario; with ``replace``, a copy in ``workdir`` with each ``@KEY@`` replaced."""
    path = SCENARIOS / name
    if not replace:
        return path
    text = path.read_text()
    for key, value in replace.items():
        text = text.replace(f"@{key}@", value)
    out = workdir / name
    out.write_text(text)
    return out


class SippResult:
    def __init__(self, returncode: int, stats: dict[str, str], output: str, errors: str) -> None:
        self.returncode = returncode
        self.stats = stats
        self.output = output
        self.errors = errors

    def count(self, name: str) -> int:
        """A cumulative counter of the statistics file, e.g. ``SuccessfulCall`` or ``FailedCall``."""
        return int(self.stats.get(f"{name}(C)", "0") or 0)

    def __repr__(self) -> str:
        return (f"<sipp rc={self.returncode} ok={self.count('SuccessfulCall')} failed={self.count('FailedCall')}>"
                f"\n{self.errors[-3000:]}\n{self.output[-1500:]}")


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_sipp(server_port: int, scenario_path: Path, workdir: Path, args: list[str], *, name: str,
             timeout: float = 60.0, host: str = "127.0.0.1") -> SippResult:
    """Run a client scenario against ``host``:``server_port`` until it ends (``-m`` in ``args``); ``host``
    ``::1`` runs it over IPv6 loopback (SIPp writes ``[local_ip]`` in brackets then)."""
    stat = workdir / f"{name}.csv"
    errors = workdir / f"{name}.errors"
    for _attempt in range(3):
        # the port was free when picked; another program (or, with -t t1, a TCP socket on the same number) may
        # take it before SIPp binds it: SIPp then ends at once with "Unable to bind", having sent nothing
        cmd = ["sipp", _target(host, server_port), "-sf", str(scenario_path), "-i", host,
               "-p", str(free_udp_port(host)), "-nostdin", "-recv_timeout", "5000",
               "-timeout", str(int(timeout) - 5),
               "-trace_stat", "-stf", str(stat), "-trace_err", "-error_file", str(errors), *args]
        proc = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        said = proc.stdout + proc.stderr + (errors.read_bytes() if errors.exists() else b"")
        if proc.returncode == 0 or b"Unable to bind" not in said:
            break
        stat.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)
    stats: dict[str, str] = {}
    if stat.exists():
        rows = list(csv.reader(stat.read_text(errors="replace").splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(proc.returncode, stats, proc.stdout.decode(errors="replace"),
                      errors.read_text(errors="replace") if errors.exists() else "")


def _udp_port_bound(port: int, host: str = "127.0.0.1") -> bool | None:
    """Whether some socket is bound to UDP ``port`` (from /proc/net/udp or udp6; None where there is none).
    Looked up instead of probed with a bind, which could itself take the port from a SIPp starting then."""
    try:
        lines = Path("/proc/net/udp6" if ":" in host else "/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in lines if line.strip())


class SippServer:
    """A UAS scenario listening on a free port, e.g. the callee of a call: ``with SippServer(...) as uas``."""

    def __init__(self, scenario_path: Path, workdir: Path, server_port: int, *, name: str = "uas",
                 host: str = "127.0.0.1", extra: list[str] | None = None, port: int | None = None) -> None:
        """``extra``: more SIPp options (``-aa`` answers OPTIONS); ``port``: listen there (a restart)."""
        self.host = host
        self.port = port or free_udp_port(host)
        self.messages = workdir / f"{name}.messages"
        self.cmd = ["sipp", _target(host, server_port), "-sf", str(scenario_path), "-i", host,
                    "-p", str(self.port), "-nostdin", "-trace_msg", "-message_file", str(self.messages),
                    *(extra or [])]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SippServer:
        self.stderr = self.workdir / f"{self.messages.stem}.stderr"
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 10.0) -> None:
        """Return once SIPp holds its port. Without this wait, a port the kernel hands out again before SIPp
        binds it (the next ``free_udp_port()``) or a SIPp that failed to start makes every call of the test
        fail as an unanswered INVITE, far from the cause."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.stderr.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"sipp UAS exited at start (rc={self.proc.returncode}): {err}")
            bound = _udp_port_bound(self.port, self.host)
            if bound is None:  # no /proc/net/udp to look at: give SIPp a moment, as before this check
                time.sleep(0.5)
                return
            if bound:
                return
            time.sleep(0.02)
        raise RuntimeError(f"sipp UAS did not bind {_target(self.host, self.port)} within {timeout} s")

    def received(self, start_line: str) -> int:
        """How many received messages began with ``start_line`` (from the -trace_msg log)."""
        if not self.messages.exists():
            return 0
        text = self.messages.read_text(errors="replace")
        return sum(1 for chunk in text.split("message received")[1:]
                   if chunk.split("\n", 1)[-1].lstrip().startswith(start_line))

    def kill(self) -> None:
        """SIGKILL, as a crash: the port stops answering at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
