"""The live server under hostile input: it answers what it can, drops the rest, and keeps serving.

A bounded, seeded fuzz (random bytes, mutated requests and responses from the torture corpus and our own
templates, 64 KiB datagrams, huge and deeply folded headers, NUL bytes, hundreds of Vias, responses and
CANCEL/ACK for transactions that never existed, Route to other addresses, Max-Forwards 0/1, ``Contact: *``
misuse) goes to a real ``leansip serve`` over UDP and TCP. Afterwards the server must answer an OPTIONS and a
REGISTER normally and its log must hold no traceback. Malformed requests whose Via is usable get a 400, not
silence (RFC 3261 8.2, 16.3). Bad configuration files and bad users files stop ``leansip serve`` with one line
naming the file and line, and exit status 2.

Every generated message is addressed so that nothing leaves 127.0.0.1 and nothing reaches other programs on
this shared machine: host names and foreign IPv4 literals become 127.0.0.2 (no DNS), and a request is only
sent if the reply the server would send goes to our own sink socket (computed with the server's own parser
and :func:`leansip.server.core.response_destination`), never to someone's SIPp on 5060.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leansip.server.core import response_destination
from leansip.server.routing import next_hop_of_response
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, parse_message
from tests.conftest import REPO_ROOT, external_required, free_tcp_port
from tests.integration.helpers import ServerProcess, register, send_recv, sip_request, status_of
from tests.integration.test_torture_live import rewrite_top_via_port, top_via
from tests.unit.test_core import torture_dir

SEED = int(os.environ.get("LEANSIP_FUZZ_SEED", "4475"))
DATAGRAMS = 5000
FAR = "127.0.0.2"
FORWARDED = -1  # key of responses forwarded back to us in the reply counter  # "another host": loopback, but not the server's address

# ------------------------------------------------------------------ addressing that stays at home

_NAME = re.compile(rb"(?<![A-Za-z0-9_.-])[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.(?:com|net|org|edu|invalid)"
                   rb"(?![A-Za-z0-9_-])")
_IPV4 = re.compile(rb"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9.])")


def stay_home(data: bytes) -> bytes:
    """Host names (which the server would resolve through DNS) and IPv4 literals other than the server's own
    become :data:`FAR`."""
    data = _NAME.sub(FAR.encode(), data)
    return _IPV4.sub(lambda m: m.group(0) if m.group(0) == b"127.0.0.1" else FAR.encode(), data)


def reply_goes_to(data: bytes, source: tuple[str, int]) -> tuple[str, int] | None:
    """Where the server would send an error or answer for ``data`` from ``source``, or forward it when it is a
    response (by its second Via) (None: nowhere, it cannot read a usable Via), using the server's own parser
    and Via rules."""
    try:
        msg: Request | Response | None = parse_message(data)
    except SipParseError as exc:
        msg = exc.message if isinstance(exc.message, (Request, Response)) else None
    except Exception:  # noqa: BLE001 - the parser raising anything else is a bug the live server reports
        return None
    try:
        if isinstance(msg, Response):
            # as the proxy does (whether the top Via is its own aside): the copy without the top Via value
            fwd = msg.copy()
            fwd.pop_first_value("via")
            return next_hop_of_response(fwd.top_via) if fwd.header("via") is not None else None
        if isinstance(msg, Request):
            return response_destination(msg.top_via, source)
    except SipParseError:
        return None
    return None


def hex_id(ids: random.Random | None, n: int) -> str:
    """``n`` random hex digits: from ``ids`` for the seeded corpus (the same bytes in every run), else fresh."""
    if ids is None:
        return uuid.uuid4().hex[:n]
    return f"{ids.getrandbits(4 * n):0{n}x}"


def via_line(port: int, branch: str | None = None, ids: random.Random | None = None) -> str:
    return f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch={branch or 'z9hG4bK-' + hex_id(ids, 12)}"


def request_bytes(method: str, ruri: str, sink: int, *, extra: tuple[str, ...] = (), body: bytes = b"",
                  cseq_method: str | None = None, to_tag: bool = False, max_forwards: int | None = 70,
                  ids: random.Random | None = None) -> bytes:
    lines = [f"{method} {ruri} SIP/2.0", via_line(sink, ids=ids)]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"From: <sip:alice@127.0.0.1>;tag={hex_id(ids, 8)}",
              f"To: <sip:bob@127.0.0.1>{';tag=' + hex_id(ids, 6) if to_tag else ''}",
              f"Call-ID: {hex_id(ids, 32)}@127.0.0.1", f"CSeq: 1 {cseq_method or method}", *extra,
              f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def response_bytes(status: int, server_port: int, sink: int, method: str = "INVITE",
                   ids: random.Random | None = None, next_via: str | None = None) -> bytes:
    """A response whose top Via claims to be the server's, for a transaction that never existed; its next Via
    is the sink's, or ``next_via`` (a ``Via:`` line)."""
    return ("\r\n".join([
        f"SIP/2.0 {status} Whatever",
        f"Via: SIP/2.0/UDP 127.0.0.1:{server_port};branch=z9hG4bK-{hex_id(ids, 10)}",
        next_via or via_line(sink, ids=ids),
        "From: <sip:alice@127.0.0.1>;tag=1", f"To: <sip:bob@127.0.0.1>;tag={hex_id(ids, 6)}",
        f"Call-ID: {hex_id(ids, 32)}", f"CSeq: 1 {method}", "Content-Length: 0", "", ""])).encode()


