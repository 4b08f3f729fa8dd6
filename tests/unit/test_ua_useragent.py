"""UserAgent core: two (or more) sans-I/O elements on an in-memory link with a fake clock.

The :class:`Net` helper plays the network: it delivers every Send to the element bound at its destination
(like h11's ConnectionPair / aioquic's roundtrip), optionally dropping datagrams, and collects events per UA.
A tiny registrar (real DigestAuthenticator) and a tiny record-routing proxy stand in for the server.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest.mock import ANY

import pytest

from leansip.sip.digest import DigestAuthenticator, UserCredentials, users_lookup
from leansip.sip.message import Request, Response, make_response, parse_message
from leansip.sip.send import Send
from leansip.sip.uri import parse_via
from leansip.ua.useragent import (
    CALL_TRANSITIONS,
    CallEnded,
    CallEstablished,
    CallState,
    CallUpdated,
    IncomingCall,
    OfferReceived,
    OptionsResult,
    Registered,
    RegistrationFailed,
    Ringing,
    UaConfig,
    UaError,
    Unregistered,
    UserAgent,
)

ALICE = ("127.0.0.1", 40001)
BOB = ("127.0.0.1", 40002)
SERVER = ("127.0.0.1", 40000)
OFFER = b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
ANSWER = b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 0\r\n"

Node = Callable[[bytes, tuple[str, int], float], list]


class Net:
    """Addresses -> elements; delivers until quiet. ``drop(data) -> bool`` loses matching datagrams."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, int], Node] = {}
        self.events: dict[tuple[str, int], list] = {}
        self.wire: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        self.drop: Callable[[bytes], bool] = lambda data: False
        self.uas: dict[tuple[str, int], UserAgent] = {}

    def add_ua(self, ua: UserAgent) -> UserAgent:
        addr = ua.config.local
        self.uas[addr] = ua
        self.nodes[addr] = ua.receive
        self.events[addr] = []
        return ua

    def run(self, origin: tuple[str, int], outputs: list, now: float) -> None:
        queue = [(origin, o) for o in outputs]
        while queue:
            src, item = queue.pop(0)
            if not isinstance(item, Send):
                self.events.setdefault(src, []).append(item)
                continue
            self.wire.append((src, item.dest, item.data))
            if self.drop(item.data):
                continue
            node = self.nodes.get(item.dest)
            if node is None:
                continue
            queue += [(item.dest, o) for o in node(item.data, src, now)]

    def tick(self, now: float) -> None:
        for addr, ua in self.uas.items():
            self.run(addr, ua.handle_timers(now), now)

    def advance(self, start: float, end: float, step: float = 0.25) -> float:
        t = start
        while t < end:
            t = min(end, t + step)
            self.tick(t)
        return t

    def take(self, addr: tuple[str, int]) -> list:
        out = self.events[addr]
        self.events[addr] = []
        return out


class Registrar:
    """Digest-protected registrar: 401 without valid credentials, 200 with the granted expiry."""

    def __init__(self, net: Net, *, grant: int | None = None, password: str = "secret") -> None:
        self.auth = DigestAuthenticator(b"0123456789abcdef0123", "test", algorithms=("SHA-256", "MD5"))
        self.lookup = users_lookup({"alice": UserCredentials.from_password("alice", password)})
        self.grant = grant
        self.requests: list[Request] = []
        self.net = net
        net.nodes[SERVER] = self.receive

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> list:
        req = parse_message(data)
        assert isinstance(req, Request) and req.method == "REGISTER"
        self.requests.append(req)
        for value in req.header_lines("authorization"):
            result = self.auth.verify(value, req.method, self.lookup, now, request_uri=req.uri)
            if result.ok:
                asked = int(req.header("expires") or "3600")
                granted = asked if self.grant is None or asked == 0 else self.grant
                resp = make_response(req, 200, to_tag="reg", headers=[
                    ("Contact", f"<{req.contacts[0].uri_text}>;expires={granted}")] if granted else [])
                return [Send(resp.to_bytes(), source)]
        challenges = [("WWW-Authenticate", v) for v in self.auth.challenge(now)]
        return [Send(make_response(req, 401, to_tag="reg", headers=challenges).to_bytes(), source)]


