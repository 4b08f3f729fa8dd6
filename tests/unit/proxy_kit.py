"""Small sans-I/O kit for the proxy, redirect and auth unit tests: a ServerCore on a fake address, message
builders for the UAs around it, and parsed views of what the core sends.

No sockets and no clock: every call takes ``now`` as a float. The proxy "listens" on 10.0.0.1:5060, the
caller (alice) sends from 192.0.2.10:5062, the callees are at 192.0.2.2x.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from leansip.server.core import CoreSettings, ServerCore
from leansip.server.handler import Handler
from leansip.server.location import LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores import open_store
from leansip.server.users import UserRecord, UserStore
from leansip.sip.digest import DigestAuthenticator
from leansip.sip.message import Request, Response, parse_message
from leansip.sip.ratelimit import FailureLimiter
from leansip.sip.send import Send

PROXY = ("10.0.0.1", 5060)
ALICE = ("192.0.2.10", 5062)
BOB1 = ("192.0.2.21", 5062)
BOB2 = ("192.0.2.22", 5062)
SECRET = b"0123456789abcdef0123456789abcdef"

_counter = itertools.count(1)


def make_core(*, mode: str = "proxy", stateful: bool = True, auth: bool = False,
              algorithms: tuple[str, ...] = ("SHA-256", "MD5"), max_transactions: int = 1000,
              max_transaction_bytes: int = 256 << 20,
              limiter: FailureLimiter | None = None, users: dict[str, str] | None = None,
              handler: Handler | None = None) -> ServerCore:
    """A core wired like ``leansip.app.serve.build_core`` but with a memory store and a fixed secret."""
    store = UserStore(UserRecord(name, password=pw) for name, pw in
                      (users or {"alice": "alice", "bob": "bob", "carol": "carol"}).items())

    def ha1_lookup(username: str, realm: str, algorithm: str) -> str | None:
        record = store.get(username)
        return None if record is None else record.ha1(algorithm, realm)

    settings = CoreSettings(mode=mode, stateful=stateful, auth=auth, realm="leansip",
                            max_transactions=max_transactions, max_transaction_bytes=max_transaction_bytes)
    authenticator = DigestAuthenticator(SECRET, "leansip", 300, algorithms) if auth else None
    return ServerCore(settings, LocationService(open_store("memory"), key=contact_key),
                      ha1_lookup=ha1_lookup, user_exists=lambda name: store.get(name) is not None,
                      authenticator=authenticator, limiter=limiter if limiter is not None else FailureLimiter(),
                      local_addresses=[("udp", *PROXY)], secret=SECRET, handler=handler)


def new_branch() -> str:
    return f"z9hG4bKt{next(_counter)}x"


def request(method: str, ruri: str, *, src: tuple[str, int] = ALICE, branch: str | None = None,
            call_id: str | None = None, cseq: int = 1, cseq_method: str | None = None,
            from_user: str = "alice", to_user: str = "bob", from_tag: str = "ftag1", to_tag: str | None = None,
            max_forwards: int | None = 70, contact: str | None = None, extra: list[tuple[str, str]] = (),
            vias: list[str] = (), body: bytes = b"") -> bytes:
    """A request as a UA at ``src`` would send it (RFC 3261 8.1.1), with ``rport`` in its Via."""
    branch = branch or new_branch()
    call_id = call_id or f"call-{next(_counter)}@test"
    to = f"<sip:{to_user}@leansip>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch={branch};rport",
             *(f"Via: {v}" for v in vias)]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"From: <sip:{from_user}@leansip>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
              f"CSeq: {cseq} {cseq_method or method}"]
    if contact is not None:
        lines.append(f"Contact: <{contact}>")
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def register(user: str, contact_addr: tuple[str, int], *, src: tuple[str, int] | None = None, q: float | None = None,
             call_id: str | None = None, cseq: int = 1, extra: list[tuple[str, str]] = ()) -> bytes:
    src = src or contact_addr
    contact = f"sip:{user}@{contact_addr[0]}:{contact_addr[1]}"
    data = request("REGISTER", "sip:leansip", src=src, from_user=user, to_user=user, call_id=call_id,
                   cseq=cseq, contact=contact, extra=[("Expires", "3600"), *extra])
    if q is not None:
        data = data.replace(f"Contact: <{contact}>".encode(), f"Contact: <{contact}>;q={q}".encode())
    return data


def response_to(req: Request, status: int, *, to_tag: str | None = "callee1", extra: list[tuple[str, str]] = (),
                ) -> bytes:
    """The callee's response to a request it received (Vias copied, To tag added for > 100)."""
    lines = [f"SIP/2.0 {status} X"]
    lines += [f"Via: {v}" for v in req.header_values("via")]
    to = req.header("to") or ""
    if status > 100 and to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {req.header('from')}", f"To: {to}", f"Call-ID: {req.header('call-id')}",
              f"CSeq: {req.header('cseq')}"]
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Out:
    """One parsed output of the core."""

    send: Send
    msg: Request | Response

    @property
    def dest(self) -> tuple[str, int]:
        return self.send.dest

    @property
    def is_request(self) -> bool:
        return isinstance(self.msg, Request)

    @property
    def status(self) -> int:
        assert isinstance(self.msg, Response), self.msg
        return self.msg.status

    @property
    def method(self) -> str:
        assert isinstance(self.msg, Request), self.msg
        return self.msg.method


def as_request(data: bytes) -> Request:
    """``data`` parsed, checked to be a request."""
    msg = parse_message(data)
    assert isinstance(msg, Request), msg
    return msg


def as_response(data: bytes) -> Response:
    """``data`` parsed, checked to be a response."""
    msg = parse_message(data)
    assert isinstance(msg, Response), msg
    return msg


def parse_out(sends: list[Send]) -> list[Out]:
    return [Out(s, parse_message(s.data)) for s in sends]


def feed(core: ServerCore, data: bytes, src: tuple[str, int], now: float) -> list[Out]:
    return parse_out(core.receive(data, src, "udp", now))


def responses(outs: list[Out]) -> list[int]:
    return [o.status for o in outs if not o.is_request]


def requests(outs: list[Out], method: str | None = None) -> list[Out]:
    return [o for o in outs if o.is_request and (method is None or o.method == method)]


def only(outs: list[Out]) -> Out:
    assert len(outs) == 1, outs
    return outs[0]


def forwarded(outs: list[Out], dest: tuple[str, int], method: str = "INVITE") -> Request:
    """The one request of ``method`` the core sent to ``dest``."""
    hits = [o for o in requests(outs, method) if o.dest == dest]
    assert len(hits) == 1, outs
    msg = hits[0].msg
    assert isinstance(msg, Request)
    return msg


def upstream(outs: list[Out]) -> list[int]:
    """Statuses sent back to the caller (alice)."""
    return [o.status for o in outs if not o.is_request and o.dest == ALICE]


def registered(core: ServerCore, user: str, addr: tuple[str, int], now: float = 0.0, q: float | None = None) -> None:
    """Register ``user`` at ``addr`` (through the registrar, without auth) and check the 200."""
    out = feed(core, register(user, addr, q=q), addr, now)
    assert responses(out) == [200], out