# ------------------------------------------------------------------ the generator


def _seeds(rng: random.Random, server_port: int, sink: int) -> list[bytes]:
    seeds = [request_bytes("OPTIONS", f"sip:127.0.0.1:{server_port}", sink, ids=rng),
             request_bytes("REGISTER", f"sip:127.0.0.1:{server_port}", sink,
                           extra=("Contact: <sip:alice@127.0.0.1:9>", "Expires: 60"), ids=rng),
             request_bytes("INVITE", f"sip:bob@127.0.0.1:{server_port}", sink,
                           body=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                                b"m=audio 9 RTP/AVP 0\r\n", extra=("Content-Type: application/sdp",), ids=rng),
             request_bytes("BYE", f"sip:bob@{FAR}:9", sink, to_tag=True, ids=rng),
             response_bytes(200, server_port, sink, ids=rng), response_bytes(180, server_port, sink, "INVITE", ids=rng),
             response_bytes(486, server_port, sink, "BYE", ids=rng)]
    base = torture_dir()
    for sub in ("rfc4475", "rfc5118-wire"):
        if (base / sub).is_dir():
            for path in sorted((base / sub).iterdir()):
                data = stay_home(path.read_bytes())
                # answers to the torture messages go to our sink (the Via port), not to 5060
                seeds.append(rewrite_top_via_port(data, sink) if top_via(data) is not None else data)
    return seeds


_INSERTS = [b"\r\n", b" ", b";", b",", b"<", b">", b'"', b":", b"\x00", b"%", b"%00", b"\r\n ", b"=", b"@",
            b"[", b"]", b"SIP/2.0", b"\r\n\r\n", b"\xff\xfe", b"\t", b"\\", b"sip:", b";branch=",
            b"4294967296", b"-1", b"99999999999999999999", b"\r", b"\n"]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buf:
            break
        i = rng.randrange(len(buf))
        op = rng.randrange(6)
        if op == 0:
            buf[i] = rng.randrange(256)
        elif op == 1:
            del buf[i:i + rng.randint(1, 30)]
        elif op == 2:
            buf[i:i] = rng.choice(_INSERTS)
        elif op == 3:
            del buf[i:]
        elif op == 4:
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j:j + rng.randint(1, 60)]
        else:
            line_start = buf.rfind(b"\n", 0, i) + 1
            line_end = buf.find(b"\n", i)
            line_end = len(buf) if line_end < 0 else line_end + 1
            buf[line_start:line_start] = buf[line_start:line_end] * rng.randint(2, 4)  # duplicate a header
    return bytes(buf)


