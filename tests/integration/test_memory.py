"""No input leaks memory: 200,000 mixed messages through the sans-I/O server core, with a fake clock.

The core is built as ``leansip serve --auth --users FILE`` builds it (stateful proxy, memory location store),
and is fed what a busy server sees: REGISTER refreshes (with digest) from a bounded set of users, calls
through the stateful proxy with fake callees that ring, answer, refuse, get cancelled or stay silent, BYE, the
retransmissions of all of these, unknown methods, wrong passwords from ever new sources, and garbage. The clock
moves on as the runtime's one timer would (every deadline fired) and housekeeping runs once per fake second.

Every table the core keeps must stop growing once the traffic pattern has been seen (reply cache, transaction
table and its heap, proxy contexts and Timer C heap, failure limiter, nonce counter, URI/name-addr caches,
location store, and the bytes the core's byte bounds count), and the memory traced by :mod:`tracemalloc` after a warm-up round must not grow beyond a
small margin over the further rounds. In-process rather than over sockets: the same code, 50 times faster.
"""

from __future__ import annotations

import gc
import logging
import random
import socket
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from leansip.app.config import Config, ListenSpec
from leansip.app.serve import build_core
from leansip.server.core import ServerCore
from leansip.server.users import load_users
from leansip.sip import uri as uri_mod
from leansip.sip.digest import build_authorization, choose_challenge
from leansip.sip.digest_auth import _ISSUED_MAX
from leansip.sip.message import Request, Response, make_response, parse_message
from leansip.sip.send import Send

SERVER = ("127.0.0.1", 5060)
USERS = 40
START = 1_000_000.0


@dataclass(slots=True)
class Phone:
    """One registered user agent at 10.0.0.<n>:5060, the caller and the callee side of our fake calls."""

    n: int
    user: str
    password: str
    addr: tuple[str, int]
    reg_call_id: str
    cseq: int = 0
    calls: int = 0
    #: the last challenge answered and its nonce count: a phone reuses a nonce with nc + 1 (RFC 7616 3.4),
    #: as real phones do, until the server calls it stale
    challenge: str | None = None
    nc: int = 0

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.addr[0]}:{self.addr[1]}>"


@dataclass(slots=True)
class Harness:
    core: ServerCore
    rng: random.Random
    now: float = START
    fed: int = 0
    last_housekeeping: float = START
    seq: int = 0
    recent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    #: a challenge the guessers answer with a wrong password (one round trip each, like a scanner)
    guess_challenge: str | None = None

    # ------------------------------------------------------------------ the wire
    def feed(self, data: bytes, source: tuple[str, int]) -> list[Send]:
        """One datagram in, as the UDP endpoint would; remembered for a later retransmission."""
        self.fed += 1
        out = self.core.receive(data, source, "udp", self.now)
        if self.rng.random() < 0.1:
            self.recent.append((data, source))
            if len(self.recent) > 200:
                del self.recent[:100]
        return out

    def tick(self, dt: float) -> None:
        """Let ``dt`` seconds pass: fire every due deadline, housekeeping once per second."""
        self.now += dt
        core = self.core
        while (at := core.next_deadline()) is not None and at <= self.now:
            core.handle_timers(at)
        if self.now - self.last_housekeeping >= 1.0:
            self.last_housekeeping = self.now
            core.housekeeping(self.now)

    def branch(self) -> str:
        self.seq += 1
        return f"z9hG4bK-m{self.seq}"

    def tag(self) -> str:
        self.seq += 1
        return f"t{self.seq}"


