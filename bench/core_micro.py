"""In-process benchmark of the sans-I/O core: time spent in ``ServerCore.receive()`` per REGISTER or per call.

The SIPp runs (``bench/bench.py``) measure the whole server process: sockets, event loop, the core. This one
measures only the core, on the same four workloads and with the same settings as the SIPp scenarios (built with
``leansip.app.serve.build_core``, memory location store, step timings on), and with no machine noise from a
second process. It is how to compare two builds of the core: pure Python against the mypyc-compiled modules
(``LEANSIP_PURE=1`` forces the pure modules even when compiled ones are installed; see ``leansip/_build.py``).

Per workload, every message the UAs would send is fed to ``receive()`` and only the time inside ``receive()``
is counted (the UAs' own work of building replies is not); each round uses fresh Call-IDs, rounds alternate
and the best is reported (the least disturbed run).

* ``register``       REGISTER -> 200 (distinct Call-IDs, 1000 users; no auth)
* ``register-auth``  REGISTER -> 401, REGISTER with MD5 credentials -> 200 (per registration, both requests)
* ``stateless``      INVITE, 180, 200, ACK, BYE, 200 through the stateless proxy (per call, six messages)
* ``stateful``       the same call through the transaction-stateful proxy
* ``stateful-script`` the same call through a route script doing what the built-in proxy does
* ``stateful-calls`` the same, with the call tracked and its record written (the server's default): the
                     tracker in the core, and every 50 calls the records handed to the CDR writer thread, whose
                     work counts too (callgrind counts every thread; the timed run waits for its commits)

    python3 bench/core_micro.py [--n 3000] [--rounds 5] [--only stateful,...] [--loops N]

``--loops N`` runs each workload's messages N times with no timing and prints nothing: the form to run under
``valgrind --tool=callgrind`` (instructions per operation = difference of two N divided by their difference).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from leansip.app.cdr import CdrWriter  # noqa: E402
from leansip.app.config import Config, parse_listen  # noqa: E402
from leansip.app.serve import build_core, tune_gc  # noqa: E402
from leansip.routes import load_routes  # noqa: E402
from leansip.server.calls import CallTracker  # noqa: E402
from leansip.server.core import ServerCore  # noqa: E402
from leansip.server.users import UserRecord, UserStore  # noqa: E402
from leansip.sip.message import Request, Response, parse_message  # noqa: E402

PROXY = ("127.0.0.1", 5060)
CALLER = ("127.0.0.1", 6001)
CALLEE = ("127.0.0.1", 6002)
REALM = "127.0.0.1"
USERS = int(os.environ.get("BENCH_USERS", "1000"))

MODES = {  # workload -> Config fields (what bench.py passes as `leansip serve` flags)
    "register": {"mode": "registrar", "stateful": False, "auth": False},
    "register-auth": {"mode": "registrar", "stateful": False, "auth": True},
    "stateless": {"mode": "proxy", "stateful": False, "auth": False},
    "stateful": {"mode": "proxy", "stateful": True, "auth": False},
    # the stateful call through a route script that does what the built-in proxy does (bench/routes/proxy.py)
    "stateful-script": {"mode": "proxy", "stateful": True, "auth": False,
                        "routes": Path(__file__).resolve().parent / "routes" / "proxy.py"},
    "stateful-calls": {"mode": "proxy", "stateful": True, "auth": False},
}

_SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def make_core(workload: str) -> ServerCore:
    config = Config(listen=[parse_listen(f"udp:{PROXY[0]}:{PROXY[1]}")], location="memory", realm=REALM,
                    auth_algorithms=["MD5"], fail_slow_after=0, fail_block_after=0, **MODES[workload])
    os.environ["LEANSIP_SECRET"] = "bench-secret-0123456789"  # as bench.py runs the server: no secret file
    users = UserStore(UserRecord(f"user{i}", password=f"pw{i}") for i in range(USERS))
    handler = load_routes(config.routes) if config.routes is not None else None
    tracker = CallTracker() if workload == "stateful-calls" else None
    return build_core(config, users, time.time(), handler, tracker)


def _register(user: str, n: int, cseq: int = 1, auth: str = "", at: tuple[str, int] = CALLER) -> bytes:
    return (f"REGISTER sip:{REALM}:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {at[0]}:{at[1]};branch=z9hG4bK-r{n}-{cseq}\r\n"
            f"From: <sip:{user}@{REALM}>;tag=t{n}\r\nTo: <sip:{user}@{REALM}>\r\nCall-ID: reg-{n}\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{at[0]}:{at[1]}>\r\nMax-Forwards: 70\r\n"
            f"Expires: 3600\r\n{auth}Content-Length: 0\r\n\r\n").encode()


def _digest_answer(challenge: Response, user: str, password: str) -> str:
    www = challenge.header("www-authenticate") or ""
    nonce = re.search(r'nonce="([^"]*)"', www)
    opaque = re.search(r'opaque="([^"]*)"', www)
    assert nonce is not None, www
    uri = f"sip:{REALM}:5060"
    ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    cnonce, nc = "0a4f113b", "00000001"
    response = hashlib.md5(f"{ha1}:{nonce[1]}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    extra = f', opaque="{opaque[1]}"' if opaque else ""
    return (f'Authorization: Digest username="{user}", realm="{REALM}", nonce="{nonce[1]}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"{extra}\r\n')


def _answer(req: Request, status: int, tag: str, body: bytes = b"") -> bytes:
    """The callee's answer to the request the proxy forwarded (like SIPp's [last_Via:] ... [last_Record-Route:])."""
    lines = [f"SIP/2.0 {status} {'OK' if status == 200 else 'Ringing'}"]
    lines += [f"Via: {v}" for v in req.header_values("via")]
    to = req.header("to") or ""
    lines += [f"From: {req.header('from')}", f"To: {to}" if ";tag=" in to else f"To: {to};tag={tag}",
              f"Call-ID: {req.header('call-id')}", f"CSeq: {req.header('cseq')}"]
    lines += [f"Record-Route: {v}" for v in req.header_values("record-route")]
    lines.append(f"Contact: <sip:{CALLEE[0]}:{CALLEE[1]};transport=UDP>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Flow:
    """Feeds one workload's messages to a core, counting only the nanoseconds spent inside ``receive()`` (and,
    with a call tracker, the CDR writer thread's time, as its CPU time)."""

    def __init__(self, core: ServerCore, timed: bool) -> None:
        self.core = core
        self.timed = timed
        self.ns = 0
        self.now = time.time()
        self.writer: CdrWriter | None = None
        if core.services.calls is not None:
            import tempfile

            self.writer = CdrWriter(Path(tempfile.mkdtemp(prefix="leansip-micro-")) / "cdr.db")

    def records(self, done: bool = False) -> None:
        """Hand the ended calls to the writer (what the server's tick does); ``done``: wait for the commits
        and count the writer thread's CPU time."""
        tracker = self.core.services.calls
        writer = self.writer
        if tracker is None or writer is None:
            return
        writer.submit(tracker.drain())
        if done:
            writer.close()
            self.ns += writer.thread_ns

    def send(self, data: bytes, source: tuple[str, int]) -> list[Request | Response]:
        receive = self.core.receive
        if self.timed:
            t0 = time.perf_counter_ns()
            out = receive(data, source, "udp", self.now, None)
            self.ns += time.perf_counter_ns() - t0
        else:
            out = receive(data, source, "udp", self.now, None)
        return [parse_message(s.data) for s in out]