def make_ua(addr: tuple[str, int], user: str, *, server: bool = False, password: str = "secret") -> UserAgent:
    return UserAgent(UaConfig(user=user, local=addr, password=password, server=SERVER if server else None))


# --------------------------------------------------------------------------- registration


def test_register_401_then_200_and_refresh_at_half_expiry() -> None:
    net = Net()
    reg = Registrar(net, grant=60)
    alice = net.add_ua(make_ua(ALICE, "alice", server=True))
    net.run(ALICE, alice.register(3600, now=0.0), 0.0)
    assert net.take(ALICE) == [Registered(expires=60)]
    assert [r.header_lines("authorization") != [] for r in reg.requests] == [False, True]
    assert alice.registered
    net.advance(0.0, 6.0)  # Timer K (T4) ends the REGISTER transaction
    assert alice.next_deadline() == pytest.approx(30.0)
    net.advance(6.0, 29.5)
    assert len(reg.requests) == 2  # nothing before half the granted time
    net.advance(29.5, 30.5)
    assert net.take(ALICE) == [Registered(expires=60)]
    # the refresh reuses the challenge with the next nonce count: no second 401 round trip
    assert len(reg.requests) == 3
    assert "nc=00000002" in reg.requests[2].header_lines("authorization")[0]
    assert reg.requests[2].call_id == reg.requests[0].call_id
    assert reg.requests[2].cseq[0] > reg.requests[1].cseq[0]


def test_register_wrong_password_retries_once() -> None:
    net = Net()
    reg = Registrar(net, password="right")
    alice = net.add_ua(make_ua(ALICE, "alice", server=True, password="wrong"))
    net.run(ALICE, alice.register(300, now=0.0), 0.0)
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed) and events[0].status == 401
    assert len(reg.requests) == 2
    net.advance(0.0, 6.0)
    assert not alice.registered and alice.next_deadline() is None


def test_register_stale_nonce_is_retried() -> None:
    net = Net()
    reg = Registrar(net)
    alice = net.add_ua(make_ua(ALICE, "alice", server=True))
    net.run(ALICE, alice.register(3600, now=0.0), 0.0)
    assert net.take(ALICE) == [Registered(expires=3600)]
    # 1000 s later the cached nonce (ttl 300) is stale; the server says so and the UA retries at once
    later = 1000.0
    orig = reg.receive

    def stale_first(data: bytes, source: tuple[str, int], now: float) -> list:
        req = parse_message(data)
        assert isinstance(req, Request)
        if len(reg.requests) == 2:
            reg.requests.append(req)
            values = [("WWW-Authenticate", v) for v in reg.auth.challenge(now, stale=True)]
            return [Send(make_response(req, 401, to_tag="r", headers=values).to_bytes(), source)]
        return orig(data, source, now)

    net.nodes[SERVER] = stale_first
    net.run(ALICE, alice.register(3600, now=later), later)
    assert net.take(ALICE) == [Registered(expires=3600)]
    assert len(reg.requests) == 4


def test_unregister_sends_expires_zero() -> None:
    net = Net()
    reg = Registrar(net)
    alice = net.add_ua(make_ua(ALICE, "alice", server=True))
    net.run(ALICE, alice.register(600, now=0.0), 0.0)
    net.take(ALICE)
    net.run(ALICE, alice.unregister(now=1.0), 1.0)
    assert net.take(ALICE) == [Unregistered()]
    assert reg.requests[-1].header("expires") == "0"
    net.advance(1.0, 7.0)
    assert alice.next_deadline() is None


def test_register_timeout_reports_408() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice", server=True))  # nothing at SERVER
    net.run(ALICE, alice.register(600, now=0.0), 0.0)
    net.advance(0.0, 40.0, step=0.5)
    sent = [d for s, dst, d in net.wire if dst == SERVER]
    assert len(sent) > 5  # Timer E retransmissions
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], RegistrationFailed) and events[0].status == 408


def test_register_needs_server() -> None:
    ua = make_ua(ALICE, "alice")
    with pytest.raises(UaError):
        ua.register(60, now=0.0)


# --------------------------------------------------------------------------- calls


