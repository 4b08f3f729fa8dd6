"""Interop helpers: run real SIP programs (baresip, Kamailio) and ``leansip phone`` next to our server.

:func:`baresip_config` writes a headless baresip 1.0 config directory (loopback media, a WAV as the
audio source, the ``sndfile`` module recording what it sends and receives); :class:`Baresip` runs it.
:class:`Kamailio` runs ``kamailio`` in the foreground with a config from ``tests/data/kamailio``.
:func:`phone` starts a ``leansip phone`` process; :func:`check_tone` checks a recording.

The recipes follow /work/shared/interop/clients.md. baresip pitfalls that shape these helpers: it binds
TCP (and TLS) on ``sip_listen`` port + 1 (+ 2), so :func:`free_port_block` reserves a block; the WAV source
ends the call when the file ends; ``net_interface 127.0.0.1`` keeps the SDP on loopback.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from leansip.media.audiofile import read_audio
from leansip.media.tone import active_duration, dominant_frequency
from tests.conftest import REPO_ROOT
from tests.integration.helpers import wait_exit, wait_for_text

KAMAILIO_CFG_DIR = REPO_ROOT / "tests" / "data" / "kamailio"


def _free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, *, low: int = 20000, high: int = 60000, tcp: bool = False) -> int:
    """First port of ``count`` consecutive ports free for UDP (and TCP when ``tcp``), base even.

    Even base: RTP wants an even port and RTCP the next one. A free block a moment ago can still be
    taken by another test before the program binds it; the odds on a 40000-port range are small.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - count) & ~1
        ports = range(base, base + count)
        if all(_free(p, socket.SOCK_DGRAM) for p in ports) and (
                not tcp or all(_free(p, socket.SOCK_STREAM) for p in ports)):
            return base
    raise RuntimeError(f"no block of {count} free ports in {low}-{high}")


