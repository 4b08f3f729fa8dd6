#!/usr/bin/env python3
"""leansip vs Kamailio, side by side: the one command behind `make bench` and `leansip bench`.

    python3 bench/bench.py [--quick] [--servers kamailio,leansip,bare]
                           [--scenarios register,register-auth,stateless,stateful,stateful-script,store-durable,
                                        store-relaxed,store-redis,stateful-nocalls]
                           [--no-memory] [--no-profile] [--out DIR] [--no-report]

For each scenario and each server: start the server pinned to core 1 (Kamailio: one UDP worker, `-n 1 -m 2048 -M 16
-x tlsf` as in bench/ANCHOR.md; leansip: one worker, --location memory, --log-level error; `bare`: the same leansip
with --bare, its UDP served by a polling loop that never sleeps), run bench/harness.sh
(SIPp on core 0: latency at LAT_RATE, CPU per call at a fixed rate, rate ladder + bisection), stop the server.
The store-* scenarios are leansip only: the REGISTER scenario again with registrations in SQLite under
--durability durable (group commit: each 200 OK after its commit) and relaxed (written behind every 50 ms), and in
Redis (a redis-server started here on PORT_BASE+60, pinned to core 0 with SIPp), against the register scenario's
--location memory in the report.
Then (leansip only) memory per binding / per live transaction, and a py-spy profile of the hot path.
Finally bench/report.py writes BENCHMARKS.md and bench/plot.py the PNGs.  Raw output: bench/results/<date>/.

Environment knobs (defaults for the full run in brackets):
  QUICK=1          smoke test in ~2-3 min: few rates, 2 s steps, no bisection, small memory test
  RATES_KAMAILIO   ladder for Kamailio [1000 2000 3000 4000 6000 8000 12000 16000 24000 32000 48000 64000]
  RATES_LEANSIP    ladder for leansip [100 200 300 400 600 800 1000 1500 2000 3000 4000 6000 8000 12000 16000
                   24000 32000 48000 64000]
  RATES_BARE       ladder for leansip --bare [same as RATES_LEANSIP]
  STEP_SECS [5]  LAT_RATE [500]  LAT_SECS [10]  REFINE [2]  SETTLE [5]  FIXED_DRAIN [34, calls only]
  FIXED_REGISTER [1000]  FIXED_CALL [200]   fixed-rate CPU step (same rate for both servers)
  FIXED_ROUNDS [3]   fixed-rate steps per scenario; the report takes the median
  MEM_BINDINGS [100000]  MEM_RATE [1000]  MEM_TXNS [5000]  MEM_CALLS [20000]   memory test
  PORT_BASE [38260]  the servers listen on PORT_BASE (Kamailio) / PORT_BASE+1 (leansip, bare); sipp uses
                     PORT_BASE+40..+52
Every load is bounded (sipp -m, -timeout, coreutils timeout) and only touches 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KAMAILIO = "/usr/sbin/kamailio"
_REGISTRAR = ["--mode", "registrar", "--stateless", "--no-auth"]
#: name -> (kamailio config or None for leansip only, leansip serve flags, harness scenario); the flags come after
#: the defaults (--location memory), so a scenario's --location wins
SCENARIOS: dict[str, tuple[str | None, list[str], str]] = {
    "register": ("registrar", _REGISTRAR, "register"),
    "register-auth": ("registrar-auth", ["--mode", "registrar", "--stateless", "--auth"], "register-auth"),
    "stateless": ("proxy-stateless", ["--mode", "proxy", "--stateless", "--no-auth"], "call"),
    "stateful": ("proxy-stateful", ["--mode", "proxy", "--stateful", "--no-auth"], "call"),
    # the same calls through a route script that does what the built-in proxy does (bench/routes/proxy.py):
    # leansip only (Kamailio's row is "stateful"), compared with leansip's "stateful" row of the same run
    "stateful-script": (None, ["--mode", "proxy", "--stateful", "--no-auth",
                               "--routes", str(HERE / "routes" / "proxy.py")], "call"),
    "store-durable": (None, [*_REGISTRAR, "--location", "sqlite", "--durability", "durable"], "register"),
    "store-relaxed": (None, [*_REGISTRAR, "--location", "sqlite", "--durability", "relaxed"], "register"),
    "store-redis": (None, [*_REGISTRAR, "--location", "redis"], "register"),
    # the stateful call without call tracking and CDRs (issue 22's budget: tracking costs <= 10 % of the stateful
    # call's CPU): leansip only, and only the fixed-rate CPU step (no ladder, no latency)
    "stateful-nocalls": (None, ["--mode", "proxy", "--stateful", "--no-auth", "--no-calls"], "call"),
}
DEFAULT_SCENARIOS = ("register,register-auth,stateless,stateful,stateful-script,store-durable,store-relaxed,"
                     "store-redis,stateful-nocalls")
#: scenarios measured by their fixed-rate step alone: a switch of leansip's against itself
FIXED_ONLY = ("stateful-nocalls",)
QUICK = os.environ.get("QUICK", "0") == "1"
#: the server kinds that are leansip (`bare` is `leansip serve --bare`)
LEANSIP_KINDS = ("leansip", "bare")


def env(name: str, full: str, quick: str | None = None) -> str:
    """An environment knob with a full-run default and a QUICK=1 default."""
    return os.environ.get(name, quick if (QUICK and quick is not None) else full)


def say(*a: object) -> None:
    print("[bench]", *a, flush=True)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)  # type: ignore[call-overload,no-any-return]


# ---------------------------------------------------------------- prerequisites
def ensure_tools(need_kamailio: bool, need_pyspy: bool) -> dict[str, bool]:
    """Check sipp, kamailio, taskset, matplotlib, py-spy; install what is missing when we can (apt as root, pip)."""
    have: dict[str, bool] = {}
    apt = []
    if not shutil.which("sipp"):
        apt.append("sip-tester")
    if need_kamailio and not Path(KAMAILIO).exists():
        apt.append("kamailio")
    if apt:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say("installing", *apt, "with apt-get")
            subprocess.run(["apt-get", "update", "-q"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", *apt], check=False)
        else:
            say("missing", *apt, "- install them (Debian: apt-get install sip-tester kamailio)")
    have["sipp"] = bool(shutil.which("sipp"))
    have["kamailio"] = Path(KAMAILIO).exists()
    have["taskset"] = bool(shutil.which("taskset"))
    for mod, pkg in (("matplotlib", "matplotlib"),) + ((("py_spy_dummy", "py-spy"),) if need_pyspy else ()):
        if pkg == "py-spy":
            ok = pyspy() is not None
        else:
            ok = run([sys.executable, "-c", f"import {mod}"]).returncode == 0
        if not ok:
            say("pip install", pkg)
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", pkg], check=False)
            ok = pyspy() is not None if pkg == "py-spy" else \
                run([sys.executable, "-c", f"import {mod}"]).returncode == 0
        have[pkg] = ok
    return have


def pyspy() -> str | None:
    """py-spy on PATH, or the one pip put beside this Python (a venv's bin/, not on PATH under `make bench`)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def host_busy(secs: float = 2.0) -> float:
    """Busy % of the whole machine (of 100*nproc) over `secs`, from the idle+iowait jiffies in /proc/stat."""
    def idle() -> int:
        f = open("/proc/stat").readline().split()
        return int(f[4]) + int(f[5])
    tck = os.sysconf("SC_CLK_TCK")
    i0, t0 = idle(), time.monotonic()
    time.sleep(secs)
    i1, t1 = idle(), time.monotonic()
    return max(0.0, 100.0 * os.cpu_count() - 100.0 * (i1 - i0) / tck / (t1 - t0))  # type: ignore[operator]


def versions() -> dict[str, str]:
    def first(cmd: list[str]) -> str:
        try:
            out = run(cmd)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    try:
        from importlib.metadata import version
        lv = version("leansip")
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        lv = "?"
    git = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).stdout.strip()
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "leansip": f"{lv} (git {git})",
        "kamailio": first([KAMAILIO, "-v"]),
        "sipp": first(["sipp", "-v"]).split(" ")[0] if shutil.which("sipp") else "missing",
        "sipp_full": next((x for x in (run(["sipp", "-v"]).stdout).split() if x.startswith("v3")), "?")
        if shutil.which("sipp") else "?",
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "event_loop": "uvloop" if run([sys.executable, "-c", "import uvloop"]).returncode == 0 else "asyncio",
    }


