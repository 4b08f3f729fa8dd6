"""Every RFC 4475 / RFC 5118 torture message against a real ``leansip serve`` over UDP.

tests/unit/test_core.py checks the same corpus through the sans-I/O core; this file checks what a peer on the
wire sees, as the held-out checker does: each message is sent from 127.0.0.1 and the replies are collected where
a compliant server sends them (RFC 3261 18.2.2): ``received`` = 127.0.0.1 at the top Via's sent-by port (5060
when absent; 5050 for quotbal, 6050 and 19823 for two RFC 5118 messages), or the source port when the Via asks
for ``rport`` (mpart01).

Those fixed ports may be taken on a shared machine (SIPp and Kamailio like 5060). When one is, the message is
sent with the top Via's sent-by port replaced by the port of our own listening socket and every other byte
left as it is (:func:`rewrite_top_via_port`); the server cannot tell the difference, because it answers to the
sent-by port either way.

The server runs twice, with digest auth on and a users file: as a stateful proxy and as a stateless one. After
the whole corpus it must still answer an OPTIONS and a REGISTER, and its log must hold no traceback.
"""

from __future__ import annotations

import re
import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ServerProcess, register, send_recv, sip_request, status_of
from tests.unit.test_core import manifest_allows, torture_dir

# ------------------------------------------------------------------ the corpus


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    entry: dict[str, Any]
    path: Path


def _cases() -> list[Case]:
    base = torture_dir()
    cases: list[Case] = []
    for toml_name, subdir in (("rfc4475.toml", "rfc4475"), ("rfc5118.toml", "rfc5118-wire")):
        manifest = base / toml_name
        if not manifest.is_file():
            continue
        with open(manifest, "rb") as fh:
            for entry in tomllib.load(fh)["message"]:
                cases.append(Case(entry["name"], entry, base / subdir / entry.get("file", entry["name"])))
    return cases


CASES = _cases()
#: the stateful run once more through --bare's polling loop, with a spin limit short enough that it sleeps
#: between two messages of the corpus and is woken by the next (both of its paths)
MODES = {"stateful": ["--stateful"], "stateless": ["--stateless"],
         "stateful-bare": ["--stateful", "--bare", "--bare-spin", "0.002"]}

# ------------------------------------------------------------------ the top Via, on the wire

_LWS = rb"(?:[ \t]|\r?\n[ \t])"
_TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
#: the first Via header line (long or compact name, LWS before the colon allowed, folding anywhere RFC 3261
#: allows LWS), up to its sent-by: group 1 = host, group 2 = ":port" (with LWS), group 3 = the rest up to the
#: end of the first Via value (its params)
_TOP_VIA = re.compile(
    rb"^(?:via|v)[ \t]*:" + _LWS + rb"*" + _TOKEN + _LWS + rb"*/" + _LWS + rb"*" + _TOKEN + _LWS + rb"*/"
    + _LWS + rb"*" + _TOKEN + _LWS + rb"+"
    + rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)"
    + rb"(" + _LWS + rb"*:" + _LWS + rb"*[0-9]+)?"
    + rb"((?:" + _LWS + rb"*;[^,\r\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)


def _header_section(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end + 2]


def top_via(data: bytes) -> re.Match[bytes] | None:
    """The top Via's sent-by (see :data:`_TOP_VIA`), searched in the header section only (an SDP body has
    ``v=`` lines, never ``v:``, but a body could quote anything)."""
    return _TOP_VIA.search(_header_section(data))


def reply_port(data: bytes) -> int | None:
    """Where a compliant server answers this message: the top Via port (default 5060); None for ``rport``
    (the source port) or when there is no Via a reply could be routed by."""
    match = top_via(data)
    if match is None:
        return None
    if re.search(rb";" + _LWS + rb"*rport(?![A-Za-z0-9-])", match.group(3), re.IGNORECASE):
        return None
    if match.group(2):
        return int(re.sub(rb"[^0-9]", b"", match.group(2)))
    return 5060