def _one_of(out: list[Request | Response], kind: type, what: str) -> Request | Response:
    found = [m for m in out if isinstance(m, kind)]
    if not found:
        raise SystemExit(f"benchmark flow broke: expected {what}, got {[getattr(m, 'status', m) for m in out]}")
    return found[-1]


def run_register(flow: Flow, n: int, base: int) -> None:
    for i in range(n):
        k = base + i
        out = flow.send(_register(f"user{k % USERS}", k), CALLER)
        _one_of(out, Response, "200")


def run_register_auth(flow: Flow, n: int, base: int) -> None:
    for i in range(n):
        k = base + i
        user = f"user{k % USERS}"
        challenge = _one_of(flow.send(_register(user, k), CALLER), Response, "401")
        assert isinstance(challenge, Response) and challenge.status == 401, challenge
        auth = _digest_answer(challenge, user, f"pw{k % USERS}")
        ok = _one_of(flow.send(_register(user, k, 2, auth), CALLER), Response, "200")
        assert isinstance(ok, Response) and ok.status == 200, ok.status


def new_flow(workload: str, timed: bool) -> Flow:
    """A fresh core for ``workload``; for calls, with the callee registered (not counted)."""
    flow = Flow(make_core(workload), timed)
    if RUNNERS[workload] is run_call:
        flow.core.receive(_register("callee", -1, at=CALLEE), CALLEE, "udp", flow.now, None)
    return flow