# ---------------------------------------------------------------- servers
class Server:
    """One server process, pinned to core 1, stopped with SIGTERM (then SIGKILL) of its own pid."""

    def __init__(self, kind: str, scenario: str, out: Path, port: int, admin_port: int | None,
                 users: Path, extra_env: dict[str, str] | None = None) -> None:
        self.kind, self.scenario, self.out, self.port, self.admin_port = kind, scenario, out, port, admin_port
        self.users = users
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def cmd(self) -> list[str]:
        cfg, flags, _ = SCENARIOS[self.scenario]
        if self.kind == "kamailio":
            return ["taskset", "-c", "1", KAMAILIO, "-DD", "-E", "-f", str(HERE / "kamailio" / f"{cfg}.cfg"),
                    "-l", f"udp:127.0.0.1:{self.port}", "-n", "1", "-m", "2048", "-M", "16", "-x", "tlsf"]
        admin = f"127.0.0.1:{self.admin_port}" if self.admin_port else "off"
        if self.kind == "bare":
            flags = [*flags, "--bare"]  # no spin limit: the polling loop never sleeps
        return ["taskset", "-c", "1", sys.executable, "-m", "leansip", "serve",
                "--listen", f"udp:127.0.0.1:{self.port}", "--auth-algorithms", "MD5",
                "--users", str(self.users), "--location", "memory", "--workers", "1",
                # the default bound (100,000) makes a stateful proxy answer 503 above ~1,000 calls/s: each call
                # leaves 3 transactions for 32 s (RFC 6026 Timers L and M, Timer J); Kamailio gets 2 GB of shm,
                # and so does leansip's transaction table (its default, 256 MiB, is ~1,000 calls/s too)
                "--max-transactions", "1000000", "--max-transaction-memory", "2048",
                "--fail-slow-after", "0", "--fail-block-after", "0",  # no brute-force guard: Kamailio has none
                "--admin", admin, "--log-level", "error", "--db", str(self.out / "leansip.db"),
                "--realm", "127.0.0.1", "--redis-url", f"redis://127.0.0.1:{PORT_BASE + 60}/0", *flags]

    def start(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        if not port_free(self.port):
            raise SystemExit(f"port {self.port} is busy; set PORT_BASE")
        cmd = self.cmd()
        (self.out / "server-cmd.txt").write_text(" ".join(cmd) + "\n")
        e = dict(os.environ, LEANSIP_SECRET="bench-secret-0123456789",
                 PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.extra_env)
        self.proc = subprocess.Popen(cmd, stdout=open(self.out / "server.log", "wb"), stderr=subprocess.STDOUT,
                                     env=e, cwd=str(REPO))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.kind} exited, see {self.out / 'server.log'}")
            if not port_free(self.port):
                time.sleep(1.0)  # Kamailio forks its workers after binding; leansip builds its core first
                self._check_build()
                return self.proc.pid
            time.sleep(0.2)
        raise SystemExit(f"{self.kind} did not open port {self.port}, see {self.out / 'server.log'}")

    def _check_build(self) -> None:
        """A leansip whose compiled core is older than a source file runs as pure Python (leansip._build warns
        and falls back): a core file edited while the bench runs would quietly give the rest of the run pure
        Python figures, 2-3x the compiled ones. Stop instead."""
        if self.kind not in LEANSIP_KINDS or os.environ.get("LEANSIP_PURE") == "1":
            return
        log = (self.out / "server.log").read_text(errors="replace")
        if "running pure Python" in log:
            self.stop()
            raise SystemExit(f"leansip started as pure Python ({self.out / 'server.log'}): a core source is newer "
                             "than the compiled build; run `make build` and do not edit the core during a bench")

    def timings(self) -> object | None:
        """leansip's internal per-step timings (GET /api/timings on the admin port), or None if not there."""
        if not self.admin_port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/api/timings", timeout=3) as r:
                return json.loads(r.read())
        except Exception as exc:  # noqa: BLE001 - any failure means: not available
            return {"unavailable": str(exc)}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def harness(server: Server, pid: int, out: Path, rates: str, fixed: int, extra_env: dict[str, str],
            scenario: str) -> None:
    e = dict(os.environ, TARGET=f"127.0.0.1:{server.port}", SERVER_PID=str(pid), OUT=str(out),
             LABEL=f"{server.kind}", RATES=rates, FIXED_RATE=str(fixed), SIPP_PORT=str(PORT_BASE + 40),
             CALLEE="callee", **extra_env)
    if server.admin_port:  # the server's own figures per step (handler time; --bare: its busy fraction)
        e["ADMIN_URL"] = f"http://127.0.0.1:{server.admin_port}"
    with open(out / "harness.log", "w") as log:
        subprocess.run(["bash", str(HERE / "harness.sh"), scenario], env=e, stdout=log, stderr=subprocess.STDOUT,
                       check=False, timeout=1800)


