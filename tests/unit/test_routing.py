"""Router (RFC 3261 16.4-16.6, 16.11) and the stateless proxy: branches, Route processing, strict-router
compatibility, lookups."""

from __future__ import annotations

import pytest

from leansip.server.routing import MAGIC, Router
from leansip.sip.message import Request, parse_message
from leansip.sip.uri import parse_via
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    BOB2,
    PROXY,
    Out,
    feed,
    make_core,
    only,
    registered,
    request,
    requests,
    response_to,
)

RR = f"<sip:{PROXY[0]}:{PROXY[1]};lr>"


def _parse(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def _router() -> Router:
    core = make_core(stateful=False)
    router = Router(core.services)
    router.set_local(core.local_addresses)
    return router


def _fwd(outs: list[Out], method: str) -> Out:
    return only(requests(outs, method))


# ---------------------------------------------------------------------------------------------- branch_for


def test_branch_same_for_retransmission_and_cancel_different_for_new_request() -> None:
    router = _router()
    invite = request("INVITE", "sip:bob@leansip", branch="z9hG4bKabc", call_id="x@y")
    cancel = request("CANCEL", "sip:bob@leansip", branch="z9hG4bKabc", call_id="x@y")
    other = request("INVITE", "sip:bob@leansip", branch="z9hG4bKabd", call_id="x@y")
    b1 = router.branch_for(_parse(invite))
    assert b1.startswith(MAGIC)
    assert router.branch_for(_parse(invite)) == b1
    assert router.branch_for(_parse(cancel)) == b1  # 16.11: the CANCEL follows the INVITE's path
    assert router.branch_for(_parse(other)) != b1


def test_stateful_branch_is_unique_and_carries_the_loop_component() -> None:
    router = _router()
    invite = _parse(request("INVITE", "sip:bob@leansip", branch="z9hG4bKabc", call_id="x@y"))
    branches = {router.stateful_branch(invite) for _ in range(1000)}
    assert len(branches) == 1000 and all(b.startswith(MAGIC) for b in branches)
    # the loop part is the stateless branch's: loop_detected finds it the same way
    loop = router.branch_for(invite).rsplit("-", 1)[1]
    assert {b.rsplit("-", 1)[1] for b in branches} == {loop}
    # another process (another router) does not repeat them
    assert not branches & {_router().stateful_branch(invite) for _ in range(1000)}


def test_branch_for_rfc2543_peer_without_magic_cookie() -> None:
    router = _router()
    a = request("INVITE", "sip:bob@leansip", branch="old1", call_id="x@y", cseq=1)
    b = request("INVITE", "sip:bob@leansip", branch="old1", call_id="x@y", cseq=2)
    assert router.branch_for(_parse(a)) == router.branch_for(_parse(a))
    assert router.branch_for(_parse(a)) != router.branch_for(_parse(b))


def test_stateless_retransmission_and_cancel_forwarded_with_the_same_branch() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1)
    invite = request("INVITE", "sip:bob@leansip", branch="z9hG4bKs1", call_id="s1@test")
    out1 = feed(core, invite, ALICE, 1.0)
    out2 = feed(core, invite, ALICE, 1.5)
    cancel = feed(core, request("CANCEL", "sip:bob@leansip", branch="z9hG4bKs1", call_id="s1@test"), ALICE, 2.0)
    f1, f2, fc = _fwd(out1, "INVITE"), _fwd(out2, "INVITE"), _fwd(cancel, "CANCEL")
    assert f1.dest == f2.dest == fc.dest == BOB1
    assert f1.msg.branch == f2.msg.branch == fc.msg.branch
    assert [o.status for o in out1 if not o.is_request] == [100]
    assert [o for o in cancel if not o.is_request] == []  # stateless: the callee answers the CANCEL


def test_stateless_response_loses_our_via_and_goes_to_the_next_one() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1)
    f = _fwd(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), "INVITE")
    assert isinstance(f.msg, Request)
    up = only(feed(core, response_to(f.msg, 180), BOB1, 1.1))
    assert up.dest == ALICE and up.status == 180 and len(up.msg.header_values("via")) == 1
    assert feed(core, response_to(f.msg, 100), BOB1, 1.1) == []  # 100 is hop by hop


def test_stateless_forwards_to_the_best_binding_only() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1, q=0.5)
    registered(core, "bob", BOB2, q=1.0)
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    assert _fwd(out, "INVITE").dest == BOB2


# ---------------------------------------------------------------------------------------------- Route


