"""The transaction-stateful proxy (RFC 3261 16, 17) driven through ServerCore.receive/handle_timers with a fake
clock: forwarding edits, retransmission absorption, forking, best-response choice, CANCEL, Timer A/B, loops,
Max-Forwards and the transaction bound."""

from __future__ import annotations

from leansip.server.core import ServerCore
from leansip.sip.uri import parse_via
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    BOB2,
    PROXY,
    Out,
    feed,
    forwarded,
    make_core,
    only,
    registered,
    request,
    requests,
    response_to,
    upstream,
)

BOB_URI = "sip:bob@leansip"


def _invite(core: ServerCore, now: float = 1.0, **kw: object) -> tuple[bytes, list[Out]]:
    data = request("INVITE", kw.pop("ruri", BOB_URI), **kw)  # type: ignore[arg-type]
    return data, feed(core, data, ALICE, now)


_fwd = forwarded
_up = upstream


def _drive(core: ServerCore, until: float) -> list[tuple[float, Out]]:
    """Fire every timer up to ``until``, as the runtime's single re-armed timer would."""
    fired: list[tuple[float, Out]] = []
    from tests.unit.proxy_kit import parse_out

    while (at := core.next_deadline()) is not None and at <= until:
        fired.extend((at, o) for o in parse_out(core.handle_timers(at)))
    return fired


# ---------------------------------------------------------------------------------------------- forwarding


def test_invite_gets_100_and_one_forward_with_our_via_rr_and_max_forwards() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core, max_forwards=70)
    assert _up(out) == [100]
    fwd = _fwd(out, BOB1)
    assert fwd.uri == f"sip:bob@{BOB1[0]}:{BOB1[1]}"  # retargeted to the binding (16.5)
    top = parse_via(fwd.header_values("via")[0])
    assert (top.host, top.port) == PROXY
    assert top.branch is not None and top.branch.startswith("z9hG4bK")
    second = parse_via(fwd.header_values("via")[1])
    assert second.params.get("received") == ALICE[0] and second.params.get("rport") == str(ALICE[1])
    assert fwd.header_values("record-route") == [f"<sip:{PROXY[0]}:{PROXY[1]};lr>"]
    assert fwd.max_forwards == 69
    assert len(out) == 2


def test_retransmitted_invite_is_absorbed() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    data, out = _invite(core)
    assert len(requests(out, "INVITE")) == 1
    again = feed(core, data, ALICE, 1.3)
    assert requests(again) == []  # no second forward
    assert _up(again) == [100]  # the server transaction repeats its last response (17.2.1)


def test_180_and_200_relayed_upstream_without_our_via() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core)
    fwd = _fwd(out, BOB1)
    ringing = feed(core, response_to(fwd, 180), BOB1, 1.1)
    ok = feed(core, response_to(fwd, 200), BOB1, 1.2)
    for outs, status in ((ringing, 180), (ok, 200)):
        resp = only(outs)
        assert resp.dest == ALICE and resp.status == status
        vias = resp.msg.header_values("via")
        assert len(vias) == 1 and f"{ALICE[0]}:{ALICE[1]}" in vias[0]
    # a 100 from downstream is hop by hop: not relayed
    assert feed(core, response_to(fwd, 100), BOB1, 1.3) == []


def test_non_invite_is_forwarded_and_answered_once() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    data = request("MESSAGE", BOB_URI)
    out = feed(core, data, ALICE, 1.0)
    assert _up(out) == []  # no 100 Trying for non-INVITE (17.2.2)
    fwd = _fwd(out, BOB1, "MESSAGE")
    assert fwd.header("record-route") is None  # MESSAGE does not create a dialog
    assert only(feed(core, response_to(fwd, 200), BOB1, 1.1)).status == 200
    assert _up(feed(core, data, ALICE, 1.5)) == [200]  # retransmission answered from the transaction