def stop_proc(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; nothing when already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_tone(path: Path, freq: float, min_active: float, *, tolerance: float = 20.0) -> tuple[float, float]:
    """Assert the WAV at ``path`` is mostly a ``freq`` tone for at least ``min_active`` seconds.

    Returns (dominant frequency, active seconds). Any rate is accepted (baresip's sndfile writes the
    decoder's rate); stereo is not expected from either program.
    """
    samples, rate, channels = read_audio(path)
    assert channels == 1, (path, channels)
    found = dominant_frequency(samples, rate)
    active = active_duration(samples, rate)
    assert abs(found - freq) <= tolerance, f"{path}: dominant {found:.1f} Hz, want {freq} Hz"
    assert active >= min_active, f"{path}: tone active {active:.2f}s of {len(samples) / rate:.2f}s, " \
                                 f"want >= {min_active:.2f}s"
    return found, active


# ---------------------------------------------------------------------------------------------- baresip

BARESIP_CONFIG = """\
poll_method\t\tepoll
net_interface\t\t127.0.0.1
sip_listen\t\t127.0.0.1:{sip_port}
call_local_timeout\t120
call_max_calls\t\t4
audio_player\t\talsa,null
audio_source\t\taufile,{source}
audio_alert\t\talsa,null
ausrc_srate\t\t8000
ausrc_channels\t\t1
auplay_srate\t\t8000
auplay_channels\t\t1
audio_level\t\tno
rtp_ports\t\t{rtp_low}-{rtp_high}
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tsrtp.so
module\t\t\talsa.so
module\t\t\taufile.so
module\t\t\tsndfile.so
module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
snd_path\t\t{snd_path}
"""


class Baresip:
    """A headless baresip 1.0 with one account, its own config dir, a WAV source and recordings.

    ``with Baresip(dir, account="<sip:bob@127.0.0.1:P;transport=udp>;auth_pass=bobpw", source=wav) as b:``
    starts ``baresip -f DIR -s -t LIFETIME [-e CMD]`` (``-s``: SIP trace in the log, for failures).
    :meth:`wait_registered` waits for the 200 to REGISTER; :meth:`recordings` lists the
    ``dump-*-dec.wav`` (received) files of the sndfile module. The SIP port is a free block of 3
    (UDP, TCP = +1, TLS = +2) and the RTP range 10 ports of its own.
    """

    def __init__(self, workdir: Path, *, account: str, source: Path, lifetime: float = 30.0,
                 command: str | None = None, name: str = "baresip", control: bool = False,
                 verbose: bool = False) -> None:
        self.dir = Path(workdir) / name
        self.rec_dir = self.dir / "rec"
        self.log = Path(workdir) / f"{name}.log"
        self.sip_port = free_port_block(3, tcp=True)
        rtp_low = free_port_block(10)
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        config = BARESIP_CONFIG.format(sip_port=self.sip_port, source=source, rtp_low=rtp_low, rtp_high=rtp_low + 9,
                                       snd_path=self.rec_dir)
        self.control_port: int | None = None
        if control:  # ctrl_tcp: JSON commands in netstrings (clients.md), for DTMF and transfers mid-call
            self.control_port = free_port_block(1, tcp=True)
            config += f"module_app\t\tctrl_tcp.so\nctrl_tcp_listen\t\t127.0.0.1:{self.control_port}\n"
        (self.dir / "config").write_text(config)
        self.verbose = verbose
        self._listener: socket.socket | None = None
        (self.dir / "accounts").write_text(account + "\n")
        self.lifetime = lifetime
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Baresip:
        from tests.conftest import require_program

        exe = require_program("baresip")
        cmd = [exe, "-f", str(self.dir), "-s", "-t", str(int(self.lifetime))] + (["-v"] if self.verbose else [])
        if self.command is not None:
            cmd += ["-e", self.command]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=self.dir)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        wait_for_text(self.log, text, timeout, proc=self.proc)

    def control(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, object]:
        """Run one ctrl_tcp command (``sndcode``, ``transfer``, ``hangup`` ...) and return its JSON response."""
        assert self.control_port is not None, "start with control=True"
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with sock:
            sock.sendall(b"%d:%s," % (len(payload), payload))
            data = b""
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                for part in _netstrings(data)[0]:
                    reply = json.loads(part)
                    if reply.get("response"):
                        return dict(reply)
        raise AssertionError(f"baresip gave no response to {command!r}: {data[:300]!r}")

    def listen(self) -> list[dict[str, object]]:
        """Keep a ctrl_tcp connection open and collect baresip's events on it (CALL_DTMF_START, CALL_CLOSED ...)
        into the returned list, from a daemon thread. ctrl_tcp talks to one connection at a time: use this or
        :meth:`control`, not both."""
        import threading

        assert self.control_port is not None, "start with control=True"
        events: list[dict[str, object]] = []
        deadline = time.monotonic() + 5.0
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.settimeout(None)

        def read() -> None:
            data = b""
            with sock:
                while True:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    parts, data = _netstrings(data + chunk)
                    for part in parts:
                        reply = json.loads(part)
                        if reply.get("event"):
                            events.append(dict(reply))

        threading.Thread(target=read, daemon=True).start()
        self._listener = sock
        return events

    def wait_registered(self, timeout: float = 10.0) -> None:
        # baresip 1.0 logs "<aor>: {0/UDP/v4} 200 OK () [1 binding]" once the REGISTER succeeded
        self.wait_for("200 OK () [1 binding]", timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return wait_exit(self.proc, timeout)

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile dumps, oldest first: ``dec`` = received and decoded, ``enc`` = what baresip sent."""
        return sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"))

    def stop(self) -> None:
        stop_proc(self.proc)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _netstrings(data: bytes) -> tuple[list[bytes], bytes]:
    """The complete netstrings at the start of ``data`` (``len:payload,``) and what follows them."""
    out = []
    while b":" in data:
        head, _, rest = data.partition(b":")
        if not head.isdigit() or len(rest) < int(head) + 1:
            break
        out.append(rest[:int(head)])
        data = rest[int(head) + 1:]
    return out, data


# --------------------------------------------------------------------------------------------- kamailio

class Kamailio:
    """``kamailio -DD -E`` (foreground, log to stderr) with ``cfg`` on ``udp:127.0.0.1:<free port>``.

    One worker, small memory (``-m 64 -M 8``), run dir and working dir in ``workdir`` so no root-owned
    /run/kamailio is needed; ``defines`` are extra arguments such as ``["-A", "WITH_AUTH"]``. Ready when the UDP port answers an OPTIONS (any reply) or, for configs
    that answer nothing, when the port is bound.
    """

    def __init__(self, cfg: Path, workdir: Path, *, defines: list[str] | None = None,
                 name: str = "kamailio") -> None:
        self.cfg = Path(cfg)
        self.defines = list(defines or [])  # e.g. ["-A", "WITH_AUTH"]
        self.workdir = Path(workdir)
        self.rundir = self.workdir / f"{name}-run"
        self.log = self.workdir / f"{name}.log"
        self.port = free_port_block(1, low=30000)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Kamailio:
        from tests.conftest import require_program

        exe = require_program("kamailio")
        self.rundir.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "-DD", "-E", "-f", str(self.cfg), "-l", f"udp:127.0.0.1:{self.port}", "-n", "1",
               "-m", "64", "-M", "8", "-Y", str(self.rundir), "-w", str(self.workdir), "-a", "no", *self.defines]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._answers():
                return self
        self.stop()
        raise RuntimeError(f"kamailio did not start (exit {self.proc.returncode}):\n{self.text()[-4000:]}")

    def _answers(self) -> bool:
        request = (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                   "Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch=z9hG4bK-probe\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:probe@127.0.0.1>\r\n"
                   "Call-ID: kamailio-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.3)
            try:
                sock.sendto(request, ("127.0.0.1", self.port))
                sock.recvfrom(65535)
            except OSError:  # refused (not bound yet) or timeout
                return False
        return True

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        stop_proc(self.proc)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