def setup_call(net: Net, alice: UserAgent, bob: UserAgent, target: str | None = None) -> None:
    target = target or f"sip:bob@{BOB[0]}:{BOB[1]}"
    net.run(ALICE, alice.invite(target, OFFER, now=0.0), 0.0)
    incoming = net.take(BOB)
    assert len(incoming) == 1 and isinstance(incoming[0], IncomingCall)
    assert incoming[0].remote_sdp == OFFER
    assert net.take(ALICE) == [Ringing(call_id=ANY, status=180)]
    net.run(BOB, bob.answer(ANSWER, now=0.1), 0.1)
    assert net.take(ALICE) == [CallEstablished(call_id=ANY, remote_sdp=ANSWER)]
    assert net.take(BOB) == [CallEstablished(call_id=ANY, remote_sdp=OFFER)]


def test_direct_call_alice_hangs_up() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    assert alice.call and alice.call.state is CallState.CONFIRMED
    assert bob.call and bob.call.state is CallState.CONFIRMED
    # the ACK is end-to-end with its own branch and the INVITE's CSeq number (13.2.2.4)
    invite = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"INVITE"))
    ack = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"ACK"))
    assert ack.cseq == (invite.cseq[0], "ACK") and ack.branch != invite.branch
    assert isinstance(ack, Request) and ack.uri == f"sip:bob@{BOB[0]}:{BOB[1]}"
    net.run(ALICE, alice.bye(now=5.0), 5.0)
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="local hangup", status=200)]
    assert net.take(BOB) == [CallEnded(call_id=ANY, reason="remote hangup", status=None)]
    # no more 2xx retransmissions once the ACK arrived
    before = len(net.wire)
    net.advance(5.0, 10.0)
    assert not any(d.startswith(b"SIP/2.0 200") for _, _, d in net.wire[before:])


def test_direct_call_bob_hangs_up() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    net.run(BOB, bob.bye(now=3.0), 3.0)
    assert net.take(BOB) == [CallEnded(call_id=ANY, reason="local hangup", status=200)]
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="remote hangup", status=None)]
    bye = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"BYE"))
    # the UAS's BYE swaps From/To and goes to alice's Contact (12.2.1.1)
    assert bye.from_tag == bob.call.local_tag and bye.to_tag == alice.call.local_tag  # type: ignore[union-attr]
    assert isinstance(bye, Request) and bye.uri == f"sip:alice@{ALICE[0]}:{ALICE[1]}"


def test_lost_ack_makes_bob_retransmit_2xx_and_alice_reacks() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    net.take(ALICE), net.take(BOB)
    acks = [0]

    def drop_first_ack(data: bytes) -> bool:
        if data.startswith(b"ACK"):
            acks[0] += 1
            return acks[0] == 1
        return False

    net.drop = drop_first_ack
    net.run(BOB, bob.answer(ANSWER, now=0.0), 0.0)
    assert net.take(ALICE) == [CallEstablished(call_id=ANY, remote_sdp=ANSWER)]
    assert net.take(BOB) == []
    net.advance(0.0, 0.6)  # T1: bob re-sends the 2xx, alice ACKs again
    assert net.take(BOB) == [CallEstablished(call_id=ANY, remote_sdp=OFFER)]
    assert acks[0] == 2
    assert net.take(ALICE) == []


def test_no_ack_at_all_ends_call_with_bye() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    net.take(ALICE), net.take(BOB)
    net.drop = lambda data: data.startswith(b"ACK")
    net.run(BOB, bob.answer(ANSWER, now=0.0), 0.0)
    net.advance(0.0, 33.0, step=0.5)
    ended = [e for e in net.take(BOB) if isinstance(e, CallEnded)]
    assert ended and ended[0].reason == "no ACK"
    oks = [d for s, _, d in net.wire if s == BOB and d.startswith(b"SIP/2.0 200") and b"INVITE" in d]
    assert 6 <= len(oks) <= 15  # T1 doubling up to T2 over 64*T1


def test_cancel_gets_487() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    net.take(ALICE), net.take(BOB)
    net.run(ALICE, alice.cancel(now=1.0), 1.0)
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="cancelled", status=487)]
    assert net.take(BOB) == [CallEnded(call_id=ANY, reason="cancelled", status=487)]
    cancel = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"CANCEL"))
    invite = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"INVITE"))
    assert cancel.branch == invite.branch and cancel.cseq == (invite.cseq[0], "CANCEL")
    # the non-2xx ACK comes from the transaction, with the INVITE's branch (17.1.1.3)
    ack = next(parse_message(d) for s, _, d in net.wire if d.startswith(b"ACK"))
    assert ack.branch == invite.branch
    assert not bob.in_call and not alice.in_call