def test_answered_request_keeps_no_parsed_views_and_still_absorbs_retransmissions() -> None:
    """After the final response the kept requests drop their parsed views (freed while in cache, not 32 s later);
    the transactions still match retransmissions, late responses and a late CANCEL, parsing again if needed."""
    core = make_core()
    registered(core, "bob", BOB1)
    data, out = _invite(core)
    fwd = _fwd(out, BOB1)
    proxy = core.proxy
    (ctx,) = proxy.contexts.values()  # type: ignore[union-attr]
    assert ctx.request.has_views() and ctx.branches[0].request.has_views()  # in use while the call is set up
    assert only(feed(core, response_to(fwd, 200), BOB1, 1.1)).status == 200
    assert not ctx.request.has_views() and not ctx.branches[0].request.has_views()
    assert _up(feed(core, data, ALICE, 1.2)) == []  # INVITE retransmission: absorbed (Accepted, RFC 6026)
    assert only(feed(core, response_to(fwd, 200), BOB1, 1.3)).status == 200  # 2xx retransmission still relayed
    cancel = request("CANCEL", BOB_URI, call_id=ctx.request.call_id, branch=ctx.request.branch)
    assert _up(feed(core, cancel, ALICE, 1.4)) == [200]  # too late to cancel: 200, nothing goes downstream
    assert ctx.request.top_via.branch == parse_via(ctx.request.header_values("via")[0]).branch


# ---------------------------------------------------------------------------------------------- forking


def test_forking_first_2xx_wins_and_other_branch_is_cancelled() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    assert f1.branch != f2.branch
    assert _up(feed(core, response_to(f1, 180, to_tag="b1"), BOB1, 1.1)) == [180]
    assert _up(feed(core, response_to(f2, 180, to_tag="b2"), BOB2, 1.1)) == [180]
    out = feed(core, response_to(f2, 200, to_tag="b2"), BOB2, 1.2)
    assert _up(out) == [200]
    cancel = _fwd(out, BOB1, "CANCEL")
    assert cancel.branch == f1.branch and cancel.uri == f1.uri  # RFC 3261 9.1: same branch and R-URI
    assert cancel.cseq == (f1.cseq[0], "CANCEL")
    assert requests(out, "CANCEL") and all(o.dest == BOB1 for o in requests(out, "CANCEL"))
    # the cancelled branch answers 200 (CANCEL) and 487 (INVITE): the 487 is ACKed, not relayed
    assert feed(core, response_to(cancel, 200, to_tag="b1"), BOB1, 1.3) == []
    out = feed(core, response_to(f1, 487, to_tag="b1"), BOB1, 1.4)
    assert _up(out) == []
    ack = _fwd(out, BOB1, "ACK")
    assert ack.branch == f1.branch


def test_cancel_to_a_branch_waits_for_its_provisional_response() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    out = feed(core, response_to(f2, 200, to_tag="b2"), BOB2, 1.2)
    assert _up(out) == [200]
    assert requests(out, "CANCEL") == []  # RFC 3261 9.1: no CANCEL before a provisional response
    out = feed(core, response_to(f1, 180, to_tag="b1"), BOB1, 1.3)
    assert _up(out) == []  # a final response was sent: later provisionals are not relayed
    assert _fwd(out, BOB1, "CANCEL").branch == f1.branch


def test_all_branches_fail_best_response_goes_up() -> None:
    """RFC 3261 16.7 step 6: the lowest class wins; within 4xx the code prefers the lowest status."""
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    out = feed(core, response_to(f1, 486), BOB1, 1.1)
    assert _up(out) == [] and len(requests(out, "ACK")) == 1  # ACK for the non-2xx, nothing upstream yet
    out = feed(core, response_to(f2, 404), BOB2, 1.2)
    assert _up(out) == [404]


def test_4xx_beats_5xx_and_a_lone_503_becomes_500() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    feed(core, response_to(f1, 503), BOB1, 1.1)
    assert _up(feed(core, response_to(f2, 486), BOB2, 1.2)) == [486]

    # RFC 3261 16.7 step 6: a 503 is not forwarded as such; the proxy answers 500 instead
    _, out = _invite(core, now=2.0)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    feed(core, response_to(f1, 503), BOB1, 2.1)
    assert _up(feed(core, response_to(f2, 503), BOB2, 2.2)) == [500]


def test_401_407_preferred_and_challenges_collected() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    feed(core, response_to(f1, 407, extra=[("Proxy-Authenticate", 'Digest realm="a", nonce="1"')]), BOB1, 1.1)
    out = feed(core, response_to(f2, 407, extra=[("Proxy-Authenticate", 'Digest realm="b", nonce="2"')]),
               BOB2, 1.2)
    resp = only([o for o in out if not o.is_request])
    assert resp.status == 407
    assert sorted(resp.msg.header_lines("proxy-authenticate")) == ['Digest realm="a", nonce="1"',
                                                                    'Digest realm="b", nonce="2"']