def special_messages(rng: random.Random, server_port: int, sink: int) -> list[bytes]:
    """The named cases of the brief, each a few times with variations."""
    here = f"sip:127.0.0.1:{server_port}"
    user = f"sip:bob@127.0.0.1:{server_port}"
    out: list[bytes] = []
    big = rng.randbytes(65507)
    out += [big, b"\x00" * 65507, request_bytes("OPTIONS", here, sink, body=b"x" * 64000, ids=rng)]  # 64 KiB
    out.append(request_bytes("OPTIONS", here, sink, extra=("X-Huge: " + "a" * 60000,), ids=rng))
    out.append(request_bytes("OPTIONS", here, sink, extra=tuple(f"X-H{i}: {i}" for i in range(3000)), ids=rng))
    out.append(request_bytes("OPTIONS", here, sink, extra=("X-Fold: a" + "\r\n b" * 8000,), ids=rng))
    out.append(request_bytes("OPTIONS", here, sink, extra=(f"Via: SIP/2.0/UDP {FAR}:9;branch=z9hG4bK-v",) * 800,
                             ids=rng))
    out.append(request_bytes("OPTIONS", here, sink,
                             extra=("Via: " + ", ".join(f"SIP/2.0/UDP {FAR}:{i};branch=z9hG4bK{i}"
                                                        for i in range(1, 600)),), ids=rng))
    out.append(request_bytes("OPTIONS", here, sink, extra=("X-Nul: a\x00b",), ids=rng))
    out.append(request_bytes("OPTIONS", here, sink, ids=rng).replace(b"OPTIONS", b"OPT\x00ONS", 1))
    for status in (100, 180, 183, 200, 202, 302, 401, 407, 481, 487, 503, 699, 700, 99, 0):
        for method in ("INVITE", "BYE", "CANCEL", "REGISTER", "OPTIONS"):
            out.append(response_bytes(status, server_port, sink, method, ids=rng))
    # next Vias that parse (the grammar takes any protocol/version/transport) but are no usable SIP/2.0 Via: the
    # server must drop the response, not forward it to the sink (issue 23: the first was a fuzzer's byte copy)
    for bad in (f"SIP/2.z9hG4bK-9c010/UDP 127.0.0.1:{sink};rport;branch=z9hG4bK-1", f"SIP/3.0/UDP 127.0.0.1:{sink}",
                f"XIP/2.0/UDP 127.0.0.1:{sink}", f"SIP/2.0/UDP 127.0.0.1:{sink};received=no_such!host"):
        out.append(response_bytes(200, server_port, sink, ids=rng, next_via="Via: " + bad))
    for method in ("CANCEL", "ACK"):
        for to_tag in (False, True):
            out.append(request_bytes(method, user, sink, to_tag=to_tag, ids=rng))
            out.append(request_bytes(method, f"sip:bob@{FAR}:9", sink, to_tag=to_tag, ids=rng))
    for route in (f"<sip:{FAR}:9;lr>", f"<sip:{FAR}:9>", f"<sip:127.0.0.1:{server_port};lr>, <sip:{FAR}:9;lr>",
                  "<sip:[::1]:9;lr>", "<tel:+123>", "<sip:127.0.0.2:0;lr>", "garbage", "<sip:;lr>"):
        for method in ("INVITE", "OPTIONS", "MESSAGE", "BYE"):
            out.append(request_bytes(method, user, sink, extra=(f"Route: {route}",), to_tag=method == "BYE", ids=rng))
    for mf in (0, 1, -1, 256, 99999999999):
        for method in ("INVITE", "OPTIONS", "REGISTER", "CANCEL", "MESSAGE"):
            ruri = here if method == "REGISTER" else user
            out.append(request_bytes(method, ruri, sink, max_forwards=None, extra=(f"Max-Forwards: {mf}",), ids=rng))
    for contacts in (("*",), ("*", "<sip:alice@127.0.0.1:9>"), ("*, <sip:alice@127.0.0.1:9>",), ("<*>",),
                     ("*;expires=0",), ("* ",)):
        for expires in ("0", "3600", None):
            extra = tuple(f"Contact: {c}" for c in contacts) + ((f"Expires: {expires}",) if expires else ())
            out.append(request_bytes("REGISTER", here, sink, extra=extra, ids=rng))
            out.append(request_bytes("INVITE", user, sink, extra=extra, ids=rng))
    return out


