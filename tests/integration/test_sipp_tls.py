"""SIPp load over TLS although Debian's SIPp is built without OpenSSL: socat terminates TLS next to SIPp.

Caller side: SIPp speaks TCP (``-t t1``) to a local ``socat TCP-LISTEN -> OPENSSL`` which opens one TLS
connection to leansip's ``tls:`` listener, verifying its certificate. Callee side: the proxy opens TLS to
``socat OPENSSL-LISTEN -> TCP`` in front of the UAS SIPp (``-t t1``), which registered the Contact
``sip:callee@127.0.0.1:Q;transport=tls`` (Q = the socat TLS port). The scenarios (``*-tls.xml``) say ``TLS``
in their Via, as a TLS client's would. A capture of the loopback (tshark) then checks that the proxy's two
hops really carried TLS records and not one byte of cleartext SIP.

Every test needs sipp, socat and tshark (``require_program``: a skip, or a failure under
LEANSIP_REQUIRE_EXTERNAL=1) and capture rights on ``lo`` (CI runs as root).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from leansip.io.tls import create_self_signed
from tests.conftest import free_tcp_port, require_program
from tests.integration.helpers import ServerProcess
from tests.integration.sipp_kit import SCENARIOS, SippResult, run_sipp

MODES = ["stateless", "stateful"]
CALLS = 200

pytestmark = pytest.mark.external


def listening(port: int) -> bool:
    """True when something listens on TCP 127.0.0.1:``port`` (read from /proc: connecting would make socat
    fork a child and open a TLS connection of its own)."""
    want = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(r.split()[1] == want and r.split()[3] == "0A" for r in rows):  # 0A = LISTEN
            return True
    return False


class Background:
    """A long-running helper (socat, tshark, the UAS SIPp) in its own process group, output to files.

    Stopped by its own group id (socat forks one child per connection), SIGTERM first so tshark flushes.
    """

    def __init__(self, cmd: list[str], workdir: Path, name: str) -> None:
        self.name = name
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)

    def wait_until(self, ready: object, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"{self.name} not ready ({what}), rc={self.proc.returncode}\n{self.output()}")

    def output(self) -> str:
        return "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}\n" for p in (self.out, self.err)
                       if p.exists())

    def stop(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # start_new_session: its group id is its pid
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """One self-signed certificate for 127.0.0.1: the server's, socat's callee side, and the CA of both."""
    paths = tmp_path / "cert.pem", tmp_path / "key.pem"
    create_self_signed(*paths)
    return paths


@pytest.fixture
def background(tmp_path: Path) -> Iterator:
    started: list[Background] = []

    def start(cmd: list[str], name: str) -> Background:
        proc = Background(cmd, tmp_path, name)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def start_server(tmp_path: Path, cert: tuple[Path, Path], mode: str) -> tuple[ServerProcess, int]:
    """``leansip serve`` with a tls: listener (and the helper's udp: one); returns it and the TLS port."""
    args = ["--no-auth", "--location", "memory", "--mode", "proxy", "--db", str(tmp_path / "leansip.db"),
            "--listen", "tls:127.0.0.1:0", "--tls-cert", str(cert[0]), "--tls-key", str(cert[1]),
            "--tls-ca", str(cert[0]), "--log-level", "info"]
    if mode == "stateless":
        args.append("--stateless")
    server = ServerProcess(args, tmp_path).start()
    banner = server.stdout_path.read_text(errors="replace")
    found = re.search(r"tls:127\.0\.0\.1:(\d+)", banner)
    if found is None:
        server.stop()
        raise AssertionError(f"no tls listener in the banner:\n{server.output()}")
    return server, int(found.group(1))


def tls_client(background, cert: tuple[Path, Path], tls_port: int) -> int:
    """socat: plain TCP in (for SIPp), one verified TLS connection out to leansip per accepted connection."""
    port = free_tcp_port()
    proc = background([require_program("socat"), f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
                       f"OPENSSL:127.0.0.1:{tls_port},cafile={cert[0]},verify=1"], "socat-client")
    proc.wait_until(lambda: listening(port), f"listening on {port}")
    return port


def tls_server(background, cert: tuple[Path, Path], tcp_port: int) -> int:
    """socat: TLS in (leansip connects here, checking the certificate against its tls_ca), TCP out to SIPp."""
    port = free_tcp_port()
    proc = background([require_program("socat"),
                       f"OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={cert[0]},key={cert[1]},verify=0,fork,reuseaddr",
                       f"TCP:127.0.0.1:{tcp_port}"], "socat-server")
    proc.wait_until(lambda: listening(port), f"listening on {port}")
    return port


def capture(background, tmp_path: Path, ports: list[int]) -> tuple[Background, Path]:
    """tshark on lo, only the given TCP ports (the TLS hops), into a pcap."""
    pcap = tmp_path / "tls.pcap"
    flt = " or ".join(f"tcp port {p}" for p in ports)
    proc = background([require_program("tshark"), "-i", "lo", "-f", flt, "-w", str(pcap), "-q"], "tshark")
    # "Capturing on 'lo'" comes first, up to a second before packets are really recorded; dumpcap reports
    # "Capture started." once the interface is live and the file is open
    proc.wait_until(lambda: "Capture started" in proc.err.read_text(errors="replace"), "capture started")
    return proc, pcap


#: Fewer bytes than any SIP message with its mandatory headers (start line, Via, From, To, Call-ID, CSeq).
MIN_SIP_MESSAGE = 150


def tls_records(pcap: Path, ports: list[int]) -> Counter[tuple[int, int, str]]:
    """Sum the TLS record lengths in the capture by (source port, destination port, record type), each given
    port decoded as TLS; TLS 1.3 hides the real type, so its records count under their outer (opaque) type:
    23 application data, 22 handshake. Also fail when the capture holds any cleartext SIP."""
    tshark = require_program("tshark")
    decode = [a for p in ports for a in ("-d", f"tcp.port=={p},tls")]
    fields = subprocess.run([tshark, "-r", str(pcap), "-n", *decode, "-Y", "tls.record", "-T", "fields",
                             "-E", "occurrence=a", "-E", "aggregator=,", "-e", "tcp.srcport", "-e", "tcp.dstport",
                             "-e", "tls.record.content_type", "-e", "tls.record.opaque_type",
                             "-e", "tls.record.length"], capture_output=True, text=True, timeout=30)
    assert fields.returncode == 0, fields.stderr
    counts: Counter[tuple[int, int, str]] = Counter()
    for line in fields.stdout.splitlines():
        src, dst, types, opaque, lengths = line.split("\t")
        # tshark lists the plain content types, then the TLS 1.3 outer (opaque) types, then every record's
        # length: in a packet the typed handshake records come first, so the concatenation is in record order
        kinds = [k for k in (types.split(",") + opaque.split(",")) if k]
        sizes = lengths.split(",")
        assert len(kinds) == len(sizes), line
        for kind, size in zip(kinds, sizes, strict=True):
            counts[(int(src), int(dst), kind)] += int(size)
    raw = pcap.read_bytes()
    for marker in (b"SIP/2.0", b"INVITE sip:", b"REGISTER sip:", b"Call-ID:"):
        assert marker not in raw, f"cleartext {marker!r} in the capture of the TLS hops"
    return counts


def sent(counts: Counter[tuple[int, int, str]], *, src: int | None = None, dst: int | None = None,
         kind: str = "23") -> int:
    """Bytes in TLS records of ``kind`` (23 application data, 22 handshake) from port ``src`` / to port ``dst``."""
    return sum(n for (s, d, k), n in counts.items() if k == kind and (src is None or s == src)
               and (dst is None or d == dst))


def assert_all_ok(result: SippResult, calls: int) -> None:
    assert result.returncode == 0, result
    assert result.count("SuccessfulCall") == calls, result
    assert result.count("FailedCall") == 0, result


@pytest.mark.parametrize("mode", MODES)
def test_register_200_over_tls(tmp_path: Path, cert, background, mode: str) -> None:
    require_program("sipp")
    server, tls_port = start_server(tmp_path, cert, mode)
    try:
        tshark, pcap = capture(background, tmp_path, [tls_port])
        front = tls_client(background, cert, tls_port)
        result = run_sipp(front, SCENARIOS / "register-tls.xml", tmp_path,
                          ["-t", "t1", "-inf", str(SCENARIOS / "users1000.csv"), "-m", str(CALLS), "-r", "100"],
                          name="register", timeout=40)
        assert_all_ok(result, CALLS)
        tshark.stop()
        counts = tls_records(pcap, [tls_port])
        # a TLS handshake from socat, then every REGISTER in and every 200 out inside application-data records
        assert sent(counts, dst=tls_port, kind="22") > 0, counts
        assert sent(counts, dst=tls_port) >= CALLS * MIN_SIP_MESSAGE, counts
        assert sent(counts, src=tls_port) >= CALLS * MIN_SIP_MESSAGE, counts
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


@pytest.mark.parametrize("mode", MODES)
def test_proxied_calls_200_over_tls(tmp_path: Path, cert, background, mode: str) -> None:
    """REGISTER the callee's TLS contact, then 200 calls uac -> socat -TLS-> proxy -TLS-> socat -> uas."""
    sipp = require_program("sipp")
    server, tls_port = start_server(tmp_path, cert, mode)
    try:
        uas_port = free_tcp_port()
        callee_tls = tls_server(background, cert, uas_port)
        tshark, pcap = capture(background, tmp_path, [tls_port, callee_tls])
        uas_stat = tmp_path / "uas.csv"
        uas = background([sipp, f"127.0.0.1:{tls_port}", "-sf", str(SCENARIOS / "uas-call-tls.xml"),
                          "-i", "127.0.0.1", "-p", str(uas_port), "-t", "t1", "-nostdin", "-m", str(CALLS),
                          "-s", "callee", "-key", "callee_port", str(callee_tls), "-timeout", "35",
                          "-trace_stat", "-stf", str(uas_stat), "-trace_err",
                          "-error_file", str(tmp_path / "uas.errors")], "uas")
        uas.wait_until(lambda: listening(uas_port), f"listening on {uas_port}")
        front = tls_client(background, cert, tls_port)
        reg = run_sipp(front, SCENARIOS / "register-callee-tls.xml", tmp_path,
                       ["-t", "t1", "-m", "1", "-s", "callee", "-key", "callee_port", str(callee_tls)],
                       name="register-callee", timeout=20)
        assert_all_ok(reg, 1)
        uac = run_sipp(front, SCENARIOS / "uac-call-tls.xml", tmp_path,
                       ["-t", "t1", "-m", str(CALLS), "-r", "100", "-s", "callee"], name="uac", timeout=40)
        assert_all_ok(uac, CALLS)
        try:
            uas.proc.wait(15)  # -m 200: it ends after its 200th call
        except subprocess.TimeoutExpired:
            pass
        assert uas.proc.returncode == 0, uas.output() + (tmp_path / "uas.errors").read_text(errors="replace")
        tshark.stop()
        counts = tls_records(pcap, [tls_port, callee_tls])
        # caller hop: per call INVITE, ACK, BYE in and at least 180, 200, 200 out, all encrypted
        assert sent(counts, dst=tls_port) >= 3 * CALLS * MIN_SIP_MESSAGE, counts
        assert sent(counts, src=tls_port) >= 3 * CALLS * MIN_SIP_MESSAGE, counts
        # callee hop: the proxy opened TLS to socat (its handshake) and sent INVITE, ACK, BYE per call, got
        # 180, 200, 200 back
        assert sent(counts, dst=callee_tls, kind="22") > 0, counts
        assert sent(counts, dst=callee_tls) >= 3 * CALLS * MIN_SIP_MESSAGE, counts
        assert sent(counts, src=callee_tls) >= 3 * CALLS * MIN_SIP_MESSAGE, counts
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()