def test_6xx_cancels_the_other_branches_and_wins() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    registered(core, "bob", BOB2)
    _, out = _invite(core)
    f1, f2 = _fwd(out, BOB1), _fwd(out, BOB2)
    assert _up(feed(core, response_to(f1, 180), BOB1, 1.1)) == [180]
    out = feed(core, response_to(f2, 603), BOB2, 1.2)
    assert _up(out) == []  # 16.7 step 5: held until the cancelled branches end
    assert _fwd(out, BOB1, "CANCEL").branch == f1.branch
    out = feed(core, response_to(f1, 487), BOB1, 1.3)
    assert _up(out) == [603]


# ---------------------------------------------------------------------------------------------- timers


def test_no_answer_timer_a_retransmits_then_408_at_timer_b() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core, now=0.0, branch="z9hG4bKnoanswer", call_id="b1@test")
    first = _fwd(out, BOB1).to_bytes()
    fired = _drive(core, 40.0)
    resent = [at for at, o in fired if o.is_request and o.dest == BOB1 and o.send.data == first]
    # Timer A: T1, then doubling (RFC 3261 17.1.1.2), until Timer B = 64*T1 = 32 s
    assert resent == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    up = [(at, o) for at, o in fired if not o.is_request and o.dest == ALICE]
    assert (up[0][0], up[0][1].status) == (32.0, 408)
    to_tag = up[0][1].msg.to_tag
    assert to_tag  # a final response carries a To tag (RFC 3261 8.2.6.2)
    # the 408 is retransmitted by Timer G until the caller's ACK (17.2.1), then never again
    assert [at for at, _o in up[1:3]] == [32.5, 33.5]
    ack = request("ACK", BOB_URI, branch="z9hG4bKnoanswer", call_id="b1@test", to_tag=to_tag, cseq_method="ACK")
    assert feed(core, ack, ALICE, 40.1) == []
    assert [o for _at, o in _drive(core, 100.0) if o.dest == ALICE] == []


def test_provisional_stops_retransmissions() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core, now=0.0)
    fwd = _fwd(out, BOB1)
    feed(core, response_to(fwd, 100), BOB1, 0.2)
    fired = _drive(core, 60.0)
    assert [o for _at, o in fired if o.is_request and o.method == "INVITE"] == []
    assert [o for _at, o in fired if not o.is_request] == []  # no 408 before Timer C


def test_timer_c_cancels_a_ringing_branch_and_ends_it() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core, now=0.0)
    fwd = _fwd(out, BOB1)
    feed(core, response_to(fwd, 180), BOB1, 1.0)
    fired = _drive(core, 179.0)
    assert [o for _at, o in fired if o.is_request and o.method == "CANCEL"] == []
    fired = _drive(core, 181.5)
    cancels = [o for _at, o in fired if o.is_request and o.method == "CANCEL"]
    assert cancels and cancels[0].msg.branch == fwd.branch  # RFC 3261 16.8
    fired = _drive(core, 300.0)
    assert {o.status for _at, o in fired if not o.is_request and o.dest == ALICE} == {408}


# ---------------------------------------------------------------------------------------------- CANCEL


def test_cancel_gets_200_goes_downstream_and_487_is_relayed() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    branch = "z9hG4bKcancelme"
    _, out = _invite(core, branch=branch, call_id="c1@test")
    fwd = _fwd(out, BOB1)
    feed(core, response_to(fwd, 180), BOB1, 1.1)
    out = feed(core, request("CANCEL", BOB_URI, branch=branch, call_id="c1@test"), ALICE, 1.2)
    assert _up(out) == [200]
    resp200 = [o for o in out if not o.is_request][0]
    assert resp200.msg.cseq == (1, "CANCEL")
    cancel = _fwd(out, BOB1, "CANCEL")
    assert cancel.branch == fwd.branch and cancel.uri == fwd.uri
    assert feed(core, response_to(cancel, 200), BOB1, 1.3) == []
    out = feed(core, response_to(fwd, 487), BOB1, 1.4)
    assert _up(out) == [487]
    assert _fwd(out, BOB1, "ACK").branch == fwd.branch  # the proxy ACKs the 487 hop by hop (17.1.1.3)
    # the caller's ACK for the 487 ends at the proxy's server transaction
    ack = request("ACK", BOB_URI, branch=branch, call_id="c1@test", to_tag="callee1", cseq_method="ACK")
    assert feed(core, ack, ALICE, 1.5) == []