def placeholder_port(port: int, digit: str) -> int:
    """The port the corpus is generated with in place of ``port``: the same number of digits (so every
    mutation lands on the same bytes), ``4`` then ``digit`` repeated (47777, 48888). Ports below 1024 are
    fixed by the test itself (9, the discard port) and stay as they are."""
    width = len(str(port))
    return port if port < 1024 else int("4" + digit * (width - 1))


def hostile_corpus(rng: random.Random, server_port: int, sink: int, count: int) -> Iterator[bytes]:
    """``count`` datagrams: the special cases, then random bytes and mutations. Only those whose reply would
    go to ``sink`` (or nowhere) are yielded.

    The corpus does not depend on the ports this run got: it is generated and filtered with placeholder ports
    of the same width (:func:`placeholder_port`), and the real ports replace the placeholders afterwards
    (where a mutation left a placeholder whole). A run on ports 53011/41234 sends the same bytes as one on
    60001/33333 but for those digits; before this, a port's digits changed which mutated messages passed the
    filter, so a failure came and went with the ports (issue 23)."""
    fake_server, fake_sink = placeholder_port(server_port, "7"), placeholder_port(sink, "8")
    real = {str(fake): str(port).encode() for fake, port in ((fake_server, server_port), (fake_sink, sink))
            if fake != port}
    placeholders = re.compile(rb"(?<![0-9])[0-9]{4,5}(?![0-9])")
    fake_source, source = ("127.0.0.1", fake_sink), ("127.0.0.1", sink)

    def accepted(data: bytes) -> bytes | None:
        if reply_goes_to(data, fake_source) not in (None, fake_source):
            return None
        data = placeholders.sub(lambda m: real.get(m.group(0).decode(), m.group(0)), data)
        # the real ports again, in case a mutated port happens to be one of them: still only to us or nowhere
        return data if reply_goes_to(data, source) in (None, source) else None

    seeds = _seeds(rng, fake_server, fake_sink)
    made = 0
    for data in special_messages(rng, fake_server, fake_sink):
        sent = accepted(data)
        if sent is not None:
            made += 1
            yield sent
    while made < count:
        kind = rng.random()
        if kind < 0.15:
            data = rng.randbytes(rng.randint(0, 1500))
        elif kind < 0.2:
            data = bytes(rng.choice(b"SIP/2.0 \r\n:;,<>\"@Via") for _ in range(rng.randint(1, 400)))
        else:
            data = stay_home(mutate(rng, rng.choice(seeds)))
        sent = accepted(data)
        if sent is not None:
            made += 1
            yield sent


# ------------------------------------------------------------------ the server


def _users_file(tmp: Path) -> Path:
    path = tmp / "users.txt"
    path.write_text("alice:alice\nbob:bob\n")
    return path


def assert_healthy(server: ServerProcess) -> None:
    """OPTIONS to the server gets 200, a REGISTER a 401 challenge, and the log holds no traceback."""
    assert server.alive(), server.output()
    options = sip_request("OPTIONS", f"sip:127.0.0.1:{server.port}", user="alice")
    assert [status_of(r) for r in send_recv(server.port, options)] == [200], server.output()
    assert [status_of(r) for r in register(server.port, "alice", ("<sip:alice@127.0.0.1:9>",))] == [401]
    log = server.output()
    assert "handler_error" not in log and "Traceback" not in log, log


