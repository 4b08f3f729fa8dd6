"""Flows (RFC 5626, RFC 7118 5): in-dialog requests between clients reached only over the connections they opened
(browser phones on WebSocket), flow tokens in our Record-Route, bindings that die with their connection, and
``reg-id``/``+sip.instance`` flows. Sans-I/O: the core is told of connections as the stream layer would."""

from __future__ import annotations

import pytest

from leansip.server.core import ServerCore
from leansip.server.flows import Flows, contact_flow_key
from leansip.sip.message import Request
from leansip.sip.uri import parse_name_addr, parse_uri
from tests.unit.proxy_kit import PROXY, SECRET, make_core, new_branch, only, parse_out, requests, responses

WS_PORT = 8080
ALICE_PEER = ("198.51.100.7", 40001)
BOB_PEER = ("198.51.100.8", 40002)
ALICE_CONN = "ws:198.51.100.7:40001#1"
BOB_CONN = "ws:198.51.100.8:40002#2"
ALICE_CONTACT = "sip:a1b2c3@alicehost.invalid;transport=ws"
BOB_CONTACT = "sip:k9x8z7@bobhost.invalid;transport=ws"


def _core(stateful: bool) -> ServerCore:
    core = make_core(stateful=stateful)
    core.local_addresses.append(("ws", PROXY[0], WS_PORT))
    assert core.proxy is not None
    core.proxy.set_local(core.local_addresses)
    core.connection_opened(ALICE_CONN, "ws", ALICE_PEER)
    core.connection_opened(BOB_CONN, "ws", BOB_PEER)
    return core


def _ws_request(method: str, ruri: str, *, user: str, host: str, call_id: str, cseq: int, from_tag: str,
                to_user: str, to_tag: str | None = None, routes: list[str] = (), contact: str | None = None,
                extra: list[tuple[str, str]] = ()) -> bytes:
    """A request as JsSIP sends it: a Via naming its ``.invalid`` host, over its WebSocket connection."""
    lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/WS {host};branch={new_branch()}",
             "Max-Forwards: 69", f"From: <sip:{user}@leansip>;tag={from_tag}",
             f"To: <sip:{to_user}@leansip>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    lines += [f"Route: {r}" for r in routes]
    if contact:
        lines.append(f"Contact: <{contact}>")
    lines += [f"{k}: {v}" for k, v in extra]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _register(core: ServerCore, user: str, contact: str, peer: tuple[str, int], conn: str, *,
              params: str = "", call_id: str | None = None) -> None:
    host = parse_uri(contact).host
    data = _ws_request("REGISTER", "sip:leansip", user=user, host=host, call_id=call_id or f"reg-{user}@ws",
                       cseq=1, from_tag=f"r{user}", to_user=user, extra=[("Contact", f"<{contact}>{params}"),
                                                                      ("Expires", "600")])
    out = parse_out(core.receive(data, peer, "ws", 1.0, conn))
    assert [o.status for o in out] == [200], out


