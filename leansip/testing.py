"""Test a route script without sockets: the real server core, an in-memory location, users, and a fake clock.

:class:`RouteTest` runs a script (a file or a :class:`~leansip.routes.Routes`) in a
:class:`~leansip.server.core.ServerCore` exactly as ``leansip serve`` would, but messages go in and out as
Python objects and time only moves when the test says so. A request is sent from a caller (from keyword
arguments or from SIP text); what the server does with it is collected on an :class:`Exchange`: the responses
the caller got, and the requests relayed onwards (:class:`Relayed`), which the test answers as the callees::

    from leansip.testing import RouteTest

    def test_busy_goes_to_voicemail():
        t = RouteTest("examples/routes/pbx.py", users={"alice": "secret", "bob": "secret"})
        t.register("bob", "sip:bob@192.0.2.20:5062")
        call = t.invite("bob", caller="alice")            # answers the 407 with alice's password
        assert call.relayed_to == ["sip:bob@192.0.2.20:5062"]
        call.respond(486)                                # bob is busy
        assert call.relayed_to[-1] == "sip:vm@127.0.0.1:5090"
        assert call.status is None                       # nothing final for alice yet

Nothing here opens a socket or reads the clock; ``advance(seconds)`` fires the server's timers (transaction
timeouts, a relay's per-branch ``timeout``) in order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leansip.routes import Routes, load_routes
from leansip.server.calls import STATE_ENDED, Call, CallTracker
from leansip.server.core import CoreSettings, ServerCore
from leansip.server.gateways import parse_gateways
from leansip.server.handler import Handler
from leansip.server.location import LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores import open_store
from leansip.server.users import UserRecord, UserStore
from leansip.sip.digest import build_authorization
from leansip.sip.digest_auth import DigestAuthenticator
from leansip.sip.message import Request, Response, parse_message
from leansip.sip.send import Send

__all__ = ["Exchange", "Relayed", "RouteTest"]

#: where the server under test "listens", and where callers and callees are by default (TEST-NET-1)
SERVER: tuple[str, int] = ("192.0.2.1", 5060)
CALLER: tuple[str, int] = ("192.0.2.10", 5062)
_SECRET = b"leansip.testing secret, fixed...."


@dataclass
class Relayed:
    """A request the server sent onwards: to ``dest``, with ``request`` as it went out, at time ``at``."""

    request: Request
    dest: tuple[str, int]
    at: float
    exchange: Exchange
    responses: list[int] = field(default_factory=list)
    cancelled: bool = False

    @property
    def uri(self) -> str:
        """Its Request-URI (the target the script chose)."""
        return self.request.uri

    def header(self, name: str) -> str | None:
        return self.request.header(name)

    def respond(self, status: int, reason: str | None = None, *, headers: Sequence[tuple[str, str]] = (),
                to_tag: str | None = None, body: bytes = b"") -> Exchange:
        """Answer this request as its callee would; what the server does next lands on the exchange."""
        self.responses.append(status)
        test = self.exchange.test
        tag = to_tag or f"callee{self.exchange.relayed.index(self) + 1}"
        test._feed(_response_to(self.request, status, reason, headers, tag, body), self.dest)
        return self.exchange


@dataclass
class Exchange:
    """One request sent by a caller and everything the server did about it."""

    test: RouteTest
    request: Request
    source: tuple[str, int]
    responses: list[Response] = field(default_factory=list)
    relayed: list[Relayed] = field(default_factory=list)
    #: the same request before it carried credentials, when the helper answered a challenge for the caller
    challenge: Exchange | None = None

    @property
    def statuses(self) -> list[int]:
        """Every status the caller got, in order (100 Trying included; a challenge answered by the helper
        first)."""
        own = [r.status for r in self.responses]
        return own if self.challenge is None else self.challenge.statuses + own

    @property
    def status(self) -> int | None:
        """The final status the caller got (the last one, if several 2xx), or None while nothing final."""
        finals = [r.status for r in self.responses if r.status >= 200]
        return finals[-1] if finals else None

    @property
    def response(self) -> Response | None:
        """The last final response the caller got."""
        finals = [r for r in self.responses if r.status >= 200]
        return finals[-1] if finals else None

    @property
    def challenged(self) -> bool:
        """Did the server answer with a digest challenge (401/407)?"""
        return self.status in (401, 407)

    @property
    def relayed_to(self) -> list[str]:
        """The Request-URIs the request was relayed to, in order (parallel and serial branches alike)."""
        return [r.uri for r in self.relayed if r.request.method == self.request.method]

    @property
    def pending(self) -> list[Relayed]:
        """Branches that have no final answer from their callee yet and were not cancelled."""
        return [r for r in self.relayed if r.request.method == self.request.method and not r.cancelled
                and not any(s >= 200 for s in r.responses)]

    @property
    def cancelled(self) -> list[str]:
        """The Request-URIs of the branches the server cancelled."""
        return [r.uri for r in self.relayed if r.cancelled]

    def respond(self, status: int, reason: str | None = None, *, headers: Sequence[tuple[str, str]] = (),
                to_tag: str | None = None, body: bytes = b"") -> Exchange:
        """The latest pending branch answers ``status`` (see :meth:`Relayed.respond` to pick one)."""
        pending = self.pending
        if not pending:
            raise AssertionError(f"{self.request.method} has no pending branch to respond on "
                                 f"(relayed to {self.relayed_to}, caller got {self.statuses})")
        return pending[-1].respond(status, reason, headers=headers, to_tag=to_tag, body=body)

    def cancel(self) -> Exchange:
        """The caller cancels (RFC 3261 9.1): a CANCEL with the INVITE's branch."""
        req = self.request
        lines = [f"CANCEL {req.uri} SIP/2.0", f"Via: {req.header_values('via')[0]}", f"From: {req.header('from')}",
                 f"To: {req.header('to')}", f"Call-ID: {req.header('call-id')}", f"CSeq: {req.cseq[0]} CANCEL",
                 "Max-Forwards: 70", "Content-Length: 0"]
        self.test.send_text("\r\n".join(lines) + "\r\n\r\n", source=self.source)
        return self


