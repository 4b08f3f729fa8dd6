"""TCP and TLS transports against real peers: SIPp over TCP (-t t1) and TLS (-t l1), raw sockets for the
keep-alive, slowloris, connection-cap and MTU behaviour. Servers run as ``python3 -m leansip serve``."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from leansip.io.tls import create_self_signed
from tests.conftest import REPO_ROOT, free_tcp_port, require_program

SIPP_DIR = REPO_ROOT / "tests" / "data" / "sipp"
T = TypeVar("T")
MODES = ["stateless"] + (["stateful"] if (REPO_ROOT / "leansip" / "server" / "stateful.py").exists() else [])


class Server:
    """A ``leansip serve`` subprocess; ``ports`` maps transport -> bound port."""

    def __init__(self, tmp: Path, listen: list[str], *extra: str, mode: str = "stateless") -> None:
        args = [sys.executable, "-m", "leansip", "serve", "--no-auth", "--location", "memory", "--admin", "off",
                "--mode", "proxy", "--db", str(tmp / "leansip.db"), "--log-level", "warning"]
        if mode == "stateless":
            args.append("--stateless")
        for spec in listen:
            args += ["--listen", spec]
        args += list(extra)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # cwd is the test's directory (./var goes there)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     cwd=tmp, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise AssertionError(f"server did not start: {line}{self.proc.stdout.read()}")
        self.ports = {t: int(p) for t, p in re.findall(r"(\w+):127\.0\.0\.1:(\d+)", line)}
        self._drain = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self._drain.start()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, used by the server, by SIPp and as the CA that trusts both."""
    paths = tmp_path / "cert.pem", tmp_path / "key.pem"
    create_self_signed(*paths)
    return paths


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def make(listen: list[str], *extra: str, mode: str = "stateless") -> Server:
        server = Server(tmp_path, listen, *extra, mode=mode)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def tls_args(cert: tuple[Path, Path]) -> list[str]:
    return ["--tls-cert", str(cert[0]), "--tls-key", str(cert[1]), "--tls-ca", str(cert[0])]


def sipp_supports_tls() -> bool:
    """Debian's sip-tester is built without OpenSSL; its version banner lists TLS when it has it."""
    out = subprocess.run([require_program("sipp"), "-v"], capture_output=True, text=True).stdout
    return "TLS" in out


def require_sipp_transport(transport: str) -> None:
    if transport == "tls" and not sipp_supports_tls():
        # Not a missing program but a missing build feature of Debian's sip-tester (no OpenSSL): skipped even
        # under LEANSIP_REQUIRE_EXTERNAL=1, with TLS load covered by the Python TLS peers in this file.
        pytest.skip("this sipp is built without TLS (sipp -v lists no TLS); SIPp load over TLS runs through socat in test_sipp_tls.py")


