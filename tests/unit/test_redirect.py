"""Redirect mode (RFC 3261 8.3, 21.3.3): 302 with every binding and its q, 404/480, ACK absorbed."""

from __future__ import annotations

from leansip.sip.digest import build_authorization
from leansip.sip.uri import parse_name_addr
from tests.unit.proxy_kit import ALICE, BOB1, BOB2, feed, make_core, only, register, registered, request


def test_302_lists_every_binding_with_its_q() -> None:
    core = make_core(mode="redirect")
    registered(core, "bob", BOB1, q=0.7)
    registered(core, "bob", BOB2, q=1.0)
    resp = only(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0))
    assert resp.status == 302 and resp.dest == ALICE
    contacts = {}
    for value in resp.msg.header_values("contact"):
        na = parse_name_addr(value)
        contacts[na.uri_text] = float(na.params["q"])
    assert contacts == {f"sip:bob@{BOB1[0]}:{BOB1[1]}": 0.7, f"sip:bob@{BOB2[0]}:{BOB2[1]}": 1.0}
    assert resp.msg.to_tag  # a final response with our tag, so the ACK can match it


def test_redirect_404_unknown_480_without_binding_and_ack_absorbed() -> None:
    core = make_core(mode="redirect")
    assert only(feed(core, request("INVITE", "sip:nobody@leansip"), ALICE, 1.0)).status == 404
    assert only(feed(core, request("INVITE", "sip:carol@leansip"), ALICE, 1.0)).status == 480
    registered(core, "bob", BOB1)
    invite = request("INVITE", "sip:bob@leansip", branch="z9hG4bKr1", call_id="r1@test")
    resp = only(feed(core, invite, ALICE, 1.0))
    assert resp.status == 302
    ack = request("ACK", "sip:bob@leansip", branch="z9hG4bKr1", call_id="r1@test", to_tag=resp.msg.to_tag,
                  cseq_method="ACK")
    assert feed(core, ack, ALICE, 1.1) == []  # RFC 3261 17.2.1: the ACK of a non-2xx ends here
    # a retransmitted INVITE gets the same 302 again (same To tag)
    again = only(feed(core, invite, ALICE, 1.2))
    assert again.status == 302 and again.msg.to_tag == resp.msg.to_tag


def test_redirect_never_forwards_and_answers_cancel_481() -> None:
    core = make_core(mode="redirect")
    registered(core, "bob", BOB1)
    for method in ("OPTIONS", "MESSAGE"):
        out = feed(core, request(method, "sip:bob@leansip"), ALICE, 1.0)
        assert [o.status for o in out] == [302]
    assert only(feed(core, request("CANCEL", "sip:bob@leansip"), ALICE, 1.0)).status == 481
    assert only(feed(core, request("BYE", "sip:bob@leansip", to_tag="x"), ALICE, 1.0)).status == 481


def test_redirect_with_auth_challenges_then_redirects() -> None:
    core = make_core(mode="redirect", auth=True)
    # bindings with auth: REGISTER answers the 401 first
    first = only(feed(core, register("bob", BOB1), BOB1, 0.0))
    assert first.status == 401
    chal = first.msg.header_lines("www-authenticate")[0]
    creds = build_authorization(chal, "REGISTER", "sip:leansip", "bob", "bob")
    assert only(feed(core, register("bob", BOB1, cseq=2, extra=[("Authorization", creds)]), BOB1, 0.1)).status == 200

    resp = only(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0))
    assert resp.status == 407
    chal = resp.msg.header_lines("proxy-authenticate")[0]
    creds = build_authorization(chal, "INVITE", "sip:bob@leansip", "alice", "alice")
    ok = only(feed(core, request("INVITE", "sip:bob@leansip", cseq=2, extra=[("Proxy-Authorization", creds)]),
                   ALICE, 1.1))
    assert ok.status == 302
    wrong = build_authorization(chal, "INVITE", "sip:bob@leansip", "alice", "nope")
    bad = only(feed(core, request("INVITE", "sip:bob@leansip", cseq=3, extra=[("Proxy-Authorization", wrong)]),
                    ALICE, 1.2))
    assert bad.status == 407