@pytest.mark.parametrize("stateful", [False, True])
def test_strict_router_compatibility_last_route_becomes_request_uri(stateful: bool) -> None:
    """RFC 3261 16.4: a strict router put our Record-Route URI into the Request-URI; the real target is the
    last Route entry."""
    core = make_core(stateful=stateful)
    contact = f"sip:bob@{BOB1[0]}:{BOB1[1]}"
    data = request("BYE", f"sip:{PROXY[0]}:{PROXY[1]};lr", to_tag="callee1", cseq=2,
                   extra=[("Route", f"<{contact}>")])
    out = feed(core, data, ALICE, 5.0)
    bye = _fwd(out, "BYE")
    assert bye.dest == BOB1
    assert isinstance(bye.msg, Request)
    assert bye.msg.uri == contact
    assert bye.msg.header("route") is None


def test_strict_route_keeps_the_other_routes_in_order() -> None:
    router = _router()
    req = _parse(request("BYE", f"sip:{PROXY[0]}:{PROXY[1]};lr", to_tag="t",
                         extra=[("Route", "<sip:p2.example;lr>"), ("Route", "<sip:bob@192.0.2.21:5062>")]))
    router.preprocess_routes(req)
    assert req.uri == "sip:bob@192.0.2.21:5062"
    assert req.header_values("route") == ["<sip:p2.example;lr>"]


def test_our_route_is_removed_and_the_next_route_is_the_next_hop() -> None:
    core = make_core(stateful=False)
    data = request("BYE", "sip:bob@192.0.2.21:5062", to_tag="t", cseq=2,
                   extra=[("Route", f"{RR},<sip:192.0.2.50:5080;lr>")])
    out = feed(core, data, ALICE, 1.0)
    bye = _fwd(out, "BYE")
    assert bye.dest == ("192.0.2.50", 5080)  # loose routing: to the next Route, R-URI untouched
    assert isinstance(bye.msg, Request)
    assert bye.msg.uri == "sip:bob@192.0.2.21:5062"
    assert bye.msg.header_values("route") == ["<sip:192.0.2.50:5080;lr>"]


def test_record_route_only_on_dialog_creating_requests_outside_a_dialog() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1)
    invite = _fwd(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), "INVITE")
    assert invite.msg.header_values("record-route") == [RR]
    message = _fwd(feed(core, request("MESSAGE", "sip:bob@leansip"), ALICE, 1.0), "MESSAGE")
    assert message.msg.header("record-route") is None
    reinvite = _fwd(feed(core, request("INVITE", f"sip:bob@{BOB1[0]}:{BOB1[1]}", to_tag="t", extra=[
        ("Route", RR)]), ALICE, 1.0), "INVITE")
    assert reinvite.msg.header("record-route") is None


# ---------------------------------------------------------------------------------------------- decisions


def test_lookup_404_unknown_480_without_binding_stateless() -> None:
    core = make_core(stateful=False)
    out = feed(core, request("INVITE", "sip:nobody@leansip"), ALICE, 1.0)
    assert [o.status for o in out] == [404]
    out = feed(core, request("INVITE", "sip:carol@leansip"), ALICE, 1.0)
    assert [o.status for o in out] == [480]
    assert feed(core, request("ACK", "sip:carol@leansip", to_tag="x", cseq_method="ACK"), ALICE, 1.0) == []


def test_foreign_uri_is_routed_by_its_host() -> None:
    core = make_core(stateful=False)
    out = feed(core, request("OPTIONS", "sip:someone@192.0.2.77:5999"), ALICE, 1.0)
    assert _fwd(out, "OPTIONS").dest == ("192.0.2.77", 5999)


def test_max_forwards_zero_483_stateless() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", "sip:bob@leansip", max_forwards=0), ALICE, 1.0)
    assert [o.status for o in out] == [483]


def test_loop_detected_stateless_spiral_is_not_a_loop() -> None:
    core = make_core(stateful=False)
    foreign = ("192.0.2.99", 5070)
    out = feed(core, request("INVITE", f"sip:someone@{foreign[0]}:{foreign[1]}"), ALICE, 1.0)
    fwd = _fwd(out, "INVITE").msg
    assert isinstance(fwd, Request)
    back = fwd.copy()
    back.add_header("via", f"SIP/2.0/UDP {foreign[0]}:{foreign[1]};branch=z9hG4bKback", first=True)
    out = feed(core, back.to_bytes(), foreign, 1.1)
    assert [o.status for o in out if not o.is_request] == [482]
    # the same request retargeted (a spiral: other Request-URI) passes
    spiral = back.copy()
    spiral.uri = "sip:someone-else@192.0.2.98:5070"
    out = feed(core, spiral.to_bytes(), foreign, 1.2)
    assert _fwd(out, "INVITE").dest == ("192.0.2.98", 5070)
    assert parse_via(_fwd(out, "INVITE").msg.header_values("via")[0]).host == PROXY[0]