def _request(method: str, ruri: str, phone: Phone, *, call_id: str, cseq: int, branch: str, from_tag: str,
             to_user: str, to_tag: str | None = None, extra: tuple[str, ...] = (), body: bytes = b"",
             to: str | None = None) -> bytes:
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {phone.addr[0]}:{phone.addr[1]};branch={branch}",
             "Max-Forwards: 70",
             f"From: <sip:{phone.user}@127.0.0.1>;tag={from_tag}",
             "To: " + (to or f"<sip:{to_user}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: {phone.contact}", *extra,
             f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _responses(out: list[Send], dest: tuple[str, int]) -> list[Response]:
    return [m for s in out if s.dest == dest and s.data.startswith(b"SIP/2.0 ")
            for m in [parse_message(s.data)] if isinstance(m, Response)]


def _requests(out: list[Send], dest: tuple[str, int]) -> list[Request]:
    return [m for s in out if s.dest == dest and not s.data.startswith(b"SIP/2.0 ")
            for m in [parse_message(s.data)] if isinstance(m, Request)]


def _final(responses: list[Response]) -> Response | None:
    finals = [r for r in responses if r.status >= 200]
    return finals[-1] if finals else None


def _authorized(h: Harness, phone: Phone, build: Callable[[int, str, tuple[str, ...]], bytes], method: str,
                ruri: str) -> tuple[list[Send], int, str]:
    """Send a request with credentials for the phone's last nonce (nc + 1), or without any; on a 401/407 ACK
    it if it was an INVITE (RFC 3261 17.1.1.3), answer the fresh challenge and send it again. Returns what the
    core sent for the last one, its CSeq and branch."""
    for attempt in range(2):
        phone.cseq += 1
        branch = h.branch()
        extra: tuple[str, ...] = ()
        if phone.challenge is not None:
            phone.nc += 1
            credentials = build_authorization(phone.challenge, method, ruri, phone.user, phone.password,
                                              nc=phone.nc)
            extra = (f"{'Proxy-' if method != 'REGISTER' else ''}Authorization: {credentials}",)
        data = build(phone.cseq, branch, extra)
        out = h.feed(data, phone.addr)
        final = _final(_responses(out, phone.addr))
        if final is None or final.status not in (401, 407) or attempt == 1:
            return out, phone.cseq, branch
        if method == "INVITE":
            ack = data.replace(b"INVITE ", b"ACK ", 1).replace(f"CSeq: {phone.cseq} INVITE".encode(),
                                                                f"CSeq: {phone.cseq} ACK".encode())
            to_line = next(line for line in ack.split(b"\r\n") if line.startswith(b"To: "))
            h.feed(ack.replace(to_line, f"To: {final.header('to')}".encode(), 1), phone.addr)
        hname = "www-authenticate" if final.status == 401 else "proxy-authenticate"
        phone.challenge = choose_challenge(final.header_lines(hname))
        phone.nc = 0
    raise AssertionError("unreachable")


# ------------------------------------------------------------------ the traffic


def register(h: Harness, phone: Phone) -> None:
    ruri = "sip:127.0.0.1"
    tag = f"r{phone.n}"

    def build(cseq: int, branch: str, extra: tuple[str, ...]) -> bytes:
        return _request("REGISTER", ruri, phone, call_id=phone.reg_call_id, cseq=cseq, branch=branch,
                        from_tag=tag, to_user=phone.user, extra=("Expires: 600", *extra))

    out, _cseq, _branch = _authorized(h, phone, build, "REGISTER", ruri)
    final = _final(_responses(out, phone.addr))
    assert final is not None and final.status == 200, final


def call(h: Harness, caller: Phone, callee: Phone, how: str) -> None:
    """One call from ``caller`` to ``callee`` through the proxy; the callee answers as ``how`` says."""
    caller.calls += 1
    call_id = f"call-{caller.n}-{caller.calls}-{h.seq}"
    from_tag = h.tag()
    ruri = f"sip:{callee.user}@127.0.0.1"
    sdp = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

    def build(cseq: int, branch: str, extra: tuple[str, ...]) -> bytes:
        return _request("INVITE", ruri, caller, call_id=call_id, cseq=cseq, branch=branch, from_tag=from_tag,
                        to_user=callee.user, extra=("Content-Type: application/sdp", *extra), body=sdp)

    out, cseq, branch = _authorized(h, caller, build, "INVITE", ruri)
    forwarded = _requests(out, callee.addr)
    if not forwarded:  # the callee's binding ran out between its refreshes: 480, nothing to drive
        final = _final(_responses(out, caller.addr))
        assert final is not None and final.status == 480, [s.data[:40] for s in out]
        _ack_non_2xx(h, caller, ruri, call_id, cseq, branch, from_tag, out)
        return
    assert len(forwarded) == 1, [s.data[:40] for s in out]
    invite = forwarded[0]
    if how == "silent":  # the callee never answers: Timer B (and C) end it as the clock moves on
        return
    if how == "retransmit":  # the caller retransmits its INVITE: absorbed by the server transaction
        h.feed(build(cseq, branch, ()), caller.addr)
        return
    to_tag = h.tag()
    ringing = make_response(invite, 180, to_tag=to_tag, headers=[("Contact", callee.contact)])
    h.feed(ringing.to_bytes(), callee.addr)
    if how == "cancel":
        cancel = _request("CANCEL", ruri, caller, call_id=call_id, cseq=cseq, branch=branch, from_tag=from_tag,
                          to_user=callee.user)
        out = h.feed(cancel, caller.addr)
        for fwd_cancel in _requests(out, callee.addr):
            h.feed(make_response(fwd_cancel, 200, to_tag=to_tag).to_bytes(), callee.addr)
        out = h.feed(make_response(invite, 487, to_tag=to_tag).to_bytes(), callee.addr)
        _ack_non_2xx(h, caller, ruri, call_id, cseq, branch, from_tag, out)
        return
    if how == "busy":
        out = h.feed(make_response(invite, 486, to_tag=to_tag).to_bytes(), callee.addr)
        _ack_non_2xx(h, caller, ruri, call_id, cseq, branch, from_tag, out)
        return
    rr = invite.header_values("record-route")
    ok = make_response(invite, 200, to_tag=to_tag,
                       headers=[*(("Record-Route", v) for v in rr), ("Contact", callee.contact),
                                ("Content-Type", "application/sdp")], body=sdp)
    out = h.feed(ok.to_bytes(), callee.addr)
    answers = _responses(out, caller.addr)
    assert [r.status for r in answers] == [200], answers
    # the caller's dialog: route set = Record-Route reversed, remote target = the callee's Contact
    route = tuple(f"Route: {v}" for v in reversed(answers[0].header_values("record-route")))
    target = callee.contact[1:-1]
    ack = _request("ACK", target, caller, call_id=call_id, cseq=cseq, branch=h.branch(), from_tag=from_tag,
                   to_user=callee.user, to_tag=to_tag, extra=route)
    h.feed(ack, caller.addr)
    if how == "answer-retransmit":  # the callee did not see the ACK yet and retransmits its 2xx
        h.feed(ok.to_bytes(), callee.addr)
    bye = _request("BYE", target, caller, call_id=call_id, cseq=cseq + 1, branch=h.branch(), from_tag=from_tag,
                   to_user=callee.user, to_tag=to_tag, extra=route)
    out = h.feed(bye, caller.addr)
    for fwd_bye in _requests(out, callee.addr):
        h.feed(make_response(fwd_bye, 200).to_bytes(), callee.addr)


def _ack_non_2xx(h: Harness, caller: Phone, ruri: str, call_id: str, cseq: int, branch: str, from_tag: str,
                 out: list[Send]) -> None:
    final = _final(_responses(out, caller.addr))
    assert final is not None, [s.data[:40] for s in out]
    ack = _request("ACK", ruri, caller, call_id=call_id, cseq=cseq, branch=branch, from_tag=from_tag,
                   to_user="", to=final.header("to"))
    h.feed(ack, caller.addr)


def wrong_password(h: Harness, n: int) -> None:
    """A guesser from an ever new source: a 401, then a wrong answer (the limiter remembers the source)."""
    source = (f"172.{16 + n // 65536 % 16}.{n // 256 % 256}.{n % 256}", 5060)
    phone = Phone(n, "user0", "wrong", source, f"guess-{n}", challenge=h.guess_challenge)
    ruri = "sip:127.0.0.1"

    def build(cseq: int, branch: str, extra: tuple[str, ...]) -> bytes:
        return _request("REGISTER", ruri, phone, call_id=phone.reg_call_id, cseq=cseq, branch=branch,
                        from_tag="g", to_user="user0", extra=extra)

    _authorized(h, phone, build, "REGISTER", ruri)


def noise(h: Harness, phone: Phone) -> None:
    """Unknown methods, garbage, mutated messages and retransmissions of recent datagrams."""
    rng = h.rng
    pick = rng.random()
    if pick < 0.45 and h.recent:
        data, source = rng.choice(h.recent)
        h.feed(data, source)
    elif pick < 0.6:
        method = rng.choice(["FOO", "BAR-BAZ", "X" + str(rng.randrange(10**6))])
        h.feed(_request(method, f"sip:user{rng.randrange(USERS)}@127.0.0.1", phone, call_id=f"u{h.seq}",
                        cseq=1, branch=h.branch(), from_tag=h.tag(), to_user="x"), phone.addr)
    elif pick < 0.85:
        h.feed(rng.randbytes(rng.randrange(1, 300)), (f"192.168.{rng.randrange(256)}.{rng.randrange(256)}", 5060))
    else:
        data = _request("OPTIONS", f"sip:user{rng.randrange(USERS)}@127.0.0.1", phone, call_id=f"o{h.seq}",
                        cseq=1, branch=h.branch(), from_tag=h.tag(), to_user="x")
        i = rng.randrange(len(data))
        data = data[:i] + rng.choice([b"\x00", b";", b"<", b"\r\n", b":", b"%", b"\"", b""]) + data[i + 1:]
        h.feed(data, phone.addr)


CALL_OUTCOMES = ["answer", "answer", "answer", "busy", "cancel", "silent", "retransmit", "answer-retransmit"]


def run_round(h: Harness, phones: list[Phone], guessers: list[int], messages: int) -> dict[str, int]:
    """``messages`` datagrams of the mix, then 200 fake seconds of quiet; returns the largest size each table
    reached during the round (sampled every 1000 datagrams) and its size after the quiet."""
    target = h.fed + messages
    rng = h.rng
    peak: dict[str, int] = {}
    next_sample = h.fed + 1000
    while h.fed < target:
        pick = rng.random()
        if pick < 0.07:
            register(h, rng.choice(phones))
        elif pick < 0.13:
            caller, callee = rng.sample(phones, 2)
            call(h, caller, callee, rng.choice(CALL_OUTCOMES))
        elif pick < 0.14:
            guessers[0] += 1
            wrong_password(h, guessers[0])
        else:
            noise(h, rng.choice(phones))
        h.tick(0.01)
        if h.fed >= next_sample:
            next_sample += 1000
            for name, value in sizes(h.core).items():
                peak[name] = max(peak.get(name, 0), value)
    h.tick(200.0)  # every transaction, Timer C, cached reply and failure window of this round can now end
    after = sizes(h.core)
    return {**{f"peak_{k}": v for k, v in peak.items()}, **after}


# ------------------------------------------------------------------ sizes


def sizes(core: ServerCore) -> dict[str, int]:
    proxy = core.proxy
    table = getattr(proxy, "table", None)
    auth = core.authenticator
    return {
        "reply_cache": len(core._reply_cache),
        "reply_cache_bytes": core._reply_cache.nbytes,
        "held_bytes": core.held_bytes(),  # what the byte bounds count: replies and transactions
        "transactions": len(table) if table is not None else 0,
        "transaction_heap": len(table._heap) if table is not None else 0,
        "contexts": len(getattr(proxy, "contexts", {})),
        "client_branches": len(getattr(proxy, "branch_of", {})),
        "timer_c": len(getattr(proxy, "_timer_c", [])),
        "limiter": len(core.limiter),
        "nonces": len(auth.nonces) if auth is not None else 0,
        "uri_cache": len(uri_mod._URI_CACHE),
        "name_addr_cache": len(uri_mod._NAME_ADDR_CACHE),
        "via_cache": len(uri_mod._VIA_CACHE),
        "via_shapes": len(uri_mod._VIA_SHAPES),
        "bindings": core.location.count(),
        "stats_labels": len(core.stats.requests) + len(core.stats.drops),
    }


@pytest.fixture
def core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerCore:
    monkeypatch.setenv("LEANSIP_SECRET", "memory-test-secret-0123456789abcdef")

    def no_dns(host: str) -> str:
        raise OSError(f"no DNS in this test ({host})")

    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    users = tmp_path / "users.txt"
    users.write_text("".join(f"user{i}:pass{i}\n" for i in range(USERS)))
    config = Config(listen=[ListenSpec("udp", *SERVER)], auth=True, location="memory", realm="leansip",
                    admin=None, stateful=True, users=users, db=str(tmp_path / "leansip.db"))
    return build_core(config, load_users(users), START)


#: datagrams per round: seven full rounds untraced (table sizes and allocated blocks must plateau), then three
#: short rounds under tracemalloc (its overhead is 4-5x) whose traced memory must not grow: 200,000 in all
ROUND_SIZES = [27_300] * 7 + [3_000] * 3
TRACED_FROM = 7


@pytest.fixture
def no_log_capture() -> Iterator[None]:
    """The core logs each wrong password at warning: pytest's log capture would keep every record for the test
    report, memory a running server never holds (its handler writes the line out)."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def test_no_input_leaks_memory(core: ServerCore, no_log_capture: None) -> None:
    began = time.monotonic()
    h = Harness(core, random.Random(3261))
    phones = [Phone(i, f"user{i}", f"pass{i}", (f"10.0.0.{i + 2}", 5060), f"reg-{i}") for i in range(USERS)]
    for phone in phones:
        register(h, phone)
    h.guess_challenge = phones[0].challenge
    guessers = [0]
    history: list[dict[str, int]] = []
    blocks: list[int] = []
    traced: list[int] = []
    try:
        for n, messages in enumerate(ROUND_SIZES):
            history.append(run_round(h, phones, guessers, messages))
            # the parse caches are bounded by design (cleared when full, checked below); empty them so what
            # they happen to hold does not blur the measurement of everything else
            assert len(uri_mod._URI_CACHE) <= uri_mod._CACHE_MAX and len(uri_mod._NAME_ADDR_CACHE) <= uri_mod._CACHE_MAX
            assert len(uri_mod._VIA_CACHE) <= uri_mod._VIA_CACHE_MAX and len(uri_mod._VIA_SHAPES) <= uri_mod._VIA_CACHE_MAX
            uri_mod._URI_CACHE.clear()
            uri_mod._NAME_ADDR_CACHE.clear()
            uri_mod._VIA_CACHE.clear()
            uri_mod._VIA_SHAPES.clear()
            if core.authenticator is not None:  # the issued nonces it remembers: bounded the same way
                assert core.authenticator.issued_count() <= _ISSUED_MAX
                core.authenticator.forget_issued()
            gc.collect()
            if n < TRACED_FROM:
                blocks.append(sys.getallocatedblocks())
            if n == TRACED_FROM - 1:
                tracemalloc.start()  # after the warm-up: caches and tables have their working size
            elif n >= TRACED_FROM:
                traced.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - began
    report = "\n".join(f"round {i}: {s}" for i, s in enumerate(history))
    report += f"\nallocated blocks: {blocks}\ntraced: {traced}\n{h.fed} datagrams in {elapsed:.1f}s"
    assert h.fed >= 200_000, report
    # the traffic really went through: calls were forwarded, every phone is registered, guessers were counted
    assert core.stats.requests.get("BYE", 0) > 1000 and core.stats.auth_failures > 1000, core.stats.as_dict()
    assert history[-1]["bindings"] == USERS, report
    # every table plateaus: its peak in the last full round is not above its peak in the first one
    first, last = history[0], history[TRACED_FROM - 1]
    for name, value in last.items():
        if "cache" in name and "reply" not in name:
            continue  # emptied after every round (above)
        assert value <= max(first[name] * 1.1, first[name] + 50), f"{name} grew: {report}"
    # and once the timers have run out, nothing of the calls is left
    for name in ("transactions", "transaction_heap", "contexts", "client_branches", "timer_c", "reply_cache",
                 "reply_cache_bytes", "held_bytes", "limiter"):
        assert last[name] == 0, f"{name} not emptied: {report}"
    # the interpreter holds no more objects in the last rounds than in the first ones (the count swings by a
    # few thousand blocks with what is in flight when a round ends, so compare averages of three)
    early, late = sum(blocks[1:4]) / 3, sum(blocks[-3:]) / 3
    assert late - early < early * 0.03, f"allocated blocks grew: {report}"
    # memory traced after the warm-up does not keep growing round after round
    growth = traced[-1] - traced[0]
    assert growth < 256 * 1024, f"traced memory grew {growth} bytes: {report}"