def _response(req: Request, status: int, to_tag: str, contact: str) -> bytes:
    """The callee's answer: Vias and Record-Route copied (RFC 3261 12.1.1), To tag and Contact added."""
    lines = [f"SIP/2.0 {status} OK"]
    lines += [f"Via: {v}" for v in req.header_values("via")]
    lines += [f"Record-Route: {v}" for v in req.header_values("record-route")]
    lines += [f"From: {req.header('from')}", f"To: {req.header('to')};tag={to_tag}",
              f"Call-ID: {req.header('call-id')}", f"CSeq: {req.header('cseq')}", f"Contact: <{contact}>",
              "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _route_set(record_routes: list[str], *, reverse: bool) -> list[str]:
    entries = [e.strip() for value in record_routes for e in value.split(",")]
    return entries[::-1] if reverse else entries


def _call(core: ServerCore) -> tuple[list[str], list[str]]:
    """alice (ws) calls bob (ws): returns (alice's route set, bob's route set) as each UA would store them."""
    _register(core, "alice", ALICE_CONTACT, ALICE_PEER, ALICE_CONN)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, BOB_CONN)
    invite = _ws_request("INVITE", "sip:bob@leansip", user="alice", host="alicehost.invalid", call_id="c1@ws",
                         cseq=1, from_tag="fa", to_user="bob", contact=ALICE_CONTACT)
    out = parse_out(core.receive(invite, ALICE_PEER, "ws", 2.0, ALICE_CONN))
    fwd = only(requests(out, "INVITE"))
    assert fwd.send.conn_id == BOB_CONN and fwd.send.transport == "ws"
    assert isinstance(fwd.msg, Request)
    rr = fwd.msg.header_values("record-route")
    # one entry per side, each naming that side's connection in its user part
    entries = _route_set(rr, reverse=False)
    assert len(entries) == 2, rr
    flows = core.flows
    users = [parse_name_addr(e).uri.user for e in entries]
    assert [flows.conn_of(u or "") for u in users] == [BOB_CONN, ALICE_CONN]
    ok = parse_out(core.receive(_response(fwd.msg, 200, "tb", BOB_CONTACT), BOB_PEER, "ws", 2.1, BOB_CONN))
    up = [o for o in ok if not o.is_request and o.status == 200]
    # over alice's connection: by its id (stateful) or by its address, which the stream layer maps back to it
    assert len(up) == 1 and up[0].send.transport == "ws" and up[0].dest == ALICE_PEER, ok
    assert up[0].send.conn_id in (ALICE_CONN, None)
    return _route_set(up[0].msg.header_values("record-route"), reverse=True), entries


def _assert_call_to_bob_gets_480(core: ServerCore, call_id: str) -> None:
    invite = _ws_request("INVITE", "sip:bob@leansip", user="alice", host="alicehost.invalid", call_id=call_id,
                         cseq=1, from_tag="fa2", to_user="bob", contact=ALICE_CONTACT)
    out = parse_out(core.receive(invite, ALICE_PEER, "ws", 5.0, ALICE_CONN))
    assert requests(out) == [] and responses(out)[-1] == 480


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_ack_and_bye_reach_each_browser_over_its_connection(stateful: bool) -> None:
    core = _core(stateful)
    alice_routes, bob_routes = _call(core)
    ack = _ws_request("ACK", BOB_CONTACT, user="alice", host="alicehost.invalid", call_id="c1@ws", cseq=1,
                      from_tag="fa", to_user="bob", to_tag="tb", routes=alice_routes)
    out = parse_out(core.receive(ack, ALICE_PEER, "ws", 2.2, ALICE_CONN))
    fwd = only(requests(out, "ACK"))
    assert (fwd.send.conn_id, fwd.send.transport, fwd.dest) == (BOB_CONN, "ws", BOB_PEER)
    assert fwd.msg.header("route") is None  # both of our entries consumed
    # bob hangs up: the BYE goes the other way, over alice's connection
    bye = _ws_request("BYE", ALICE_CONTACT, user="bob", host="bobhost.invalid", call_id="c1@ws", cseq=1,
                      from_tag="tb", to_user="alice", to_tag="fa", routes=bob_routes)
    out = parse_out(core.receive(bye, BOB_PEER, "ws", 3.0, BOB_CONN))
    fwd = only(requests(out, "BYE"))
    assert (fwd.send.conn_id, fwd.dest) == (ALICE_CONN, ALICE_PEER)
    assert isinstance(fwd.msg, Request) and fwd.msg.uri == ALICE_CONTACT


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
def test_closed_flow_answers_430_and_drops_its_bindings(stateful: bool) -> None:
    core = _core(stateful)
    alice_routes, _bob_routes = _call(core)
    assert [b.contact for b in core.location.lookup("bob", 3.0)] == [BOB_CONTACT]
    dropped = core.connection_closed(BOB_CONN)
    assert [b.aor for b in dropped] == ["bob"]
    assert core.location.lookup("bob", 3.0) == []  # at once, not at expiry
    bye = _ws_request("BYE", BOB_CONTACT, user="alice", host="alicehost.invalid", call_id="c1@ws", cseq=2,
                      from_tag="fa", to_user="bob", to_tag="tb", routes=alice_routes)
    out = parse_out(core.receive(bye, ALICE_PEER, "ws", 4.0, ALICE_CONN))
    assert requests(out) == []
    final = [o for o in out if not o.is_request and o.status >= 200]
    assert [o.status for o in final] == [430] and final[0].send.conn_id == ALICE_CONN
    # a new call to bob finds no binding: 480, not a fork to a dead connection
    _assert_call_to_bob_gets_480(core, "c2@ws")