def test_cancel_waits_for_a_provisional() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    # bob's address is silent: no provisional arrives, so no CANCEL may be sent (9.1)
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    net.run(ALICE, alice.cancel(now=0.1), 0.1)
    assert not any(d.startswith(b"CANCEL") for _, _, d in net.wire)
    net.advance(0.1, 40.0, step=0.5)
    events = net.take(ALICE)
    assert events and isinstance(events[-1], CallEnded) and events[-1].reason in ("cancelled", "timeout")


def test_busy_when_in_a_call() -> None:
    net = Net()
    carol_addr = ("127.0.0.1", 40003)
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    carol = net.add_ua(make_ua(carol_addr, "carol"))
    setup_call(net, alice, bob)
    net.run(carol_addr, carol.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=1.0), 1.0)
    assert net.take(carol_addr) == [CallEnded(call_id=ANY, reason="rejected", status=486)]
    assert net.take(BOB) == []
    assert bob.call is not None and bob.call.state is CallState.CONFIRMED


def test_reject_and_timeout() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    net.run(BOB, bob.reject(603, now=0.5), 0.5)
    assert net.take(ALICE)[-1] == CallEnded(call_id=ANY, reason="rejected", status=603)
    # a second call into the void times out after Timer B (64*T1)
    net.nodes.pop(BOB)
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=1.0), 1.0)
    net.advance(1.0, 31.0, step=0.5)
    assert not any(isinstance(e, CallEnded) for e in net.take(ALICE))
    net.advance(31.0, 34.0, step=0.5)
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="timeout", status=408)]


def test_reinvite_hold_and_resume() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    hold = OFFER + b"a=sendonly\r\n"
    net.run(ALICE, alice.reinvite(hold, now=2.0), 2.0)
    assert net.take(BOB) == [OfferReceived(call_id=ANY, remote_sdp=hold)]
    with pytest.raises(UaError):
        alice.reinvite(OFFER, now=2.0)  # one offer at a time (14.1)
    held = ANSWER + b"a=recvonly\r\n"
    net.run(BOB, bob.answer(held, now=2.1), 2.1)
    assert net.take(ALICE) == [CallUpdated(call_id=ANY, remote_sdp=held)]
    assert net.take(BOB) == [CallUpdated(call_id=ANY, remote_sdp=hold)]
    net.run(ALICE, alice.reinvite(OFFER, now=3.0), 3.0)
    net.run(BOB, bob.answer(ANSWER, now=3.0), 3.0)
    assert net.take(ALICE) == [CallUpdated(call_id=ANY, remote_sdp=ANSWER)]
    reinvites = [parse_message(d) for _, _, d in net.wire if d.startswith(b"INVITE")]
    assert [r.cseq[0] for r in reinvites] == [1, 2, 3]
    assert all(r.to_tag for r in reinvites[1:])
    net.run(BOB, bob.bye(now=4.0), 4.0)
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="remote hangup", status=None)]


def test_reinvite_refused_keeps_call() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    net.run(ALICE, alice.reinvite(OFFER, now=1.0), 1.0)
    net.take(BOB)
    net.run(BOB, bob.reject(488, now=1.0), 1.0)
    events = net.take(ALICE)
    assert [type(e).__name__ for e in events] == ["CallUpdateFailed"] and events[0].status == 488
    assert alice.call is not None and alice.call.state is CallState.CONFIRMED