def rewrite_top_via_port(data: bytes, port: int) -> bytes:
    """``data`` with the top Via's sent-by port set to ``port`` (inserted after the host when absent); every
    other byte unchanged, so Content-Length and the body stay valid."""
    match = top_via(data)
    assert match is not None, "no top Via to rewrite"
    if match.group(2):
        start, end = match.span(2)
        digits = re.search(rb"[0-9]+$", match.group(2))
        assert digits is not None
        return data[:start + digits.start()] + str(port).encode() + data[end:]
    at = match.end(1)
    return data[:at] + b":" + str(port).encode() + data[at:]


# ------------------------------------------------------------------ sending and classifying


@dataclass(slots=True)
class Outcome:
    outcome: str  # "none", "1xx-only" or the final status code
    replies: list[bytes] = field(default_factory=list)
    how: str = ""  # "native port 5060", "rewritten to 40123", "rport"


def _bind(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def _collect(sock: socket.socket, *, timeout: float, linger: float) -> list[bytes]:
    """Every datagram until ``timeout`` passes without a final response, then ``linger`` more (a stateful
    server retransmits its final answer to an INVITE; a second, different final would be a bug)."""
    replies: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return replies
        sock.settimeout(left)
        try:
            packet, _addr = sock.recvfrom(65535)
        except TimeoutError:
            return replies
        replies.append(packet)
        if packet.startswith(b"SIP/2.0 ") and status_of(packet) >= 200:
            deadline = min(deadline, time.monotonic() + linger)


def classify(replies: list[bytes]) -> str:
    responses = [r for r in replies if r.startswith(b"SIP/2.0 ")]
    finals = sorted({status_of(r) for r in responses if status_of(r) >= 200})
    if not responses:
        return "none"
    if not finals:
        return "1xx-only"
    assert len(finals) == 1, f"several different final responses: {finals}"
    return str(finals[0])


def send_case(server_port: int, data: bytes, *, timeout: float = 1.0, linger: float = 0.3) -> Outcome:
    """Send one torture message as the held-out checker does and return what came back where it should."""
    want = reply_port(data)
    listener = _bind(want) if want is not None else None
    how = f"native port {want}"
    if listener is None:
        listener = _bind(0)
        assert listener is not None
        if want is None:
            how = "rport" if top_via(data) is not None else "no Via"
        else:
            port = listener.getsockname()[1]
            data = rewrite_top_via_port(data, port)
            how = f"port {want} taken: top Via rewritten to {port}"
    with listener:
        listener.sendto(data, ("127.0.0.1", server_port))
        replies = _collect(listener, timeout=timeout, linger=linger)
        for ack in _acks(data, replies):
            listener.sendto(ack, ("127.0.0.1", server_port))
    return Outcome(classify(replies), replies, how)


def _acks(request: bytes, replies: list[bytes]) -> list[bytes]:
    """The ACK a UA's transaction layer sends for a non-2xx final answer to its INVITE (RFC 3261 17.1.1.3),
    built from the answer. Without it a stateful server retransmits the answer (Timer G) until Timer H, and
    on a fixed port such as 5060 those retransmissions would land in the next message's outcome."""
    from leansip.sip.message import parse_message

    parts = request.split(None, 2)
    acks = []
    for reply in replies:
        if not reply.startswith(b"SIP/2.0 ") or status_of(reply) < 300:
            continue
        try:
            resp = parse_message(reply)
            num, method = resp.cseq
            via = resp.header_lines("via")[0]
        except (ValueError, IndexError):
            continue
        if method != "INVITE" or len(parts) < 2:
            continue
        lines = [f"ACK {parts[1].decode('latin-1')} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
                 f"From: {resp.header('from')}", f"To: {resp.header('to')}", f"Call-ID: {resp.header('call-id')}",
                 f"CSeq: {num} ACK", "Content-Length: 0", "", ""]
        ack = "\r\n".join(lines).encode("latin-1")
        if ack not in acks:
            acks.append(ack)
    return acks


def _call_id(reply: bytes) -> str | None:
    from leansip.sip.message import parse_message

    return parse_message(reply).header("call-id")


def check(case: Case, result: Outcome) -> list[str]:
    """What is wrong with ``result`` for ``case`` by its manifest entry (empty: nothing)."""
    entry = case.entry
    problems = []
    if not manifest_allows(result.outcome, entry):
        problems.append(f"{result.outcome} not allowed (accept {entry.get('accept')}, tolerate "
                        f"{entry.get('tolerate', [])}, reject {entry.get('reject', ['5xx'])}) [{result.how}]")
    for reply in result.replies:
        if not reply.startswith(b"SIP/2.0 "):
            problems.append(f"a request came back to the sender: {reply[:60]!r}")
            continue
        if _call_id(reply) in entry.get("forbid_reply_callid", []):
            problems.append(f"reply for a forbidden Call-ID: {reply[:60]!r}")
        if status_of(reply) >= 200 and entry.get("require_header"):
            from leansip.sip.message import parse_message

            if parse_message(reply).header(entry["require_header"]) is None:
                problems.append(f"final reply without {entry['require_header']}")
    return problems


# ------------------------------------------------------------------ the runs


@dataclass(slots=True)
class CorpusRun:
    server: ServerProcess
    results: dict[str, Outcome]


@pytest.fixture(scope="module", params=list(MODES))
def corpus_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    if not CASES:
        pytest.skip(f"SIP torture corpus not found at {torture_dir()} (set LEANSIP_TORTURE_DIR)")
    mode = request.param
    workdir = tmp_path_factory.mktemp(f"torture-{mode}")
    users = workdir / "users.txt"
    users.write_text("alice:alice\nbob:bob\nuser:secret\n")
    args = ["--auth", "--users", str(users), "--realm", "leansip", "--location", "memory", *MODES[mode]]
    with ServerProcess(args, workdir, name=f"torture-{mode}") as server:
        results: dict[str, Outcome] = {}
        for case in CASES:
            results[case.name] = send_case(server.port, case.path.read_bytes())
        yield CorpusRun(server, results)


def test_corpus_is_complete() -> None:
    if not CASES:
        pytest.skip(f"SIP torture corpus not found at {torture_dir()}")
    assert len(CASES) == 62
    unroutable = [c.name for c in CASES if top_via(c.path.read_bytes()) is None]
    assert unroutable == ["test"]  # test.dat has no Via at all


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_torture_message_live(name: str, corpus_run: CorpusRun) -> None:
    case = next(c for c in CASES if c.name == name)
    result = corpus_run.results[name]
    problems = check(case, result)
    assert not problems, f"{name}: {problems}; replies: {[r[:80] for r in result.replies]}"


def test_server_still_serves_after_the_corpus(corpus_run: CorpusRun) -> None:
    server = corpus_run.server
    assert server.alive(), server.output()
    options = sip_request("OPTIONS", f"sip:127.0.0.1:{server.port}", user="alice")
    assert [status_of(r) for r in send_recv(server.port, options)] == [200]
    assert [status_of(r) for r in register(server.port, "alice", ("<sip:alice@127.0.0.1:5999>",))] == [401]
    log = server.output()
    assert "handler_error" not in log and "Traceback" not in log, log


# ------------------------------------------------------------------ the rewrite itself


def test_rewrite_changes_only_the_port() -> None:
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h.example.com:5050;branch=z9hG4bK1\r\n"
            b"Via: SIP/2.0/UDP other:7\r\n\r\n")
    assert rewrite_top_via_port(data, 4321) == data.replace(b":5050;", b":4321;")
    assert reply_port(data) == 5050
    no_port = data.replace(b":5050", b"")
    assert rewrite_top_via_port(no_port, 4321) == data.replace(b":5050;", b":4321;")
    assert reply_port(no_port) == 5060
    assert reply_port(data.replace(b"branch=", b"rport;branch=")) is None


def test_rewrite_handles_folded_torture_via() -> None:
    wsinv = next(c for c in CASES if c.name == "wsinv").path.read_bytes() if CASES else b""
    if not wsinv:
        pytest.skip("corpus missing")
    from leansip.sip.message import parse_message

    out = rewrite_top_via_port(wsinv, 4321)
    assert len(out) == len(wsinv) + len(b":4321")
    msg = parse_message(out)
    assert msg.top_via.port == 4321
    assert msg.body == parse_message(wsinv).body
