#!/usr/bin/env python3
"""Soak: a hostile flood plus distinct valid registrations against ``leansip serve --mode proxy --auth``, with
the server's RSS recorded over time (issue 23, part 2). Not part of ``make test``: about 10 minutes of a core.

    make soak                                   # = python3 bench/soak.py --publish
    python3 bench/soak.py --hostile 100000 --registrations 10000     # a short one while developing

What it sends, from one process (UDP on 127.0.0.1 only):

* ``--hostile`` datagrams (default 1,000,000) at ``--rate`` per second (default 2,000): REGISTERs and INVITEs
  damaged as issue 23's fuzzer damaged them (bench/hostile.py: byte flips, truncation, duplicated and removed
  lines, header values up to 60 kB, NULs, invalid UTF-8, absurd Content-Lengths, 1,000 Vias; up to 64 kB,
  about 12 kB on average), every one distinct;
* meanwhile ``--registrations`` distinct valid registrations (default 100,000: users ``user0..``, each a REGISTER,
  its 401 challenge, the REGISTER with credentials and its 200 OK), paced to end with the flood;
* then ``--quiet`` seconds of nothing (default 45: every transaction and cached reply of the flood times out
  within 32 s), then ``--again`` seconds more of the flood (default 60: is the memory freed reused?).

The server's VmRSS (``/proc/PID/status``) is sampled once a second into ``rss.csv`` of the results directory
(``bench/results/soak-<time>/``), with what was sent and answered so far; ``summary.txt`` has the key=value
results (peak, plateau, after the quiet, after the second flood) and ``soak-rss.png`` the curve (matplotlib,
pip-installed when missing). ``--publish`` also copies the plot to ``bench/plots/`` and writes ``bench/soak.md``,
the section BENCHMARKS.md shows (bench/report.py includes it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tools"))

from hostile import Hostile  # noqa: E402
from memprobe import rss_kib  # noqa: E402

from leansip.sip.digest import build_authorization, choose_challenge  # noqa: E402

REALM = "soak"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def host_load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError):
        return -1.0


# ------------------------------------------------------------------ registrations


@dataclass
class Registrations:
    """``total`` users registering once each, with digest: REGISTER, 401, REGISTER + credentials, 200; then
    refreshes of users who registered (counted apart: ``done``/``failed`` are the first registrations)."""

    sock: socket.socket
    server: tuple[str, int]
    total: int
    next_user: int = 0
    done: int = 0
    failed: int = 0
    sent: int = 0
    refreshes: int = 0
    refresh_failed: int = 0
    #: Call-ID -> (user number, stage 1 or 2, time sent, tries, CSeq sent, a refresh?)
    pending: dict[str, tuple[int, int, float, int, int, bool]] = field(default_factory=dict)

    def request(self, n: int, cseq: int, authorization: str | None = None) -> bytes:
        port = self.sock.getsockname()[1]
        here = f"127.0.0.1:{self.server[1]}"
        lines = [f"REGISTER sip:{here} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK-r{n}c{cseq}t{time.monotonic_ns()}",
                 "Max-Forwards: 70", f"From: <sip:user{n}@{here}>;tag=r{n}", f"To: <sip:user{n}@{here}>",
                 f"Call-ID: reg-{n}@soak", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:user{n}@127.0.0.1:{port}>", "Expires: 3600", "User-Agent: leansip-soak"]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def start_one(self, now: float) -> None:
        n = self.next_user
        self.next_user += 1
        self.pending[f"reg-{n}@soak"] = (n, 1, now, 1, 1, False)
        self.send(self.request(n, 1))

    def refresh(self, n: int, now: float) -> None:
        """User ``n`` registers again (a refresh: same Call-ID, a higher CSeq, a fresh challenge)."""
        call_id = f"reg-{n}@soak"
        if call_id in self.pending:
            return
        self.refreshes += 1
        cseq = 100 + 10 * self.refreshes  # above every CSeq its first registration used
        self.pending[call_id] = (n, 1, now, 1, cseq, True)
        self.send(self.request(n, cseq))

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.server)
            self.sent += 1
        except OSError:
            pass

    def receive(self, data: bytes, now: float) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        m = re.search(r"\r\n(?:Call-ID|i):\s*(\S+)", head, re.IGNORECASE)
        if m is None or not head.startswith("SIP/2.0 "):
            return
        entry = self.pending.get(m.group(1))
        if entry is None:
            return
        n, stage, _at, tries, cseq, refresh = entry
        c = re.search(r"\r\nCSeq:\s*(\d+)", head, re.IGNORECASE)
        if c is None or int(c.group(1)) != cseq:
            return  # a late answer to an earlier try (UDP under a flood loses and delays): not this one's
        status = int(head[8:11])
        if status == 401 and stage == 1:
            challenges = re.findall(r"\r\nWWW-Authenticate:\s*([^\r\n]+)", head, re.IGNORECASE)
            credentials = build_authorization(choose_challenge(challenges), "REGISTER",
                                              f"sip:127.0.0.1:{self.server[1]}", f"user{n}", f"pw{n}")
            self.pending[m.group(1)] = (n, 2, now, tries, cseq + 1, refresh)
            self.send(self.request(n, cseq + 1, credentials))
        elif status == 200 and stage == 2:
            del self.pending[m.group(1)]
            if not refresh:
                self.done += 1
        elif status >= 200:
            del self.pending[m.group(1)]
            self.fail(refresh)

    def fail(self, refresh: bool) -> None:
        if refresh:
            self.refresh_failed += 1
        else:
            self.failed += 1

    def retry(self, now: float) -> None:
        """A registration unanswered for 2 s starts again (UDP under a flood loses some); given up after 4."""
        for call_id, (n, _stage, at, tries, cseq, refresh) in list(self.pending.items()):
            if now - at < 2.0:
                continue
            if tries >= 4:
                del self.pending[call_id]
                self.fail(refresh)
                continue
            self.pending[call_id] = (n, 1, now, tries + 1, cseq + 1, refresh)
            self.send(self.request(n, cseq + 1))


# ------------------------------------------------------------------ the run


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


def admin_stats(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats", timeout=2) as r:  # noqa: S310
            return json.loads(r.read())
    except (OSError, ValueError):
        return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hostile", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--registrations", type=int, default=100_000)
    ap.add_argument("--reg-rate", type=float, default=1000.0, help="registrations started per second")
    ap.add_argument("--refresh-rate", type=float, default=50.0, help="refreshes per second during the floods")
    ap.add_argument("--quiet", type=float, default=45.0)
    ap.add_argument("--again", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--location", default="sqlite", help="location store of the server (its default: sqlite)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--publish", action="store_true", help="copy the plot to bench/plots, write bench/soak.md")
    a = ap.parse_args()

    out = a.out or HERE / "results" / time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    users = out / "users.txt"
    users.write_text("".join(f"user{i}:pw{i}\n" for i in range(max(a.registrations, 1))))
    port, admin = free_port(), free_port(socket.SOCK_STREAM)
    cmd = [sys.executable, "-m", "leansip", "serve", "--mode", "proxy", "--auth", "--users", str(users),
           "--realm", REALM, "--listen", f"udp:127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
           "--location", a.location, "--db", str(out / "soak.db"), "--log-level", "error"]
    log = open(out / "server.log", "w")  # noqa: SIM115 - closed at the end
    server = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    dest = ("127.0.0.1", port)
    hostile_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    reg_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (hostile_sock, reg_sock):
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.setblocking(False)
    regs = Registrations(reg_sock, dest, a.registrations)
    gen = Hostile(a.seed, port, hostile_sock.getsockname()[1], users=max(a.registrations, 1))
    rows: list[dict] = []
    try:
        # up: an OPTIONS answered
        probe = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{reg_sock.getsockname()[1]};"
                 f"rport;branch=z9hG4bK-up\r\nFrom: <sip:soak@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
                 f"Call-ID: up@soak\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reg_sock.sendto(probe, dest)
            time.sleep(0.2)
            if any(b"up@soak" in d for d in drain(reg_sock)):
                break
        else:
            raise SystemExit(f"soak: the server did not answer; see {out / 'server.log'}")
        t0 = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        flood_secs = a.hostile / a.rate
        # registrations first (their RSS is the legitimate state the flood comes on top of), then the flood with
        # refreshes of those registrations going on, the quiet, the flood again
        phases = [["register", 0.0, math.inf], ["flood", 0.0, flood_secs], ["quiet", 0.0, a.quiet],
                  ["again", 0.0, a.again]]
        sent = replies = 0
        next_sample = next_retry = 0.0
        print(f"soak: server pid {server.pid} on udp:{port}; {a.registrations} registrations at "
              f"{a.reg_rate:g}/s, then {a.hostile} hostile at {a.rate:g}/s ({flood_secs:.0f} s) with "
              f"{a.refresh_rate:g} refreshes/s, then {a.quiet:g} s quiet and {a.again:g} s again; results in {out}",
              flush=True)
        at = 0
        refreshed = 0
        while at < len(phases):
            now = time.monotonic() - t0
            name, start, length = phases[at]
            if name == "register" and regs.done + regs.failed >= a.registrations or now - start >= length:
                at += 1
                if at < len(phases):
                    phases[at][1] = now
                    refreshed = 0
                continue
            if name in ("flood", "again"):
                due = int((now - start) * a.rate) + (a.hostile if name == "again" else 0)
                while sent < due and (name == "again" or sent < a.hostile):
                    try:
                        hostile_sock.sendto(gen.datagram(), dest)
                    except OSError:  # ENOBUFS and the like: the kernel dropped it
                        pass
                    sent += 1
                if regs.done:
                    while refreshed < int((now - start) * a.refresh_rate):
                        regs.refresh(refreshed * 7919 % regs.done, now)
                        refreshed += 1
            elif name == "register":
                want = min(a.registrations, int((now - start) * a.reg_rate) + 1)
                while regs.next_user < want and len(regs.pending) < 500:
                    regs.start_one(now)
            replies += len(drain(hostile_sock))
            for data in drain(reg_sock):
                regs.receive(data, now)
            if now >= next_retry:
                next_retry = now + 0.5
                regs.retry(now)
            if now >= next_sample:
                next_sample += 1.0
                row = {"t": round(now, 1), "phase": name, "rss_kib": rss_kib(server.pid), "hostile_sent": sent,
                       "hostile_replies": replies, "registered": regs.done, "reg_failed": regs.failed,
                       "refreshes": regs.refreshes, "refresh_failed": regs.refresh_failed,
                       "server_cpu_s": round(cpu_seconds(server.pid) - cpu0, 1), "load": host_load()}
                rows.append(row)
                if len(rows) % 30 == 1:
                    print("soak:", " ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            time.sleep(0.002)
        stats = admin_stats(admin)
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    with open(out / "rss.csv", "w") as f:
        keys = list(rows[0])
        f.write(",".join(keys) + "\n")
        for row in rows:
            f.write(",".join(str(row[k]) for k in keys) + "\n")
    summary = summarize(rows, a, stats, alive, flood_secs)
    (out / "summary.txt").write_text("".join(f"{k}={v}\n" for k, v in summary.items()))
    print("SOAK " + " ".join(f"{k}={v}" for k, v in summary.items()), flush=True)
    png = plot(out, rows, summary)
    if a.publish:
        publish(out, png, summary, a)
    return 0 if alive else 1


def summarize(rows: list[dict], a: argparse.Namespace, stats: dict, alive: bool, flood_secs: float) -> dict:
    by_phase: dict[str, list[dict]] = {}
    for r in rows:
        by_phase.setdefault(r["phase"], []).append(r)
    flood = by_phase.get("flood", [])
    quiet, again = by_phase.get("quiet", []), by_phase.get("again", [])
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    tenth = max(1, len(flood) // 10)
    return {
        "hostile_sent": rows[-1]["hostile_sent"], "rate": a.rate, "registrations": a.registrations,
        "registered": rows[-1]["registered"],
        "reg_failed": rows[-1]["reg_failed"], "refreshes": rows[-1]["refreshes"],
        "refresh_failed": rows[-1]["refresh_failed"],
        "hostile_replies": rows[-1]["hostile_replies"],
        "rss_start_mib": mib(rows[0]["rss_kib"]),
        "rss_registered_mib": mib(flood[0]["rss_kib"]) if flood else 0,
        # the flood's curve: its first tenth, its last tenth (level?) and its most
        "rss_flood_first_tenth_max_mib": mib(max((r["rss_kib"] for r in flood[:tenth]), default=0)),
        "rss_flood_last_tenth_max_mib": mib(max((r["rss_kib"] for r in flood[-tenth:]), default=0)),
        "rss_peak_mib": mib(max(r["rss_kib"] for r in rows)),
        "rss_after_quiet_mib": mib(quiet[-1]["rss_kib"]) if quiet else 0,
        "rss_after_again_mib": mib(again[-1]["rss_kib"]) if again else 0,
        "rss_again_max_mib": mib(max((r["rss_kib"] for r in again), default=0)),
        "server_cpu_s": rows[-1]["server_cpu_s"], "flood_s": round(flood_secs), "load_mean":
            round(sum(r["load"] for r in rows) / len(rows), 1),
        "server_alive": int(alive), "drops": json.dumps(stats.get("drops", {}), separators=(",", ":")),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip(),
    }


def plot(out: Path, rows: list[dict], summary: dict) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
        try:
            import matplotlib
        except ImportError:
            print("soak: no matplotlib, no plot", file=sys.stderr)
            return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    t = [r["t"] for r in rows]
    ax.plot(t, [r["rss_kib"] / 1024 for r in rows], color="tab:orange", label="leansip RSS (MiB)")
    ax.axhline(200e6 / 2**20, color="tab:red", linestyle="--", alpha=0.6, label="goal: 200 MB (190.7 MiB)")
    for r0, r1 in zip(rows, rows[1:], strict=False):
        if r0["phase"] != r1["phase"]:
            ax.axvline(r1["t"], color="grey", alpha=0.4)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(0, max(250, max(r["rss_kib"] for r in rows) / 1024 * 1.1))
    ax2 = ax.twinx()
    ax2.plot(t, [r["hostile_sent"] / 1000 for r in rows], color="tab:blue", alpha=0.5,
             label="hostile datagrams sent (thousands)")
    ax2.plot(t, [r["registered"] / 1000 for r in rows], color="tab:green", alpha=0.5,
             label="registrations done (thousands)")
    ax2.set_ylabel("thousands")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    ax.set_title(f"leansip serve --mode proxy --auth: {summary['hostile_sent']} hostile datagrams at "
                 f"{summary['rate']:g}/s + {summary['registered']} registrations (git {summary['git']})",
                 fontsize=9)
    fig.tight_layout()
    png = out / "soak-rss.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def publish(out: Path, png: Path | None, summary: dict, a: argparse.Namespace) -> None:
    import shutil

    if png is not None:
        (HERE / "plots").mkdir(exist_ok=True)
        shutil.copy(png, HERE / "plots" / "soak-rss.png")
    s = summary
    where = out.relative_to(REPO) if out.is_relative_to(REPO) else out
    per_user = (s["rss_registered_mib"] - s["rss_start_mib"]) * 1024 * 1024 / max(1, s["registered"])
    flood_adds = s["rss_peak_mib"] - s["rss_registered_mib"]
    md = [
        "## Memory under a hostile flood (soak, `make soak`)", "",
        f"`python3 bench/soak.py` at git {s['git']} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"results in `{where}`) against `leansip serve --mode proxy --auth` (location store: {a.location}, "
        f"{s['registrations']} users in the users file): first {s['registered']} distinct users register with "
        f"digest ({s['reg_failed']} failed), then {s['hostile_sent'] - int(a.again * a.rate)} hostile datagrams "
        f"at {s['rate']:g}/s (bench/hostile.py: mutated REGISTERs and INVITEs up to 64 kB, about 12 kB on "
        f"average, every one distinct) while the users refresh ({s['refreshes']} refreshes in all, "
        f"{s['refresh_failed']} failed), "
        f"{a.quiet:g} s of quiet, and {a.again:g} s more of the flood. Host load average {s['load_mean']} "
        "(2 cores, shared).", "",
        f"* RSS {s['rss_start_mib']} MiB at the start, **{s['rss_registered_mib']} MiB with the users "
        f"registered**; during the flood at most {s['rss_flood_first_tenth_max_mib']} MiB in its first tenth and "
        f"{s['rss_flood_last_tenth_max_mib']} MiB in its last tenth; **peak {s['rss_peak_mib']} MiB** "
        f"({s['rss_peak_mib'] * 2**20 / 1e6:.1f} MB; issue 23's goal: under 200 MB); "
        f"{s['rss_after_quiet_mib']} MiB after the quiet, at most {s['rss_again_max_mib']} MiB in the second "
        "flood.",
        f"* Server CPU {s['server_cpu_s']} s in all; {s['hostile_replies']} answers to the hostile datagrams "
        "(the 401/407 challenges, 400s, and the 407 retransmissions of the challenged INVITEs; the rest were "
        "dropped unanswerable, or lost in the socket buffer while the server was busy).",
        f"* Read as two parts: the users' state, {per_user:.0f} bytes of RSS per registered user "
        f"(({s['rss_registered_mib']} - {s['rss_start_mib']}) MiB / {s['registered']}: binding, its store and "
        "replica, the nonce it was challenged with, the user's HA1, for as long as they are registered), "
        f"and the flood's, **{flood_adds:.0f} MiB on top at most** (what the byte bounds of DESIGN.md, \"Memory "
        "bounds\", let it hold: answered transactions, cached replies, parse caches, plus the heap's "
        "fragmentation), given back once it is over (malloc_trim) and taken again by the next one.",
        "", "![soak RSS](bench/plots/soak-rss.png)", ""]
    (HERE / "soak.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