def sipp(target: str, scenario: str, transport: str, cert: tuple[Path, Path], cwd: Path, *args: str,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run SIPp to completion; ``transport`` is tcp or tls (SIPp's t1 / l1: one connection for all calls)."""
    cmd = [require_program("sipp"), target, "-sf", str(SIPP_DIR / scenario), "-i", "127.0.0.1", "-nostdin",
           "-t", "t1" if transport == "tcp" else "l1", "-recv_timeout", "5000", "-timeout", str(int(timeout) - 5),
           "-trace_err", *args]
    if transport == "tls":
        cmd += ["-tls_cert", str(cert[0]), "-tls_key", str(cert[1])]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Until a TCP socket listens on 127.0.0.1:``port`` (the kernel's table in /proc/net/tcp: the peer is not
    touched, a probe connection would be a call SIPp has to handle); fails early if ``proc`` exits."""
    needle = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        if any(row.split()[1] == needle and row.split()[3] == "0A" for row in rows):  # 0A: LISTEN
            return
        assert proc.poll() is None, f"exited with {proc.returncode} before listening on {port}"
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def eventually(attempt: Callable[[], T], timeout: float = 10.0) -> T:
    """``attempt()`` until it returns without a connection error: for a state the server reaches on its own
    (a closed connection noticed, a slot freed), where a fixed sleep would either be too short or waste time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return attempt()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def sipp_summary(result: subprocess.CompletedProcess[str]) -> str:
    return f"rc={result.returncode}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"


@pytest.mark.external
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_sipp_register_200(server_factory, cert, tmp_path: Path, transport: str, mode: str) -> None:
    require_sipp_transport(transport)
    server = server_factory([f"{transport}:127.0.0.1:0"], *tls_args(cert), mode=mode)
    result = sipp(f"127.0.0.1:{server.ports[transport]}", "register.xml", transport, cert, tmp_path,
                  "-inf", str(SIPP_DIR / "users1000.csv"), "-m", "200", "-r", "100", "-p", str(free_tcp_port()))
    assert result.returncode == 0, sipp_summary(result)


@pytest.mark.external
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_sipp_proxied_call_200(server_factory, cert, tmp_path: Path, transport: str, mode: str) -> None:
    """register-callee, then 200 calls uac -> proxy -> uas, every leg over ``transport``; the proxy opens
    the connection to the UAS itself (the registering SIPp has gone) and reuses it for every call."""
    require_sipp_transport(transport)
    server = server_factory([f"{transport}:127.0.0.1:0"], *tls_args(cert), mode=mode)
    target = f"127.0.0.1:{server.ports[transport]}"
    uas_port = free_tcp_port()
    uas_cmd = [require_program("sipp"), target, "-sf", str(SIPP_DIR / "uas-call.xml"), "-i", "127.0.0.1",
               "-nostdin", "-t", "t1" if transport == "tcp" else "l1", "-p", str(uas_port), "-m", "200",
               "-timeout", "60", "-trace_err"]
    if transport == "tls":
        uas_cmd += ["-tls_cert", str(cert[0]), "-tls_key", str(cert[1])]
    uas = subprocess.Popen(uas_cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(uas_port, uas)
        reg = sipp(target, "register-callee.xml", transport, cert, tmp_path, "-m", "1", "-s", "callee",
                   "-key", "callee_port", str(uas_port), "-p", str(free_tcp_port()), timeout=20)
        assert reg.returncode == 0, sipp_summary(reg)
        uac = sipp(target, "uac-call.xml", transport, cert, tmp_path, "-m", "200", "-r", "50", "-s", "callee",
                   "-p", str(free_tcp_port()))
        assert uac.returncode == 0, sipp_summary(uac)
        out, err = uas.communicate(timeout=30)
        assert uas.returncode == 0, f"uas rc={uas.returncode}\n{out[-1500:]}\n{err[-1500:]}"
    finally:
        if uas.poll() is None:
            uas.kill()
            uas.wait()


# ----------------------------------------------------------------------------- raw sockets

def register_bytes(user: str, transport: str, port: int, branch: str) -> bytes:
    return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag={branch}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {branch}@test\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port};transport={transport}>\r\nContent-Length: 0\r\n\r\n").encode()


def read_message(sock: socket.socket, timeout: float = 2.0) -> bytes:
    """One SIP message from a stream (skipping CRLF pongs): enough framing for responses without a body."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf.lstrip(b"\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    return buf.lstrip(b"\r\n")


def tcp_register(port: int, user: str, branch: str) -> tuple[bytes, float]:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(register_bytes(user, "tcp", sock.getsockname()[1], branch))
        reply = read_message(sock)
    return reply, time.monotonic() - start


def udp_register(port: int, user: str, branch: str) -> tuple[bytes, float]:
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        sock.sendto(register_bytes(user, "udp", sock.getsockname()[1], branch), ("127.0.0.1", port))
        reply = sock.recv(65536)
    return reply, time.monotonic() - start


def test_keepalive_ping_gets_pong_and_message_after_it(server_factory) -> None:
    server = server_factory(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"])
    with socket.create_connection(("127.0.0.1", server.ports["tcp"]), timeout=2) as sock:
        sock.sendall(b"\r\n\r\n")  # RFC 5626 3.5.1 ping
        sock.settimeout(2)
        assert sock.recv(16) == b"\r\n"  # the pong, and nothing else
        msg = register_bytes("ka", "tcp", sock.getsockname()[1], "ka1")
        for i in range(0, len(msg), 7):  # a message in small pieces is still one message
            sock.sendall(msg[i:i + 7])
        reply = read_message(sock)
        assert reply.startswith(b"SIP/2.0 200 ")
        assert f";rport={sock.getsockname()[1]}".encode() in reply


def test_invalid_content_length_closes_the_connection(server_factory) -> None:
    server = server_factory(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"])
    with socket.create_connection(("127.0.0.1", server.ports["tcp"]), timeout=2) as sock:
        sock.sendall(register_bytes("bad", "tcp", 1, "bad1").replace(b"Content-Length: 0", b"Content-Length: -5"))
        sock.settimeout(3)
        assert sock.recv(100) == b""  # closed: the stream cannot be framed any more


def test_idle_connections_and_slow_sender_do_not_block_others(server_factory) -> None:
    server = server_factory(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], "--max-connections-per-ip", "500")
    tcp_port = server.ports["tcp"]
    idle = [socket.create_connection(("127.0.0.1", tcp_port), timeout=2) for _ in range(200)]
    slow = socket.create_connection(("127.0.0.1", tcp_port), timeout=2)
    stop = threading.Event()
    trickling = threading.Event()
    sent: list[int] = []
    closed = threading.Event()

    def trickle() -> None:
        data = register_bytes("slow", "tcp", 1, "slow1")
        try:
            for byte in data:
                slow.sendall(bytes([byte]))
                sent.append(byte)
                if len(sent) == 2:
                    trickling.set()
                if stop.wait(1.0):
                    return
        except OSError:
            closed.set()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        assert trickling.wait(10)  # the slow sender is in the middle of a message
        for i in range(5):
            reply, _took = udp_register(server.ports["udp"], f"u{i}", f"udp{i}")
            assert reply.startswith(b"SIP/2.0 200 "), reply[:40]
            reply, _took = tcp_register(tcp_port, f"t{i}", f"tcp{i}")
            assert reply.startswith(b"SIP/2.0 200 "), reply[:40]
        # served while the slow message was still incomplete: the server did not wait for it
        assert not closed.is_set() and len(sent) < len(register_bytes("slow", "tcp", 1, "slow1"))
        # the idle connections are still open (idle timeout is 300 s): a ping on one still gets its pong
        idle[123].sendall(b"\r\n\r\n")
        idle[123].settimeout(2)
        assert idle[123].recv(4) == b"\r\n"
        # the slow sender is cut off by the message timeout (10 s from its first byte), not served forever: at a
        # byte a second its message would take minutes
        assert closed.wait(60), f"still open after {len(sent)} bytes"
        assert len(sent) < len(register_bytes("slow", "tcp", 1, "slow1"))
    finally:
        stop.set()
        for sock in [*idle, slow]:
            sock.close()


def test_connection_cap_per_ip(server_factory) -> None:
    server = server_factory(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], "--max-connections-per-ip", "5")
    port = server.ports["tcp"]
    held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(5)]
    try:
        for sock in held:  # all five are served
            sock.sendall(b"\r\n\r\n")
            sock.settimeout(2)
            assert sock.recv(4) == b"\r\n"
        extra = socket.create_connection(("127.0.0.1", port), timeout=2)
        extra.settimeout(2)
        try:
            extra.sendall(b"\r\n\r\n")
            assert extra.recv(4) == b""
        except ConnectionResetError:
            pass  # refused with a reset: also closed
        finally:
            extra.close()
        held.pop().close()
        # a slot is free again once the server has seen that close
        reply, _took = eventually(lambda: tcp_register(port, "after", "cap1"))
        assert reply.startswith(b"SIP/2.0 200 ")
    finally:
        for sock in held:
            sock.close()


def big_invite(udp_port: int, local_port: int, user: str) -> bytes:
    body = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\n" + "a=x-padding:" + "p" * 1400 + "\r\n").encode()
    head = (f"INVITE sip:{user}@127.0.0.1:{udp_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKbig{user};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag=b1\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: big-{user}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{local_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


@pytest.mark.parametrize("mode", MODES)
def test_large_udp_request_goes_over_tcp_or_falls_back(server_factory, mode: str) -> None:
    """RFC 3261 18.1.1: an INVITE over 1300 bytes for a UDP contact goes over TCP (Via says TCP) when the
    contact accepts TCP, and over UDP when the TCP connection is refused."""
    server = server_factory(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], mode=mode)
    udp_port = server.ports["udp"]
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    # callee A: UDP and TCP on the same port number
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port_a = listener.getsockname()[1]
    udp_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_a.bind(("127.0.0.1", port_a))
    # callee B: UDP only
    udp_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_b.bind(("127.0.0.1", 0))
    try:
        for user, sock in (("biga", udp_a), ("bigb", udp_b)):
            sock.settimeout(2)
            sock.sendto(register_bytes(user, "udp", sock.getsockname()[1], f"r{user}"), ("127.0.0.1", udp_port))
            assert sock.recv(4096).startswith(b"SIP/2.0 200 ")
        invite = big_invite(udp_port, caller.getsockname()[1], "biga")
        assert len(invite) > 1400
        caller.sendto(invite, ("127.0.0.1", udp_port))
        listener.settimeout(3)
        conn, _addr = listener.accept()
        with conn:
            got = read_message(conn, 3)
            assert got.startswith(b"INVITE sip:biga@")
            top_via = re.search(rb"\r\nVia: ([^\r]*)", got, re.IGNORECASE)
            assert top_via is not None
            assert top_via.group(1).startswith(f"SIP/2.0/TCP 127.0.0.1:{server.ports['tcp']};".encode())
        caller.sendto(big_invite(udp_port, caller.getsockname()[1], "bigb"), ("127.0.0.1", udp_port))
        udp_b.settimeout(3)
        got = udp_b.recv(65536)
        assert got.startswith(b"INVITE sip:bigb@")
        assert b"\r\nVia: SIP/2.0/UDP " in got
    finally:
        for sock in (caller, listener, udp_a, udp_b):
            sock.close()


# ----------------------------------------------------------------------------- TLS with Python peers

def tls_connect(port: int, cert: tuple[Path, Path]) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(cert[0]))
    raw = socket.create_connection(("127.0.0.1", port), timeout=3)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def wait_server_closed(sock: ssl.SSLSocket, timeout: float = 10.0) -> None:
    """Half-close our side and read until the server closes its side: then it has forgotten the connection."""
    sock.settimeout(timeout)
    sock.shutdown(socket.SHUT_WR)
    try:
        while sock.recv(4096):
            pass
    except (ssl.SSLError, ConnectionError):
        pass  # a TLS stream cut without close_notify: closed all the same


def invite_bytes(user: str, port: int, via_port: int, transport: str, branch: str) -> bytes:
    return (f"INVITE sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{via_port};branch=z9hG4bK{branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:caller@127.0.0.1>;tag={branch}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {branch}@test\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@127.0.0.1:{via_port};transport={transport}>\r\nContent-Length: 0\r\n\r\n").encode()


def answer(request: bytes, status: str = "200 OK") -> bytes:
    """A response echoing the request's Via/From/To/Call-ID/CSeq lines (all of them, in order)."""
    lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [ln for ln in lines if ln.split(b":", 1)[0].strip().lower() in
            (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq", b"record-route")]
    keep = [ln + b";tag=callee" if ln.lower().startswith((b"to:", b"t:")) else ln for ln in keep]
    return b"SIP/2.0 " + status.encode() + b"\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


def final_response(sock: socket.socket, timeout: float = 3.0) -> bytes:
    reply = read_message(sock, timeout)
    while reply.startswith(b"SIP/2.0 1"):
        reply = read_message(sock, timeout)
    return reply


@pytest.mark.parametrize("mode", MODES)
def test_tls_register_and_call_over_the_registration_connection(server_factory, cert, mode: str) -> None:
    server = server_factory(["udp:127.0.0.1:0", "tls:127.0.0.1:0"], *tls_args(cert), mode=mode)
    port = server.ports["tls"]
    callee = tls_connect(port, cert)
    caller = tls_connect(port, cert)
    try:
        callee.sendall(register_bytes("tlsbob", "tls", 5999, "treg1"))  # contact port 5999: nobody listens
        assert read_message(callee).startswith(b"SIP/2.0 200 ")
        caller.sendall(invite_bytes("tlsbob", port, caller.getsockname()[1], "tls", "tinv1"))
        invite = read_message(callee, 3)  # over the registration's connection, not to port 5999
        assert invite.startswith(b"INVITE sip:tlsbob@127.0.0.1:5999")
        assert re.search(rb"\r\nVia: SIP/2\.0/TLS 127\.0\.0\.1:%d;" % port, invite)
        callee.sendall(answer(invite))
        reply = final_response(caller)
        assert reply.startswith(b"SIP/2.0 200 "), reply[:60]
        assert b"branch=z9hG4bKtinv1" in reply
    finally:
        callee.close()
        caller.close()


@pytest.mark.parametrize("mode", MODES)
def test_tls_new_outgoing_connection_when_registration_connection_closed(server_factory, cert,
                                                                          mode: str) -> None:
    """The callee's registration connection is gone: the proxy opens a TLS connection to its Contact,
    verifying the certificate against tls_ca."""
    server = server_factory(["udp:127.0.0.1:0", "tls:127.0.0.1:0"], *tls_args(cert), mode=mode)
    port = server.ports["tls"]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(5)
    contact_port = listener.getsockname()[1]
    with tls_connect(port, cert) as reg:
        reg.sendall(register_bytes("tlscarol", "tls", contact_port, "treg2"))
        assert read_message(reg).startswith(b"SIP/2.0 200 ")
        wait_server_closed(reg)  # the server has dropped the registration connection before the call
    caller = tls_connect(port, cert)
    try:
        caller.sendall(invite_bytes("tlscarol", port, caller.getsockname()[1], "tls", "tinv2"))
        raw, _addr = listener.accept()
        with ctx.wrap_socket(raw, server_side=True) as conn:
            invite = read_message(conn, 3)
            assert invite.startswith(b"INVITE sip:tlscarol@127.0.0.1:%d" % contact_port)
            conn.sendall(answer(invite))
            reply = final_response(caller)
            assert reply.startswith(b"SIP/2.0 200 "), reply[:60]
    finally:
        caller.close()
        listener.close()