def _drain_through_sentinel(sock: socket.socket, port: int, into: Counter[int], timeout: float = 10.0) -> None:
    """Send one OPTIONS after the burst and count everything up to its 200: the server handles datagrams in
    order and writes each reply before reading the next, so every answer to the burst has arrived by then."""
    call_id = f"sentinel-{uuid.uuid4().hex}"
    sentinel = sip_request("OPTIONS", f"sip:127.0.0.1:{port}", user="alice", call_id=call_id)
    sock.sendto(sentinel, ("127.0.0.1", port))
    marker = f"Call-ID: {call_id}".encode()
    deadline = time.monotonic() + timeout
    sock.setblocking(True)
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no answer to the sentinel OPTIONS within {timeout} s"
        sock.settimeout(min(left, 1.0))
        try:
            packet = sock.recv(65535)
        except TimeoutError:
            sock.sendto(sentinel, ("127.0.0.1", port))  # UDP: a full buffer may have dropped it; send it again
            continue
        if marker in packet:
            return
        _count(packet, into)


def _count(packet: bytes, into: Counter[int]) -> None:
    if not packet.startswith(b"SIP/2.0 "):
        into[0] += 1
    elif packet.split(b"\r\n", 1)[0].endswith(b" Whatever"):
        # one of our responses for no transaction, forwarded by the next Via (RFC 3261 16.7 step 2 /
        # 16.11: an unmatched response is handled as a stateless proxy would): its top Via must be ours
        assert packet.split(b"\r\nVia: ", 2)[1].startswith(b"SIP/2.0/UDP 127.0.0.1:"), packet
        into[FORWARDED] += 1
    else:
        into[status_of(packet)] += 1


def _drain(sock: socket.socket, into: Counter[int]) -> None:
    """Count what arrived, by status code (0 for anything that is not a response, :data:`FORWARDED` for
    a response forwarded back to us)."""
    sock.setblocking(False)
    try:
        while True:
            _count(sock.recv(65535), into)
    except BlockingIOError:
        return