class RedisServer:
    """The redis-server of the store-redis scenario: on PORT_BASE+60, pinned to core 0 (with SIPp, off the
    server's core), no persistence, flushed per run; its CPU is logged as a RESULT line (kind=redis_cpu)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = PORT_BASE + 60
        self.proc: subprocess.Popen[bytes] | None = None
        self.ticks0 = 0

    def start(self) -> bool:
        exe = shutil.which("redis-server")
        if exe is None:
            return False
        self.proc = subprocess.Popen(["taskset", "-c", "0", exe, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        self.ticks0 = self._ticks()
                        return True
            except OSError:
                time.sleep(0.1)
        self.stop(None)
        return False

    def _ticks(self) -> int:
        assert self.proc is not None
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def stop(self, results: Path | None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if results is not None and results.exists():
            ok = sum(int(r.split(" ok=", 1)[1].split()[0]) for r in results.read_text().splitlines()
                     if r.startswith("RESULT") and " ok=" in r and "kind=latency_probe" not in r)
            ms = (self._ticks() - self.ticks0) * 1000 / os.sysconf("SC_CLK_TCK")
            with open(results, "a") as f:
                f.write(f"RESULT label=redis-server kind=redis_cpu cpu_ms={ms:.0f} registers={ok} "
                        f"us_per_register={1000 * ms / max(ok, 1):.1f}\n")
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def admin_available() -> bool:
    """True once leansip's admin endpoint can be started by `serve` (leansip/app/admin.py with start_admin)."""
    p = REPO / "leansip" / "app" / "admin.py"
    return p.exists() and "def start_admin" in p.read_text()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = int(s.getsockname()[1])
    s.close()
    return p