def test_cancel_without_a_transaction_gets_481() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    out = feed(core, request("CANCEL", BOB_URI), ALICE, 1.0)
    assert _up(out) == [481] and requests(out) == []


# ---------------------------------------------------------------------------------------------- in dialog


def test_in_dialog_bye_with_our_route_goes_to_the_request_uri() -> None:
    core = make_core()
    contact = f"sip:bob@{BOB1[0]}:{BOB1[1]}"
    data = request("BYE", contact, to_tag="callee1", cseq=2,
                   extra=[("Route", f"<sip:{PROXY[0]}:{PROXY[1]};lr>")])
    out = feed(core, data, ALICE, 5.0)
    bye = _fwd(out, BOB1, "BYE")
    assert bye.uri == contact
    assert bye.header("route") is None  # our own Route entry was consumed (16.4)
    assert bye.header("record-route") is None
    assert parse_via(bye.header_values("via")[0]).host == PROXY[0]
    assert only(feed(core, response_to(bye, 200, to_tag=None), BOB1, 5.1)).status == 200


def test_ack_for_2xx_forwarded_statelessly() -> None:
    core = make_core()
    contact = f"sip:bob@{BOB1[0]}:{BOB1[1]}"
    data = request("ACK", contact, to_tag="callee1", cseq_method="ACK",
                   extra=[("Route", f"<sip:{PROXY[0]}:{PROXY[1]};lr>")])
    out = feed(core, data, ALICE, 5.0)
    assert _fwd(out, BOB1, "ACK").uri == contact
    assert _up(out) == []


# ---------------------------------------------------------------------------------------------- refusals


def test_loop_gets_482() -> None:
    """A request for a foreign URI that comes back to us unchanged (16.3 step 4); a spiral would not."""
    core = make_core()
    foreign = ("192.0.2.99", 5070)
    ruri = f"sip:someone@{foreign[0]}:{foreign[1]}"
    _, out = _invite(core, ruri=ruri)
    fwd = _fwd(out, foreign)
    fwd.add_header("via", f"SIP/2.0/UDP {foreign[0]}:{foreign[1]};branch=z9hG4bKback", first=True)
    back = feed(core, fwd.to_bytes(), foreign, 1.1)
    assert [o.status for o in back if not o.is_request and o.dest == foreign] == [100, 482]
    assert requests(back) == []


def test_max_forwards_zero_gets_483_and_one_is_forwarded_as_zero() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    _, out = _invite(core, max_forwards=0)
    assert _up(out) == [483] and requests(out) == []
    _, out = _invite(core, max_forwards=1)
    assert _fwd(out, BOB1).max_forwards == 0


def test_unknown_user_404_known_user_without_binding_480() -> None:
    core = make_core()
    _, out = _invite(core, ruri="sip:nobody@leansip")
    assert _up(out) == [100, 404]
    _, out = _invite(core, ruri="sip:carol@leansip")
    assert _up(out) == [100, 480]
    assert requests(out) == []


def test_503_past_the_bytes_the_transactions_may_keep() -> None:
    # --max-transaction-memory: with room for exactly one INVITE's two transactions, the next INVITE gets 503
    roomy = make_core()
    registered(roomy, "bob", BOB1)
    _invite(roomy)
    one_call = roomy.proxy.table.held_bytes  # type: ignore[union-attr]
    _, out = _invite(roomy, now=1.1)
    assert len(requests(out, "INVITE")) == 1
    core = make_core(max_transaction_bytes=one_call)
    registered(core, "bob", BOB1)
    _, out = _invite(core)
    assert len(requests(out, "INVITE")) == 1
    _, out = _invite(core, now=1.1)
    assert _up(out) == [503] and requests(out) == []


def test_503_with_retry_after_past_max_transactions() -> None:
    core = make_core(max_transactions=2)  # one INVITE = a server + a client transaction
    registered(core, "bob", BOB1)
    _, out = _invite(core)
    fwd = _fwd(out, BOB1)
    _, out = _invite(core, now=1.1)
    assert _up(out) == [503] and requests(out) == []
    resp = [o for o in out if not o.is_request][0]
    assert resp.msg.header("retry-after") == "5"
    # when the first call ends and its transactions are gone, new calls go through again
    assert _up(feed(core, response_to(fwd, 200), BOB1, 1.2)) == [200]
    _drive(core, 100.0)
    assert len(core.proxy.table) == 0  # type: ignore[union-attr]
    _, out = _invite(core, now=100.0)
    assert len(requests(out, "INVITE")) == 1
