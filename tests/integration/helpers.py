"""Integration helpers: a real ``leansip serve`` process and a tiny raw UDP SIP client.

:class:`ServerProcess` starts ``python -m leansip serve`` on a free UDP port with the flags a test gives,
waits until it prints ``leansip listening on`` and stops it on exit (SIGTERM, then SIGKILL); :meth:`kill`
SIGKILLs it for crash tests. :func:`send_recv` sends one datagram and returns every datagram that comes back;
:func:`sip_request` builds a request whose Via asks for ``rport``, so the server answers to our socket
whatever port the kernel picked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from tests.conftest import REPO_ROOT, free_udp_port

BANNER = "leansip listening on"

#: How the server's UDP sockets are served, for the tests that run in both modes (issue 25): by the event loop
#: (``loop``), by the polling loop of ``--bare`` that never sleeps (``bare``), or by one with a short spin limit
#: (``bare-spin``), which sleeps between messages and so also takes the hand-over to the event loop and back.
SERVING: dict[str, list[str]] = {"loop": [], "bare": ["--bare"], "bare-spin": ["--bare", "--bare-spin", "0.002"]}


class ServerProcess:
    """``with ServerProcess(["--no-auth", ...], workdir=tmp_path) as srv: srv.port``.

    ``args`` are passed to ``leansip serve`` after ``--listen udp:127.0.0.1:<port>``; ``--admin off`` is added
    unless the test gives ``--admin``. stdout and stderr go to files in ``workdir`` (read them with
    :meth:`output`), so a chatty server can never block on a full pipe.
    """

    def __init__(self, args: list[str], workdir: Path, *, port: int | None = None,
                 start_timeout: float = 10.0, name: str = "server", host: str = "127.0.0.1") -> None:
        self.args = list(args)
        self.workdir = Path(workdir)
        #: the UDP listener's address: ``::1`` runs the server on IPv6 loopback
        self.host = host
        self.port = port or free_udp_port(host)
        self.start_timeout = start_timeout
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "leansip", "serve", "--listen", f"udp:{self.hostport}"]
        if "--admin" not in self.args:
            cmd += ["--admin", "off"]
        return cmd + self.args

    def start(self) -> ServerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if BANNER in self.stdout_path.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not start (exit {self.proc.returncode}): {self.output()}")

    @property
    def hostport(self) -> str:
        """``host:port`` of the UDP listener as a SIP URI or SIPp writes it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def listening(self) -> dict[str, tuple[str, int]]:
        """transport -> (host, port) of every listener, read from the start-up line (ports picked by the
        kernel for ``:0`` included); the first listener of each transport."""
        text = self.stdout_path.read_text(errors="replace")
        line = next((ln for ln in text.splitlines() if BANNER in ln), "")
        out: dict[str, tuple[str, int]] = {}
        for item in line.split(BANNER, 1)[-1].split(","):
            transport, _, rest = item.strip().partition(":")
            host, _, port = rest.rpartition(":")
            if transport and port.isdigit():
                out.setdefault(transport, (host.strip("[]"), int(port)))
        return out

    def admin_url(self) -> str | None:
        """The admin endpoint's base URL from the start-up lines, when ``--admin`` was given."""
        for line in self.stdout_path.read_text(errors="replace").splitlines():
            if line.strip().startswith("admin: "):
                return line.strip()[len("admin: "):].rstrip("/")
        return None

    def output(self) -> str:
        text = ""
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text += f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}\n"
        return text

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: no flush, no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM and wait (a clean shutdown flushes the store); SIGKILL after 5 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def send_recv(port: int, data: bytes, *, timeout: float = 2.0, linger: float = 0.1,
              host: str = "127.0.0.1") -> list[bytes]:
    """Send ``data`` to ``host:port`` from a fresh UDP socket; return every datagram received until
    ``timeout`` passes without any, or ``linger`` after the last final response (status >= 200)."""
    replies: list[bytes] = []
    family, local = (socket.AF_INET6, "::1") if ":" in host else (socket.AF_INET, "127.0.0.1")
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((local, 0))
        sock.sendto(data, (host, port))
        wait = timeout
        while True:
            sock.settimeout(wait)
            try:
                packet, _addr = sock.recvfrom(65535)
            except TimeoutError:
                return replies
            replies.append(packet)
            if _is_final(packet):
                wait = linger
    return replies


def _is_final(packet: bytes) -> bool:
    parts = packet.split(b" ", 2)
    return len(parts) >= 2 and parts[0] == b"SIP/2.0" and parts[1].isdigit() and int(parts[1]) >= 200


def sip_request(method: str, ruri: str, *, user: str, contacts: tuple[str, ...] = (),
                expires: int | None = None, call_id: str | None = None, cseq: int = 1,
                extra: tuple[str, ...] = ()) -> bytes:
    """A request from ``user`` to the server at 127.0.0.1:``port``, Via with ``rport`` (RFC 3581)."""
    branch = "z9hG4bK-" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:9;rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{user}@127.0.0.1>",
        f"Call-ID: {call_id or uuid.uuid4().hex}",
        f"CSeq: {cseq} {method}",
        *[f"Contact: {c}" for c in contacts],
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += [*extra, "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def register(port: int, user: str, contacts: tuple[str, ...] = (), *, expires: int | None = None,
             call_id: str | None = None, cseq: int = 1) -> list[bytes]:
    """REGISTER ``user`` (a query when ``contacts`` is empty) and return the replies."""
    data = sip_request("REGISTER", f"sip:127.0.0.1:{port}", user=user, contacts=contacts,
                       expires=expires, call_id=call_id, cseq=cseq)
    return send_recv(port, data)


def status_of(packet: bytes) -> int:
    parts = packet.split(b" ", 2)
    assert parts[0] == b"SIP/2.0", packet[:60]
    return int(parts[1])


def contacts_in(packet: bytes) -> dict[str, int]:
    """Contact URI -> expires from a 200 OK to REGISTER (one Contact per header line, as leansip writes)."""
    from leansip.sip.message import parse_message
    from leansip.sip.uri import parse_name_addr

    msg = parse_message(packet)
    out: dict[str, int] = {}
    for value in msg.header_values("contact"):
        na = parse_name_addr(value)
        out[na.uri_text] = int(na.params.get("expires") or 0)
    return out


def phone_env() -> dict[str, str]:
    """Environment for a ``python -m leansip`` child: the checkout on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_phone(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``leansip phone ARGS`` with its output in ``log`` (and its working directory beside it)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "leansip", "phone", *args], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env=phone_env(), cwd=log.parent)


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit status, killing the process if it is still running after ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def wait_for_text(path: Path, text: str, timeout: float = 10.0, *, proc: subprocess.Popen[bytes] | None = None,
                  ) -> None:
    """Poll ``path`` until it contains ``text``; AssertionError (with the file's end) after ``timeout``.

    Stops early when ``proc`` has exited without writing it: its log is then final.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc is not None and proc.poll() is not None:
            if path.exists() and text in path.read_text(errors="replace"):
                return
            break
        time.sleep(0.05)
    content = path.read_text(errors="replace")[-6000:] if path.exists() else "(no file)"
    raise AssertionError(f"{text!r} not in {path}:\n{content}")