def test_forged_token_is_not_followed() -> None:
    core = _core(False)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, BOB_CONN)
    token = core.flows.token(BOB_CONN)
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    route = f"<sip:{forged}@{PROXY[0]}:{WS_PORT};transport=ws;lr>"
    msg = _ws_request("MESSAGE", "sip:someone@elsewhere.invalid", user="mallory", host="m.invalid",
                      call_id="m1@ws", cseq=1, from_tag="fm", to_user="x", to_tag="tx", routes=[route])
    out = parse_out(core.receive(msg, ALICE_PEER, "ws", 2.0, ALICE_CONN))
    # not sent to bob's connection; a .invalid Request-URI is never looked up in DNS: 480 at once
    assert requests(out) == [] and responses(out) == [480]


def test_request_uri_of_a_registered_contact_goes_over_its_connection() -> None:
    core = _core(False)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, BOB_CONN)
    # an in-dialog request without our Record-Route (record-routing off, or a UA that ignored it); the dialog's
    # Contact may carry other parameters than the REGISTER's (JsSIP adds ;ob)
    msg = _ws_request("BYE", BOB_CONTACT + ";ob", user="alice", host="alicehost.invalid", call_id="d1@ws",
                      cseq=2, from_tag="fa", to_user="bob", to_tag="tb")
    out = parse_out(core.receive(msg, ALICE_PEER, "ws", 2.0, ALICE_CONN))
    fwd = only(requests(out, "BYE"))
    assert (fwd.send.conn_id, fwd.send.transport, fwd.dest) == (BOB_CONN, "ws", BOB_PEER)


def test_udp_caller_to_ws_callee_double_record_route() -> None:
    """A UDP phone calls a browser: the entry facing the browser carries its flow; the UDP phone's ACK comes
    over UDP with both entries and goes out on the browser's connection."""
    core = _core(True)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, BOB_CONN)
    caller = ("192.0.2.10", 5062)
    invite = (f"INVITE sip:bob@leansip SIP/2.0\r\nVia: SIP/2.0/UDP {caller[0]}:{caller[1]};branch={new_branch()}"
              f";rport\r\nMax-Forwards: 70\r\nFrom: <sip:carol@leansip>;tag=fc\r\nTo: <sip:bob@leansip>\r\n"
              f"Call-ID: u1@udp\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{caller[0]}:{caller[1]}>\r\n"
              f"Content-Length: 0\r\n\r\n").encode()
    out = parse_out(core.receive(invite, caller, "udp", 1.0))
    fwd = only(requests(out, "INVITE"))
    assert isinstance(fwd.msg, Request)
    rr = _route_set(fwd.msg.header_values("record-route"), reverse=False)
    assert rr == [f"<sip:{core.flows.token(BOB_CONN)}@{PROXY[0]}:{WS_PORT};transport=ws;lr>",
                  f"<sip:{PROXY[0]}:{PROXY[1]};lr>"]
    ack = (f"ACK {BOB_CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP {caller[0]}:{caller[1]};branch={new_branch()};rport\r\n"
           f"Max-Forwards: 70\r\nRoute: {rr[1]}, {rr[0]}\r\nFrom: <sip:carol@leansip>;tag=fc\r\n"
           f"To: <sip:bob@leansip>;tag=tb\r\nCall-ID: u1@udp\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()
    out = parse_out(core.receive(ack, caller, "udp", 2.0))
    assert only(requests(out, "ACK")).send.conn_id == BOB_CONN


def test_instance_and_reg_id_replace_the_old_flow() -> None:
    """RFC 5626 6: the same device (instance) and flow (reg-id) registering again from a new connection with a
    new contact replaces the binding instead of adding a second one."""
    core = _core(False)
    instance = ';reg-id=1;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"'
    _register(core, "alice", ALICE_CONTACT, ALICE_PEER, ALICE_CONN, params=instance, call_id="r1@ws")
    second = "sip:zz11yy@other.invalid;transport=ws"
    _register(core, "alice", second, BOB_PEER, BOB_CONN, params=instance, call_id="r2@ws")
    assert [b.contact for b in core.location.lookup("alice", 2.0)] == [second]


def test_binding_of_a_connection_the_core_never_saw_open_is_skipped() -> None:
    """A WebSocket binding restored from a store after a restart names a connection of the old process."""
    core = _core(False)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, "ws:198.51.100.8:40002#99")
    _assert_call_to_bob_gets_480(core, "c9@ws")