def run_call(flow: Flow, n: int, base: int) -> None:
    """INVITE -> (100) 180 200 -> ACK -> BYE -> 200, as bench/sipp/uac-call.xml and uas-call.xml do it."""
    for i in range(n):
        k = base + i
        head = (f"From: <sip:caller@{CALLER[0]}:{CALLER[1]}>;tag=f{k}\r\n"
                f"Call-ID: call-{k}@bench\r\n")
        invite = (f"INVITE sip:callee@{PROXY[0]}:{PROXY[1]} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-i{k}\r\n{head}"
                  f"To: <sip:callee@{PROXY[0]}:{PROXY[1]}>\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:caller@{CALLER[0]}:{CALLER[1]}>\r\nMax-Forwards: 70\r\nSubject: bench\r\n"
                  f"Content-Type: application/sdp\r\nContent-Length: {len(_SDP)}\r\n\r\n").encode() + _SDP
        fwd = _one_of(flow.send(invite, CALLER), Request, "the forwarded INVITE")
        assert isinstance(fwd, Request)
        flow.send(_answer(fwd, 180, f"u{k}"), CALLEE)
        ok = _one_of(flow.send(_answer(fwd, 200, f"u{k}", _SDP), CALLEE), Response, "200 to the INVITE")
        routes = "".join(f"Route: {v}\r\n" for v in reversed(ok.header_values("record-route")))
        to = ok.header("to")
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            req = (f"{method} sip:{CALLEE[0]}:{CALLEE[1]};transport=UDP SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {CALLER[0]}:{CALLER[1]};branch=z9hG4bK-{method}{k}\r\n{routes}{head}"
                   f"To: {to}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{CALLER[0]}:{CALLER[1]}>\r\n"
                   "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
            out = flow.send(req, CALLER)
        bye = _one_of(out, Request, "the forwarded BYE")
        assert isinstance(bye, Request)
        _one_of(flow.send(_answer(bye, 200, f"u{k}"), CALLEE), Response, "200 to the BYE")
        if i % 50 == 49:
            flow.records()
    flow.records(done=True)


RUNNERS: dict[str, Callable[[Flow, int, int], None]] = {
    "register": run_register, "register-auth": run_register_auth, "stateless": run_call, "stateful": run_call,
    "stateful-script": run_call,
    "stateful-calls": run_call,
}


def measure(workload: str, n: int, rounds: int) -> float:
    """Best µs per operation over ``rounds`` runs of ``n`` operations, each on a fresh core."""
    best = float("inf")
    for r in range(rounds + 1):  # round 0 warms caches and is not counted
        flow = new_flow(workload, timed=True)
        gc.collect()
        gc.freeze()  # as the server does after start-up: the previous rounds' survivors are not this round's
        RUNNERS[workload](flow, n, r * n * 10)
        if r:
            best = min(best, flow.ns / n / 1000)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(RUNNERS))
    ap.add_argument("--loops", type=int, default=0, help="untimed, for callgrind (see the module docstring)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    workloads = [w for w in args.only.split(",") if w]
    tune_gc()  # the collector settings `leansip serve` runs with
    if args.loops:
        for w in workloads:
            RUNNERS[w](new_flow(w, timed=False), args.loops, 0)
        return
    from leansip import _build

    results = {w: round(measure(w, args.n, args.rounds), 2) for w in workloads}
    if args.json:
        print(json.dumps({"compiled": _build.compiled_modules(), "us_per_op": results}))
        return
    print(f"core modules: {_build.describe()}")
    for w, us in results.items():
        print(f"{w:14s} {us:8.1f} µs per {'registration' if w.startswith('register') else 'call'}")


if __name__ == "__main__":
    main()