# ---------------------------------------------------------------- memory and profile (leansip only)
def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_test(outdir: Path) -> None:
    """RSS per registered binding (MEM_BINDINGS via sipp) and per live INVITE transaction (tools/memprobe.py)."""
    n = int(env("MEM_BINDINGS", "100000", "10000"))
    rate = int(env("MEM_RATE", "1000", "1000"))
    ntx = int(env("MEM_TXNS", "5000", "1000"))
    out = outdir / "leansip-memory"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "users-mem.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"mem{i};x\n" for i in range(n)))
    srv = Server("leansip", "stateful", out, PORT_BASE + 1, None, outdir / "users.txt")
    pid = srv.start()
    res = out / "results.txt"
    try:
        time.sleep(1)
        r0 = rss_kib(pid)
        cmd = ["taskset", "-c", "0", "timeout", str(n // rate + 120), "sipp", f"127.0.0.1:{srv.port}",
               "-sf", str(HERE / "sipp" / "register.xml"), "-inf", str(csv), "-i", "127.0.0.1", "-nostdin",
               "-buff_size", "4194304", "-recv_timeout", "10000", "-trace_stat", "-fd", "1",
               "-p", str(PORT_BASE + 45), "-stf", str(out / "stat.csv"), "-m", str(n), "-r", str(rate),
               "-l", "20000", "-timeout", str(n // rate + 100)]
        (out / "cmd.txt").write_text(" ".join(cmd) + "\n")
        say(f"memory: registering {n} bindings at {rate}/s")
        t0 = time.monotonic()
        with open(out / "sipp.out", "w") as so:
            subprocess.run(cmd, stdout=so, stderr=subprocess.STDOUT, check=False, cwd=out)
        secs = time.monotonic() - t0
        stat = run([sys.executable, str(HERE / "tools" / "sippstat.py"), "stat", str(out / "stat.csv")]).stdout.split()
        ok = int(stat[0]) if stat else 0
        time.sleep(2)
        r1 = rss_kib(pid)
        per = (r1 - r0) * 1024 / max(ok, 1)
        line = (f"RESULT label=leansip scenario=memory kind=bindings n={n} ok={ok} failed={stat[1] if stat else '?'} "
                f"retrans={stat[2] if stat else '?'} secs={secs:.0f} rss_before_kib={r0} rss_after_kib={r1} "
                f"bytes_per_binding={per:.0f}")
        say(line)
        with open(res, "a") as f:
            f.write(line + "\n")
        say(f"memory: {ntx} live INVITE transactions with the bindings held")
        mp = run(["taskset", "-c", "0", "timeout", "120", sys.executable, str(HERE / "tools" / "memprobe.py"),
                  "--target", f"127.0.0.1:{srv.port}", "--pid", str(pid), "--n", str(ntx), "--rate", "1000",
                  "--port", str(PORT_BASE + 46)])
        last = (mp.stdout.strip().splitlines() or ["fail=no_output " + mp.stderr[-200:].replace("\n", " ")])[-1]
        line = f"RESULT label=leansip scenario=memory kind=transactions bindings_held={ok} {last}"
        say(line)
        with open(res, "a") as f:
            f.write(line + "\n")
    finally:
        srv.stop()
    # what the call tracker holds per answered call (in-process, tracemalloc: no server, no RSS noise)
    cm = run([sys.executable, str(HERE / "tools" / "callmem.py"), "--n", env("MEM_CALLS", "20000", "5000")])
    last = (cm.stdout.strip().splitlines() or ["fail=no_output " + cm.stderr[-200:].replace("\n", " ")])[-1]
    line = f"RESULT label=leansip scenario=memory kind=calls {last}"
    say(line)
    with open(res, "a") as f:
        f.write(line + "\n")


def profile(outdir: Path, have_pyspy: bool) -> None:
    """py-spy (sampling, 250 Hz, no line numbers) on leansip under a REGISTER load and a stateful call load."""
    out = outdir / "leansip-profile"
    out.mkdir(parents=True, exist_ok=True)
    if not have_pyspy:
        (out / "results.txt").write_text("# py-spy not available: no profile\n")
        return
    secs = int(env("PROFILE_SECS", "10", "4"))
    for scen, rate in (("register", int(env("PROFILE_RATE_REGISTER", "500"))),
                       ("stateful", int(env("PROFILE_RATE_CALL", "150")))):
        sub = out / scen
        # py-spy sees Python frames only: the compiled core would be one opaque `receive`, so profile the
        # same source as pure Python (LEANSIP_PURE=1); the relative weights are what this table is for
        srv = Server("leansip", scen, sub, PORT_BASE + 1, None, outdir / "users.txt", {"LEANSIP_PURE": "1"})
        pid = srv.start()
        try:
            e = dict(os.environ, TARGET=f"127.0.0.1:{srv.port}", SERVER_PID=str(pid), OUT=str(sub),
                     LABEL="leansip-profile", FIXED_RATE=str(rate), FIXED_SECS=str(secs + 4), FIXED_ONLY="1",
                     SIPP_PORT=str(PORT_BASE + 40), LADDER_RTT="0")
            h = subprocess.Popen(["bash", str(HERE / "harness.sh"), SCENARIOS[scen][2]], env=e,
                                 stdout=open(sub / "harness.log", "w"), stderr=subprocess.STDOUT)
            time.sleep(3)  # past the callee registration and sipp start-up
            say(f"profile: py-spy on leansip {scen} at {rate}/s for {secs} s")
            subprocess.run(["timeout", str(secs + 30), pyspy() or "py-spy", "record", "-p", str(pid), "-d", str(secs), "-r",
                            "250", "--nolineno", "-f", "raw", "-o", str(sub / "pyspy.txt")],
                           stdout=subprocess.DEVNULL, stderr=open(sub / "pyspy.err", "w"), check=False)
            h.wait(timeout=secs + 120)
        finally:
            srv.stop()


def core_build() -> str:
    """Which build of the core `leansip serve` runs here (mypyc-compiled or pure Python)."""
    res = run([sys.executable, "-c", "from leansip._build import report; print(report())"], cwd=str(REPO))
    return res.stdout.strip() or "?"


def core_micro(outdir: Path) -> None:
    """The core alone, in-process (bench/core_micro.py), compiled and pure Python: what mypyc buys."""
    out = {}
    for label, extra in (("compiled", {}), ("pure", {"LEANSIP_PURE": "1"})):
        say(f"core micro-benchmark ({label})")
        res = run(["taskset", "-c", "1", sys.executable, str(HERE / "core_micro.py"), "--json",
                   "--n", env("MICRO_N", "3000", "1000"), "--rounds", env("MICRO_ROUNDS", "5", "2")],
                  env=dict(os.environ, **extra), cwd=str(REPO))
        try:
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[label] = {"error": (res.stderr or res.stdout)[-400:]}
    (outdir / "core_micro.json").write_text(json.dumps(out, indent=1))


# ---------------------------------------------------------------- main
PORT_BASE = int(os.environ.get("PORT_BASE", "38260"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="leansip bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="same as QUICK=1 (smoke test, ~2-3 min)")
    ap.add_argument("--servers", default="kamailio,leansip,bare")
    ap.add_argument("--scenarios", default=DEFAULT_SCENARIOS)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md / copy plots")
    ap.add_argument("--out", help="results directory [bench/results/<date>]")
    ap.add_argument("--report-only", metavar="DIR", help="only (re)write the report from an existing results dir")
    a = ap.parse_args(argv)
    global QUICK
    if a.quick:
        QUICK = True
        os.environ["QUICK"] = "1"
    if a.report_only:
        return report(Path(a.report_only), write_md=not a.no_report)
    servers = [s for s in a.servers.split(",") if s]
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s}")
    have = ensure_tools("kamailio" in servers, not a.no_profile)
    if not have["sipp"] or not have["taskset"] or ("kamailio" in servers and not have["kamailio"]):
        say("cannot run without sipp, taskset (and kamailio):", have)
        return 2
    outdir = Path(a.out) if a.out else HERE / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "users.txt", "w") as f:  # digest users for the harness (same as sipp/users.csv)
        f.writelines(f"user{i}:pass{i}\n" for i in range(10000))
        f.write("callee:callee\ncallee-probe:callee\n")
    t_start = time.monotonic()
    meta = versions()
    meta["command"] = "make bench  (= bash bench/run.sh = python3 bench/bench.py" + \
        (" " + " ".join(argv) if argv else "") + (", QUICK=1" if QUICK else "") + ")"
    meta["host_busy_before"] = f"{host_busy():.0f}"
    meta["core_build"] = core_build()
    knobs = {
        "RATES_KAMAILIO": env("RATES_KAMAILIO", "1000 2000 3000 4000 6000 8000 12000 16000 24000 32000 48000 64000",
                              "1000 4000 16000"),
        "RATES_LEANSIP": env("RATES_LEANSIP", "100 200 300 400 600 800 1000 1500 2000 3000 4000 6000 8000 12000 16000 "
                                                 "24000 32000 48000 64000",
                             "200 500 1000"),
        "RATES_BARE": "",
        "STEP_SECS": env("STEP_SECS", "5", "2"), "LAT_RATE": env("LAT_RATE", "500"),
        "LAT_SECS": env("LAT_SECS", "10", "2"), "REFINE": env("REFINE", "2", "0"), "SETTLE": env("SETTLE", "5", "2"),
        "FIXED_REGISTER": env("FIXED_REGISTER", "1000"), "FIXED_CALL": env("FIXED_CALL", "200"),
        "FIXED_DRAIN": env("FIXED_DRAIN", "34", "4"), "FIXED_ROUNDS": env("FIXED_ROUNDS", "3", "1"),
    }
    knobs["RATES_BARE"] = env("RATES_BARE", knobs["RATES_LEANSIP"])
    meta["knobs"] = json.dumps(knobs)
    say("results in", outdir)
    use_admin = admin_available()
    redis_server = RedisServer(outdir / "redis.log") if any(s == "store-redis" for s in scenarios) \
        and "leansip" in servers else None
    for scen in scenarios:
        for kind in servers:
            if kind != "leansip" and SCENARIOS[scen][0] is None:
                continue  # a leansip-only scenario (its location stores, a route script; not run again with --bare)
            if scen == "store-redis":
                if redis_server is None or not redis_server.start():
                    say("store-redis: no redis-server, skipped")
                    continue
            sub = outdir / f"{kind}-{scen}"
            admin_port = free_port() if (kind in LEANSIP_KINDS and use_admin) else None
            srv = Server(kind, scen, sub, PORT_BASE + (0 if kind == "kamailio" else 1), admin_port,
                         outdir / "users.txt")
            say(f"{kind} {scen}: starting")
            pid = srv.start()
            try:
                fixed = int(knobs["FIXED_CALL"] if SCENARIOS[scen][2] == "call" else knobs["FIXED_REGISTER"])
                rates = {"kamailio": knobs["RATES_KAMAILIO"], "bare": knobs["RATES_BARE"]}.get(
                    kind, knobs["RATES_LEANSIP"])
                call = SCENARIOS[scen][2] == "call"
                harness(srv, pid, sub, rates, fixed,
                        {**{k: knobs[k] for k in ("STEP_SECS", "LAT_RATE", "LAT_SECS", "REFINE", "SETTLE",
                                                  "FIXED_ROUNDS")},
                         # calls leave transactions that end up to 32 s later: their CPU counts for the calls
                         "FIXED_DRAIN": knobs["FIXED_DRAIN"] if call else "0",
                         **({"FIXED_ONLY": "1"} if scen in FIXED_ONLY else {})},
                        SCENARIOS[scen][2])
                if kind in LEANSIP_KINDS:
                    tm = srv.timings() if use_admin else None
                    (sub / "timings.json").write_text(json.dumps(
                        tm if tm is not None else {"unavailable": "no start_admin() in leansip/app/admin.py yet: serve cannot start the admin endpoint"}, indent=1))
            finally:
                srv.stop()
                if scen == "store-redis" and redis_server is not None:
                    redis_server.stop(sub / "results.txt")
            for line in (sub / "results.txt").read_text().splitlines():
                if line.startswith("RESULT") and ("kind=max" in line or "kind=fixed" in line
                                                  or "latency_probe" in line):
                    say("  ", line[7:])
            time.sleep(2)
    for wanted, step in ((True, lambda: core_micro(outdir)),
                         (not a.no_memory, lambda: memory_test(outdir)),
                         (not a.no_profile, lambda: profile(outdir, have.get("py-spy", False)))):
        if "leansip" in servers and wanted:
            try:
                step()
            except (SystemExit, OSError, subprocess.SubprocessError) as exc:  # keep the rest of the report
                say("step failed:", exc)
    meta["host_busy_after"] = f"{host_busy():.0f}"
    meta["total_secs"] = f"{time.monotonic() - t_start:.0f}"
    (outdir / "meta.json").write_text(json.dumps(meta, indent=1))
    say(f"done in {meta['total_secs']} s")
    return report(outdir, write_md=not a.no_report)


def report(outdir: Path, write_md: bool) -> int:
    sys.path.insert(0, str(HERE))
    import report as rep  # bench/report.py

    return rep.main(outdir, write_md)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