class RouteTest:
    """A server core around one route script, for tests.

    ``script``: a path to the script (loaded as ``leansip serve --routes`` does) or a Routes object.
    ``users``: name -> password for digest authentication. ``stateful``: the server's default relay.
    ``realm``: the domain of the server (its users are ``user@realm``). ``now``: the fake clock's start.
    ``gateways`` / ``gateway_routes``: gateway sets as the TOML config's ``[gateways.NAME]`` tables and
    ``[[gateway_routes]]`` entries (dicts), for ``ctx.relay(gateways=...)``. ``calls``: track calls as the
    server does; the ended ones (with a script's ``ctx.cdr`` fields) are then in :meth:`records`."""

    def __init__(self, script: str | Path | Handler, *, users: dict[str, str] | None = None,
                 stateful: bool = True, auth: bool = False, realm: str = "leansip", now: float = 1000.0,
                 record_route: bool = True, gateways: dict[str, object] | None = None,
                 gateway_routes: list[dict[str, object]] | None = None, calls: bool = False) -> None:
        handler: Handler = load_routes(script) if isinstance(script, (str, Path)) else script
        self.routes = handler
        self.passwords = dict(users or {})
        self.users = UserStore(UserRecord(name, password=pw) for name, pw in self.passwords.items())
        self.realm = realm
        self.now = now
        settings = CoreSettings(mode="proxy", stateful=stateful, auth=auth, realm=realm, record_route=record_route)
        self.core = ServerCore(settings, LocationService(open_store("memory"), key=contact_key),
                               ha1_lookup=self.users.ha1_lookup, user_exists=self.users.exists,
                               authenticator=DigestAuthenticator(_SECRET, realm, 300, ("MD5",)),
                               local_addresses=[("udp", *SERVER)], secret=_SECRET, handler=handler,
                               calls=CallTracker() if calls else None,
                               gateways=parse_gateways(gateways, gateway_routes) if gateways else None)
        self.core.users = self.users
        self._calls: dict[str, Exchange] = {}
        self._count = itertools.count(1)

    def records(self) -> list[Call]:
        """The calls that ended since the last look (``calls=True``), oldest first: what the server would write
        as call detail records (``status``, ``end_reason``, ``hangup``, the script's fields in ``extra``...)."""
        tracker = self.core.services.calls
        if tracker is None:
            raise ValueError("RouteTest(..., calls=True) tracks calls")
        tracker.expire(self.now)
        ended = {c.id: c for c in tracker.drain() if c.state == STATE_ENDED}  # an answered call comes twice
        return list(ended.values())

    @property
    def stats(self) -> dict[str, object]:
        """The server's counters (requests, responses, drops, ``script_errors``...)."""
        return self.core.stats.as_dict()

    # ------------------------------------------------------------------ sending
    def register(self, user: str, contact: str, *, expires: int = 3600) -> int:
        """Register ``contact`` for ``user`` through the server's registrar (authenticating with the user's
        password when asked); returns the final status."""
        source = _address_of(contact)
        ex = self.request("REGISTER", f"sip:{self.realm}", caller=user, to=user, source=source,
                          headers=[("Contact", f"<{contact}>"), ("Expires", str(expires))])
        return ex.status or 0

    def invite(self, callee: str, *, caller: str = "alice", **kw: object) -> Exchange:
        """An INVITE from ``caller`` to ``callee`` (a user name of this server, or a SIP URI), with an SDP
        body. Keyword arguments as :meth:`request`."""
        uri = callee if ":" in callee else f"sip:{callee}@{self.realm}"
        kw.setdefault("body", _SDP)
        kw.setdefault("headers", [("Content-Type", "application/sdp")])
        return self.request("INVITE", uri, caller=caller, **kw)  # type: ignore[arg-type]

    def request(self, method: str, uri: str, *, caller: str = "alice", to: str | None = None,
                source: tuple[str, int] = CALLER, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                password: str | None = None, authenticate: bool = True) -> Exchange:
        """Send a new request from ``caller`` (a user name) at ``source``. A 401/407 challenge is answered
        once with the caller's password (``users``, or ``password``) when ``authenticate`` is True, as a
        phone would; the exchange then holds both answers (``statuses``)."""
        n = next(self._count)
        to_uri = f"sip:{to}@{self.realm}" if to is not None else uri
        extra = list(headers)
        head = [f"{method} {uri} SIP/2.0", "Max-Forwards: 70", f"From: <sip:{caller}@{self.realm}>;tag=from{n}",
                f"To: <{to_uri}>", f"Call-ID: test-{n}@leansip.testing"]
        tail = [f"{k}: {v}" for k, v in extra]
        if not any(k.lower() in ("contact", "m") for k, _ in extra):
            tail.append(f"Contact: <sip:{caller}@{source[0]}:{source[1]}>")
        ex = self._send(head, f"CSeq: 1 {method}", tail, body, source, f"z9hG4bKt{n}")
        secret = password if password is not None else self.passwords.get(caller)
        response = ex.response
        if authenticate and secret is not None and response is not None and response.status in (401, 407):
            name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
            answer = build_authorization(response.header_lines(name)[0], method, uri, caller, secret, body)
            auth = "Authorization" if response.status == 401 else "Proxy-Authorization"
            again = self._send(head, f"CSeq: 2 {method}", [*tail, f"{auth}: {answer}"], body, source,
                               f"z9hG4bKt{n}a")
            again.challenge = ex
            return again
        return ex

    def send_text(self, text: str, *, source: tuple[str, int] = CALLER) -> Exchange:
        """Send a request written as SIP text (line ends may be plain LF; Content-Length is not needed)."""
        head, _, body = text.replace("\r\n", "\n").partition("\n\n")
        lines = [ln for ln in head.split("\n") if ln and not ln.lower().startswith(("content-length:", "l:"))]
        data = "\r\n".join(lines) + f"\r\nContent-Length: {len(body.encode())}\r\n\r\n" + body
        return self._feed_request(data.encode(), source)

    def _send(self, head: list[str], cseq: str, tail: list[str], body: bytes, source: tuple[str, int],
              branch: str) -> Exchange:
        via = f"Via: SIP/2.0/UDP {source[0]}:{source[1]};branch={branch};rport"
        lines = [head[0], via, *head[1:], cseq, *tail, f"Content-Length: {len(body)}"]
        return self._feed_request(("\r\n".join(lines) + "\r\n\r\n").encode() + body, source)

    def _feed_request(self, data: bytes, source: tuple[str, int]) -> Exchange:
        """Give the server a request (bytes) from ``source``; returns what happened to it."""
        msg = parse_message(data)
        if not isinstance(msg, Request):
            raise ValueError("not a request")
        call_id = msg.header("call-id") or ""
        ex = Exchange(self, msg, source)
        if msg.method not in ("ACK", "CANCEL"):
            self._calls[call_id] = ex
        self._route(self.core.receive(data, source, "udp", self.now), origin=ex)
        return ex

    def _feed(self, data: bytes, source: tuple[str, int]) -> None:
        """Give the server a message from ``source`` (a callee's response, say) and route what comes out."""
        self._route(self.core.receive(data, source, "udp", self.now))

    # ------------------------------------------------------------------ time
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: every timer due on the way fires at its own time, in order."""
        end = self.now + seconds
        while True:
            at = self.core.next_deadline()
            if at is None or at > end:
                break
            self.now = max(self.now, at)
            self._route(self.core.handle_timers(self.now))
        self.now = end

    # ------------------------------------------------------------------ outputs
    def _route(self, out: list[Send], origin: Exchange | None = None) -> None:
        for send in out:
            msg = parse_message(send.data)
            call_id = msg.header("call-id") or ""
            ex = self._calls.get(call_id, origin)
            if ex is None:
                continue
            if isinstance(msg, Response):
                if send.dest == ex.source:
                    ex.responses.append(msg)
                continue
            if msg.method == "CANCEL":
                for r in ex.relayed:
                    if r.dest == send.dest and r.request.branch == msg.branch:
                        r.cancelled = True
                continue
            if msg.method == "ACK":
                continue
            ex.relayed.append(Relayed(msg, send.dest, self.now, ex))


_SDP = (b"v=0\r\no=test 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _address_of(contact: str) -> tuple[str, int]:
    """The host:port of a SIP URI, as the source its REGISTER comes from."""
    rest = contact.split(":", 1)[1].split(";", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    host, _, port = hostport.partition(":")
    return host, int(port or 5060)


def _response_to(req: Request, status: int, reason: str | None, headers: Sequence[tuple[str, str]], to_tag: str,
                 body: bytes) -> bytes:
    lines = [f"SIP/2.0 {status} {reason or _REASONS.get(status, 'Response')}"]
    lines += [f"Via: {v}" for v in req.header_values("via")]
    to = req.header("to") or ""
    if status > 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {req.header('from')}", f"To: {to}", f"Call-ID: {req.header('call-id')}",
              f"CSeq: {req.header('cseq')}"]
    if 200 <= status < 300 and req.method == "INVITE":
        lines.append(f"Contact: <{req.uri}>")
        lines += [f"Record-Route: {v}" for v in req.header_values("record-route")]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 404: "Not Found",
            408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here", 487: "Request Terminated",
            500: "Server Internal Error", 503: "Service Unavailable", 603: "Decline"}

# re-exported for scripts' tests that build their own Routes
__all__ += ["Routes"]