def test_token_round_trip_and_tampering() -> None:
    flows = Flows(SECRET)
    for conn in ("ws:[2001:db8::7]:50122#17", "tcp:192.0.2.1:5060#1"):
        token = flows.token(conn)
        assert flows.conn_of(token) == conn
        assert all(c.isalnum() or c in "-_" for c in token)  # a valid SIP user part
    assert Flows(b"another secret").conn_of(flows.token("ws:1.2.3.4:5#1")) is None
    for junk in ("", "alice", "!!!!!!!!!!!!", "A" * 1000, flows.token("x")[:-1]):
        assert flows.conn_of(junk) is None


def test_contact_key_ignores_parameters() -> None:
    a = parse_uri("sip:abc@Host.invalid;transport=ws")
    b = parse_uri("sip:abc@host.invalid;transport=ws;ob")
    assert contact_flow_key(a) == contact_flow_key(b)



def test_closed_tcp_flow_of_a_reachable_phone_falls_back_to_its_contact() -> None:
    """A TCP phone with an address of its own (not behind NAT, no .invalid contact): when the connection its
    token names has closed, the request goes to its Contact over a new connection, as without a token."""
    core = _core(True)
    core.local_addresses.append(("tcp", PROXY[0], 5060))
    assert core.proxy is not None
    core.proxy.set_local(core.local_addresses)
    caller, conn = ("192.0.2.30", 40500), "tcp:192.0.2.30:40500#7"
    core.connection_opened(conn, "tcp", caller)
    _register(core, "bob", BOB_CONTACT, BOB_PEER, BOB_CONN)
    invite = (f"INVITE sip:bob@leansip SIP/2.0\r\nVia: SIP/2.0/TCP {caller[0]}:5070;branch={new_branch()}\r\n"
              f"Max-Forwards: 70\r\nFrom: <sip:carol@leansip>;tag=fc\r\nTo: <sip:bob@leansip>\r\n"
              f"Call-ID: t1@tcp\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{caller[0]}:5070;transport=tcp>\r\n"
              f"Content-Length: 0\r\n\r\n").encode()
    fwd = only(requests(parse_out(core.receive(invite, caller, "tcp", 1.0, conn)), "INVITE"))
    assert isinstance(fwd.msg, Request)
    bob_routes = _route_set(fwd.msg.header_values("record-route"), reverse=False)
    assert core.flows.conn_of(parse_name_addr(bob_routes[1]).uri.user or "") == conn
    core.connection_closed(conn)
    bye = _ws_request("BYE", f"sip:carol@{caller[0]}:5070;transport=tcp", user="bob", host="bobhost.invalid",
                      call_id="t1@tcp", cseq=1, from_tag="tb", to_user="carol", to_tag="fc", routes=bob_routes)
    out = parse_out(core.receive(bye, BOB_PEER, "ws", 3.0, BOB_CONN))
    sent = only(requests(out, "BYE"))
    assert (sent.dest, sent.send.transport, sent.send.conn_id) == ((caller[0], 5070), "tcp", None)