@pytest.mark.parametrize("mode", ["--stateful", "--stateless", "--stateful --bare"])
def test_udp_fuzz_leaves_the_server_serving(mode: str, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    args = ["--auth", "--users", str(_users_file(tmp_path)), "--realm", "leansip", "--location", "memory",
            *mode.split()]
    with ServerProcess(args, tmp_path) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sink = sock.getsockname()[1]
        replies: Counter[int] = Counter()
        for n, data in enumerate(hostile_corpus(rng, server.port, sink, DATAGRAMS)):
            try:
                sock.sendto(data, ("127.0.0.1", server.port))
            except OSError:  # e.g. a 64 KiB datagram over a smaller loopback MTU
                continue
            if n % 50 == 49:
                time.sleep(0.01)  # keep the shared machine's load bounded; UDP would drop the rest anyway
                _drain(sock, replies)
        _drain_through_sentinel(sock, server.port, replies)
        # the malformed got their 400, the well-formed their challenge or answer, and nothing was a server error
        assert replies[400] > 100 and replies[407] + replies[401] > 50, replies
        assert not [code for code in replies if code >= 500 and code != 505], replies
        assert replies[0] == 0, replies  # nothing forwarded a request to the sink
        assert_healthy(server)


def test_tcp_fuzz_leaves_the_server_serving(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    tcp_port = free_tcp_port()
    args = ["--auth", "--users", str(_users_file(tmp_path)), "--realm", "leansip", "--location", "memory",
            "--listen", f"tcp:127.0.0.1:{tcp_port}"]
    with ServerProcess(args, tmp_path) as server:
        corpus = list(hostile_corpus(rng, server.port, 9, 600))
        answered = 0
        for start in range(0, len(corpus), 20):  # 20 messages per connection: a framing error may close it
            with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as conn:
                for data in corpus[start:start + 20]:
                    try:
                        conn.sendall(data)
                    except OSError:
                        break  # the server closed a connection it could no longer frame: that is its right
                conn.settimeout(0.2)
                try:
                    while conn.recv(65535):
                        answered += 1
                except OSError:
                    pass
        assert answered > 0
        # half messages and then nothing: the connection is the server's to close, it must go on serving
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as conn:
            conn.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 10\r\n\r\nabc")
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as conn:
            conn.sendall(request_bytes("OPTIONS", f"sip:127.0.0.1:{tcp_port}", 9).replace(
                b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
            conn.settimeout(3)
            assert status_of(conn.recv(65535)) == 200
        # a malformed request on a connection is answered 400 on that connection (framing errors aside: on a
        # stream a Content-Length beyond the data means "wait for more", RFC 3261 18.3)
        for name, breaker in MALFORMED:
            if name.startswith("content-length") or name in _REGISTER_ONLY:
                continue
            good = sip_request("OPTIONS", f"sip:127.0.0.1:{tcp_port}", user="alice").replace(
                b"SIP/2.0/UDP", b"SIP/2.0/TCP")
            with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as conn:
                conn.sendall(breaker(good))
                conn.settimeout(3)
                assert status_of(conn.recv(65535)) == 400, name
        assert_healthy(server)


# ------------------------------------------------------------------ malformed but answerable: 400

#: (name, how to break a valid OPTIONS/REGISTER) - each keeps a usable Via with rport, so the server can answer
MALFORMED: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("cseq-not-a-number", lambda d: re.sub(rb"CSeq: 1 ", b"CSeq: abc ", d)),
    ("cseq-too-big", lambda d: re.sub(rb"CSeq: 1 ", b"CSeq: 4294967296 ", d)),
    ("cseq-method-mismatch", lambda d: re.sub(rb"CSeq: 1 (\w+)", b"CSeq: 1 INVITE", d)),
    ("no-call-id", lambda d: re.sub(rb"Call-ID: [^\r]*\r\n", b"", d)),
    ("no-from", lambda d: re.sub(rb"From: [^\r]*\r\n", b"", d)),
    ("no-to", lambda d: re.sub(rb"To: [^\r]*\r\n", b"", d)),
    ("no-cseq", lambda d: re.sub(rb"CSeq: [^\r]*\r\n", b"", d)),
    ("two-call-ids", lambda d: d.replace(b"Call-ID:", b"Call-ID: other\r\nCall-ID:", 1)),
    ("content-length-beyond-datagram", lambda d: d.replace(b"Content-Length: 0", b"Content-Length: 9999")),
    ("content-length-negative", lambda d: d.replace(b"Content-Length: 0", b"Content-Length: -5")),
    ("content-length-garbage", lambda d: d.replace(b"Content-Length: 0", b"Content-Length: zero")),
    ("max-forwards-garbage", lambda d: d.replace(b"Max-Forwards: 70", b"Max-Forwards: many")),
    ("from-garbage", lambda d: re.sub(rb"From: [^\r]*", b"From: <<<sip:@@@>>", d)),
    ("to-unbalanced-quote", lambda d: re.sub(rb"To: ", b'To: "Bob <sip:x@y>', d)),
    ("header-line-without-colon", lambda d: d.replace(b"Max-Forwards", b"Garbage line here\r\nMax-Forwards")),
    ("nul-in-header-name", lambda d: d.replace(b"Max-Forwards", b"Max-\x00Forwards")),
    ("ruri-in-brackets", lambda d: re.sub(rb"^(\w+) (\S+) ", rb"\1 <\2> ", d)),
    ("ruri-with-space", lambda d: re.sub(rb"^(\w+) (\S+) ", rb"\1 \2; lr ", d)),
    ("expires-garbage", lambda d: d.replace(b"Expires: 60", b"Expires: soon")),
    ("contact-star-with-expires", lambda d: d.replace(b"Contact: <sip:alice@127.0.0.1:9>", b"Contact: *")
     .replace(b"Expires: 60", b"Expires: 3600")),
    ("contact-star-and-more", lambda d: d.replace(b"Contact: <sip:alice@127.0.0.1:9>",
                                                  b"Contact: *\r\nContact: <sip:alice@127.0.0.1:9>")
     .replace(b"Expires: 60", b"Expires: 0")),
]


@pytest.fixture(scope="module")
def noauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Without auth, so a REGISTER reaches the registrar's own checks (Contact: * rules, RFC 3261 10.3)."""
    with ServerProcess(["--no-auth", "--location", "memory"], tmp_path_factory.mktemp("noauth")) as server:
        yield server


#: REGISTER-only breakers (they edit its Expires/Contact); the others apply to both methods
_REGISTER_ONLY = {"expires-garbage", "contact-star-with-expires", "contact-star-and-more"}
_MALFORMED_CASES = [(name, breaker, method) for name, breaker in MALFORMED for method in ("OPTIONS", "REGISTER")
                    if method == "REGISTER" or name not in _REGISTER_ONLY]


@pytest.mark.parametrize("name, breaker, method", _MALFORMED_CASES, ids=[f"{c[0]}-{c[2]}" for c in _MALFORMED_CASES])
def test_malformed_request_with_usable_via_gets_400(name: str, breaker: Callable[[bytes], bytes], method: str,
                                                    noauth_server: ServerProcess) -> None:
    port = noauth_server.port
    extra = ("Contact: <sip:alice@127.0.0.1:9>", "Expires: 60") if method == "REGISTER" else ()
    good = sip_request(method, f"sip:127.0.0.1:{port}", user="alice", extra=extra)
    bad = breaker(good)
    assert bad != good, f"{name} did not break the {method}"
    statuses = [status_of(r) for r in send_recv(port, bad)]
    assert statuses == [400], f"{name}: {statuses} for {bad!r}"
    assert noauth_server.alive()


def test_no_traceback_after_the_malformed_requests(noauth_server: ServerProcess) -> None:
    assert_healthy_noauth(noauth_server)


def assert_healthy_noauth(server: ServerProcess) -> None:
    options = sip_request("OPTIONS", f"sip:127.0.0.1:{server.port}", user="alice")
    assert [status_of(r) for r in send_recv(server.port, options)] == [200]
    log = server.output()
    assert "handler_error" not in log and "Traceback" not in log, log


# ------------------------------------------------------------------ configuration errors


def _serve(args: list[str], cwd: Path, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "leansip", "serve", "--admin", "off", "--location", "memory",
                           "--listen", "udp:127.0.0.1:0", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


BAD_TOML = [
    ("realm = \"x\"\nmax_expires = \"abc\"\n", 2, "max_expires"),
    ("# a comment\n\nt1 = -1\n", 3, "t1"),
    ("realm = \"x\"\nmax_expires = \n", 2, "TOML"),
    ("mode = \"x\"\n", 1, "mode"),
    ("frobnicate = 1\n", 1, "frobnicate"),
    ("realm = \"a\"\nlisten = [\"bogus:1.2.3.4:5\"]\n", 2, "listen"),
    ("workers = 0\n", 1, "workers"),
    ("[tls]\ncert = 3\n", 1, "tls"),
]


@pytest.mark.parametrize("text, line, what", BAD_TOML, ids=[b[2] + str(i) for i, b in enumerate(BAD_TOML)])
def test_bad_config_value_one_line_with_file_and_line_exit_2(text: str, line: int, what: str,
                                                              tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(text)
    proc = _serve(["--config", "bad.toml"], tmp_path)
    assert proc.returncode == 2, proc
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith(f"leansip: error: bad.toml:{line}:") and what in err[0], err[0]
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout


BAD_USERS = [
    ("alice:alice\nthis is bad\n", 2),
    ("# c\nalice:alice\nbob:realm:nothex\n", 3),
    ("alice:alice\n:nobody\n", 2),
    ("alice:x:0123456789abcdef0123456789abcdef:ROT13\n", 1),
    ("alice:alice\nalice:again\n", 2),
]


@pytest.mark.parametrize("text, line", BAD_USERS, ids=[str(i) for i in range(len(BAD_USERS))])
def test_bad_users_file_one_line_with_file_and_line_exit_2(text: str, line: int, tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_text(text)
    proc = _serve(["--auth", "--users", "users.txt"], tmp_path)
    assert proc.returncode == 2, proc
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith(f"leansip: error: users.txt:{line}:"), err[0]
    assert "listening" not in proc.stdout


def test_bad_users_file_named_in_config_file(tmp_path: Path) -> None:
    (tmp_path / "users.txt").write_text("alice:alice\nno-colon-here\n")
    (tmp_path / "leansip.toml").write_text('auth = true\nusers = "users.txt"\n')
    proc = _serve(["--config", "leansip.toml"], tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "users.txt:2:" in proc.stderr and "listening" not in proc.stdout


# ------------------------------------------------------------------ sipvicious


def _svmap() -> str | None:
    for name in ("sipvicious_svmap", "svmap", "svmap.py"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_sipvicious_svmap_finds_the_server_and_it_keeps_running(tmp_path: Path) -> None:
    svmap = _svmap()
    if svmap is None:
        reason = "sipvicious not installed (apt-get install -y sipvicious)"
        if external_required():
            pytest.fail(reason)
        pytest.skip(reason)
    args = ["--auth", "--users", str(_users_file(tmp_path)), "--realm", "leansip", "--location", "memory"]
    with ServerProcess(args, tmp_path) as server:
        env = dict(os.environ, HOME=str(tmp_path))  # svmap keeps its scan sessions under ~/.sipvicious
        for method in ("OPTIONS", "INVITE", "REGISTER"):
            proc = subprocess.run([svmap, "127.0.0.1", "-p", str(server.port), "-m", method], capture_output=True,
                                  text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
            assert f"127.0.0.1:{server.port}" in proc.stdout, proc.stdout + proc.stderr
        assert_healthy(server)


# ------------------------------------------------------------------ names in a peer's Via


def test_names_from_a_via_are_not_resolved_by_a_blocking_sendto() -> None:
    """A Via's maddr/received/sent-by name (or a bogus dotted "address") must not reach ``sendto`` as is:
    ``sendto`` would resolve it synchronously and stall the server for as long as DNS takes."""
    from leansip.io.udpbase import is_address as _is_address

    assert _is_address("127.0.0.1") and _is_address("::1") and _is_address("2001:db8::9:1")
    for name in ("localhost", "host.example.com", "999.999.999.999", "1", "1.2.3", "\u0661\u0662\u0663", ""):
        assert not _is_address(name), name


def test_reply_to_a_via_maddr_name_still_arrives(noauth_server: ServerProcess) -> None:
    """RFC 3261 18.2.2: the response goes to the maddr, here a name (localhost, from /etc/hosts: no network)
    looked up off the event loop; meanwhile the server goes on answering."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sink = sock.getsockname()[1]
        data = sip_request("OPTIONS", f"sip:127.0.0.1:{noauth_server.port}", user="alice").replace(
            b"127.0.0.1:9;rport;", f"127.0.0.1:{sink};maddr=localhost;".encode(), 1)
        sock.sendto(data, ("127.0.0.1", noauth_server.port))
        sock.settimeout(5)
        assert status_of(sock.recv(65535)) == 200
    assert_healthy_noauth(noauth_server)