def test_options_answered_and_unknown_bye_481() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    net.add_ua(make_ua(BOB, "bob"))
    net.run(ALICE, alice.options(f"sip:bob@{BOB[0]}:{BOB[1]}", now=0.0), 0.0)
    events = net.take(ALICE)
    assert len(events) == 1 and isinstance(events[0], OptionsResult) and events[0].status == 200
    assert "INVITE" in (events[0].allow or "")
    bye = (f"BYE sip:bob@{BOB[0]}:{BOB[1]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40001;branch=z9hG4bKx\r\n"
           "From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: nope\r\nCSeq: 5 BYE\r\n"
           "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    out = net.uas[BOB].receive(bye, ALICE, 0.0)
    assert len(out) == 1 and out[0].data.startswith(b"SIP/2.0 481")


def test_garbage_request_gets_400_and_garbage_response_dropped() -> None:
    bob = make_ua(BOB, "bob")
    bad = (b"INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;rport;branch=z9hG4bKq\r\n"
           b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: x INVITE\r\n\r\n")
    out = bob.receive(bad, ("127.0.0.1", 9), 0.0)
    assert len(out) == 1 and out[0].data.startswith(b"SIP/2.0 400") and out[0].dest == ("127.0.0.1", 9)
    assert bob.receive(b"SIP/2.0 200 OK\r\n\r\n", ("127.0.0.1", 9), 0.0) == []
    assert bob.receive(b"\r\n\r\n", ("127.0.0.1", 9), 0.0) == []


def test_illegal_commands_raise() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    for command in (lambda: alice.bye(now=0.0), lambda: alice.answer(OFFER, now=0.0),
                    lambda: alice.cancel(now=0.0), lambda: alice.reinvite(OFFER, now=0.0),
                    lambda: alice.refer("sip:carol@127.0.0.1", now=0.0),
                    lambda: alice.info(b"Signal=1\r\n", "application/dtmf-relay", now=0.0),
                    lambda: alice.decline_transfer(now=0.0)):
        with pytest.raises(UaError):
            command()
    setup_call(net, alice, bob)
    for command in (lambda: alice.answer(OFFER, now=1.0), lambda: alice.refer("tel:+123", now=1.0),
                    lambda: alice.refer("sip:carol@127.0.0.1", now=1.0, replaces_call="nope"),
                    lambda: alice.invite("sip:x@127.0.0.1", OFFER, now=1.0, transfer_of=alice.call.call_id),
                    lambda: alice.bye(now=1.0, call_id="no-such-call")):
        with pytest.raises(UaError):
            command()
    assert (CallState.ENDED, "bye") not in CALL_TRANSITIONS


# --------------------------------------------------------------------------- through a proxy


class RecordRouteProxy:
    """A minimal stateless proxy at P: Via push/pop, Record-Route on the initial INVITE, loose routing."""

    def __init__(self, net: Net, addr: tuple[str, int], users: dict[str, tuple[str, int]]) -> None:
        self.addr = addr
        self.users = users
        self.seen: list[bytes] = []
        net.nodes[addr] = self.receive

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> list:
        self.seen.append(data)
        msg = parse_message(data)
        me = f"sip:{self.addr[0]}:{self.addr[1]};lr"
        if isinstance(msg, Response):
            msg.pop_first_value("via")
            via = msg.top_via
            return [Send(msg.to_bytes(), (via.host, via.port or 5060))]
        assert isinstance(msg, Request)
        route = msg.header_values("route")
        if route and me in route[0]:
            msg.pop_first_value("route")
        if msg.method == "INVITE" and msg.to_tag is None:
            msg.add_header("record-route", f"<{me}>", first=True)
        via = f"SIP/2.0/UDP {self.addr[0]}:{self.addr[1]};branch=z9hG4bKp{abs(hash(data)) % 10**9}"
        msg.add_header("via", via, first=True)
        ruri = msg.ruri
        user = getattr(ruri, "user", None)
        dest = self.users.get(user or "", (ruri.host, ruri.port or 5060))  # type: ignore[union-attr]
        return [Send(msg.to_bytes(), dest)]


def test_route_set_from_record_route() -> None:
    net = Net()
    alice = net.add_ua(UserAgent(UaConfig(user="alice", local=ALICE, server=SERVER)))
    bob = net.add_ua(UserAgent(UaConfig(user="bob", local=BOB, server=SERVER)))
    proxy = RecordRouteProxy(net, SERVER, {"bob": BOB, "alice": ALICE})
    setup_call(net, alice, bob, target=f"sip:bob@{SERVER[0]}:{SERVER[1]}")
    assert alice.call and alice.call.dialog and bob.call and bob.call.dialog
    rr = f"<sip:{SERVER[0]}:{SERVER[1]};lr>"
    assert alice.call.dialog.route_set == [rr]
    assert bob.call.dialog.route_set == [rr]
    # ACK and BYE from alice go through the proxy with a Route header, to bob's Contact
    net.run(ALICE, alice.bye(now=2.0), 2.0)
    assert net.take(BOB) == [CallEnded(call_id=ANY, reason="remote hangup", status=None)]
    assert net.take(ALICE) == [CallEnded(call_id=ANY, reason="local hangup", status=200)]
    bye_sent = next(d for s, dst, d in net.wire if s == ALICE and d.startswith(b"BYE"))
    bye = parse_message(bye_sent)
    assert isinstance(bye, Request) and bye.header_values("route") == [rr]
    assert bye.uri == f"sip:bob@{BOB[0]}:{BOB[1]}"
    assert any(dst == SERVER for s, dst, d in net.wire if d is bye_sent)
    assert sum(d.startswith(b"ACK") for d in proxy.seen) == 1


def test_route_set_reversed_for_uac() -> None:
    from leansip.ua.dialog import dialog_as_uac, dialog_as_uas

    invite = parse_message(
        b"INVITE sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/UDP a.example;branch=z9hG4bK1\r\n"
        b"Record-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\r\n"
        b"From: <sip:alice@a.example>;tag=at\r\nTo: <sip:bob@b.example>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        b"Contact: <sip:alice@10.0.0.1:5062>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(invite, Request)
    uas = dialog_as_uas(invite, "bt")
    assert uas.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert uas.remote_target == "sip:alice@10.0.0.1:5062"
    assert uas.next_hop() == ("p2.example", 5060)
    ok = make_response(invite, 200, to_tag="bt", headers=[
        ("Record-Route", "<sip:p2.example;lr>, <sip:p1.example;lr>"), ("Contact", "<sip:bob@10.0.0.2:5070>")])
    uac = dialog_as_uac(invite, ok)
    assert uac.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert uac.next_hop() == ("p1.example", 5060)
    bye = uac.request("BYE", "SIP/2.0/UDP a.example;branch=z9hG4bK2")
    assert bye.uri == "sip:bob@10.0.0.2:5070" and bye.cseq == (2, "BYE")
    assert parse_via(bye.header("via") or "").branch == "z9hG4bK2"
    # a strict router: its URI becomes the Request-URI, the remote target the last Route (12.2.1.1)
    uac.route_set = ["<sip:strict.example>"]
    strict = uac.request("BYE", "SIP/2.0/UDP a.example;branch=z9hG4bK3")
    assert strict.uri == "sip:strict.example"
    assert strict.header_values("route") == ["<sip:bob@10.0.0.2:5070>"]


def test_invite_with_proxy_auth_407() -> None:
    net = Net()
    auth = DigestAuthenticator(b"0123456789abcdef0123", "test", algorithms=("MD5",))
    lookup = users_lookup({"alice": UserCredentials.from_password("alice", "secret")})
    net.add_ua(make_ua(BOB, "bob"))
    alice = net.add_ua(make_ua(ALICE, "alice", server=True))
    seen: list[Request] = []

    def auth_proxy(data: bytes, source: tuple[str, int], now: float) -> list:
        msg = parse_message(data)
        if isinstance(msg, Response):
            msg.pop_first_value("via")
            return [Send(msg.to_bytes(), ALICE)]
        assert isinstance(msg, Request)
        seen.append(msg)
        if msg.method == "INVITE":
            ok = any(auth.verify(v, "INVITE", lookup, now, request_uri=msg.uri).ok
                     for v in msg.header_lines("proxy-authorization"))
            if not ok:
                values = [("Proxy-Authenticate", v) for v in auth.challenge(now)]
                return [Send(make_response(msg, 407, to_tag="p", headers=values).to_bytes(), source)]
        if msg.method == "ACK" and msg.to_tag == "p":
            return []
        msg.add_header("via", "SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKpp" + str(len(seen)), first=True)
        return [Send(msg.to_bytes(), BOB)]

    net.nodes[SERVER] = auth_proxy
    net.run(ALICE, alice.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=0.0), 0.0)
    assert [type(e) for e in net.take(BOB)] == [IncomingCall]
    invites = [r for r in seen if r.method == "INVITE"]
    assert len(invites) == 2 and invites[1].cseq[0] == 2
    assert "algorithm=MD5" in invites[1].header_lines("proxy-authorization")[0]
    assert "qop=auth" in invites[1].header_lines("proxy-authorization")[0]
