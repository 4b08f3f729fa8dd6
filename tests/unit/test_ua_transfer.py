"""The user agent's voice-application signalling, sans-I/O on the in-memory network of test_ua_useragent: DTMF by
SIP INFO, blind and attended transfer (REFER/NOTIFY, Replaces), a forked INVITE answered twice, and 491 glare."""

from __future__ import annotations

import random
from unittest.mock import ANY

import pytest

from leansip.media.dtmf import DTMF_RELAY, info_body
from leansip.sip.message import Request, Response, parse_message
from leansip.ua.refer import (
    ReplacesId,
    parse_refer_to,
    parse_replaces,
    parse_sipfrag,
    refer_to_value,
    sipfrag,
)
from leansip.ua.useragent import (
    CallEnded,
    CallEstablished,
    CallState,
    CallUpdated,
    DtmfReceived,
    IncomingCall,
    OfferReceived,
    Ringing,
    TransferProgress,
    TransferRequested,
    UaConfig,
    UserAgent,
)
from tests.unit.test_ua_useragent import ALICE, ANSWER, BOB, OFFER, Net, make_ua, setup_call

CAROL = ("127.0.0.1", 40003)
CAROL_URI = f"sip:carol@{CAROL[0]}:{CAROL[1]}"


def sent(net: Net, start: int, prefix: bytes) -> list[Request | Response]:
    return [parse_message(d) for _, _, d in net.wire[start:] if d.startswith(prefix)]


# --------------------------------------------------------------------------- header helpers


def test_refer_to_with_embedded_replaces_round_trips() -> None:
    rid = ReplacesId(call_id="abc@host", to_tag="t1", from_tag="f;2")
    value = refer_to_value("sip:carol@example.com", rid)
    assert value == "<sip:carol@example.com?Replaces=abc%40host%3Bto-tag%3Dt1%3Bfrom-tag%3Df%3B2>"
    target = parse_refer_to(value)
    assert target.uri == "sip:carol@example.com"
    assert target.replaces == ReplacesId(call_id="abc@host", to_tag="t1", from_tag="f")  # ';2' is a parameter
    assert parse_refer_to('"Carol" <sip:carol@example.com>').replaces is None
    assert parse_replaces("x@y;from-tag=a;to-tag=b;early-only") == ReplacesId(call_id="x@y", to_tag="b",
                                                                               from_tag="a", early_only=True)


@pytest.mark.parametrize("bad", ["<tel:+15551234>", "<sip:>", "garbage <<"])
def test_bad_refer_to_is_refused(bad: str) -> None:
    from leansip.ua.refer import ReferError

    with pytest.raises(ReferError):
        parse_refer_to(bad)


def test_sipfrag() -> None:
    assert parse_sipfrag(sipfrag(180, "Ringing")) == (180, "Ringing")
    assert parse_sipfrag(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n") == (200, "OK")
    from leansip.ua.refer import ReferError

    for bad in (b"", b"INVITE sip:x SIP/2.0", b"SIP/2.0 99 Low", b"SIP/2.0 abc x"):
        with pytest.raises(ReferError):
            parse_sipfrag(bad)


# --------------------------------------------------------------------------- INFO


def test_info_dtmf_is_reported_and_infos_go_one_at_a_time() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    start = len(net.wire)
    first = alice.info(info_body("5", 160), DTMF_RELAY, now=1.0)
    second = alice.info(info_body("#", 100), DTMF_RELAY, now=1.0)
    assert second == []  # waits for the first one's answer (RFC 6086)
    net.run(ALICE, first, 1.0)
    infos = sent(net, start, b"INFO")
    assert len(infos) == 2 and infos[0].body == b"Signal=5\r\nDuration=160\r\n"
    assert net.take(BOB) == [DtmfReceived(call_id=ANY, digit="5", duration_ms=160, via="info"),
                             DtmfReceived(call_id=ANY, digit="#", duration_ms=100, via="info")]
    oks = [r for r in sent(net, start, b"SIP/2.0 200") if isinstance(r, Response) and r.cseq[1] == "INFO"]
    assert len(oks) == 2


def test_info_of_another_kind_is_415_and_outside_a_dialog_481() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    start = len(net.wire)
    net.run(ALICE, alice.info(b"<xml/>", "application/xml", now=1.0), 1.0)
    assert sent(net, start, b"SIP/2.0 415")
    assert net.take(BOB) == []


# --------------------------------------------------------------------------- blind transfer


def test_blind_transfer_as_transferor_and_transferee() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    carol = net.add_ua(make_ua(CAROL, "carol"))
    setup_call(net, alice, bob)
    old_call = bob.call.call_id  # type: ignore[union-attr]
    start = len(net.wire)
    net.run(ALICE, alice.refer(CAROL_URI, now=1.0), 1.0)
    refer = sent(net, start, b"REFER")[0]
    assert refer.header("refer-to") == f"<{CAROL_URI}>" and refer.header("referred-by") == f"<sip:alice@{ALICE[0]}>"
    asked = net.take(BOB)
    assert asked == [TransferRequested(call_id=old_call, target=CAROL_URI, referred_by=f"<sip:alice@{ALICE[0]}>")]
    assert net.take(ALICE) == [TransferProgress(call_id=ANY, status=202, reason="Accepted"),
                               TransferProgress(call_id=ANY, status=100, reason="Trying")]
    notify = sent(net, start, b"NOTIFY")[0]
    assert notify.header("event") == "refer" and notify.header("subscription-state") == "active;expires=60"
    assert notify.header("content-type") == "message/sipfrag;version=2.0"
    # bob follows: the INVITE carries Referred-By, its progress goes to alice
    start = len(net.wire)
    net.run(BOB, bob.invite(CAROL_URI, OFFER, now=2.0, transfer_of=old_call), 2.0)
    invite = sent(net, start, b"INVITE")[0]
    assert invite.header("referred-by") == f"<sip:alice@{ALICE[0]}>" and invite.header("replaces") is None
    assert [type(e) for e in net.take(CAROL)] == [IncomingCall]
    assert net.take(ALICE) == [TransferProgress(call_id=ANY, status=180, reason="Ringing")]
    net.run(CAROL, carol.answer(ANSWER, now=2.5), 2.5)
    assert net.take(ALICE) == [TransferProgress(call_id=ANY, status=200, reason="OK", final=True)]
    last = sent(net, start, b"NOTIFY")[-1]
    assert last.header("subscription-state") == "terminated;reason=noresource"
    assert [type(e) for e in net.take(BOB)] == [Ringing, CallEstablished]
    # RFC 5589: the transferor hangs up; bob keeps the call with carol
    net.run(ALICE, alice.hangup(now=3.0), 3.0)
    assert net.take(BOB) == [CallEnded(call_id=old_call, reason="remote hangup", status=None)]
    assert bob.call is not None and bob.call.state is CallState.CONFIRMED and bob.call.call_id != old_call


def test_transfer_declined_and_failed() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    net.run(ALICE, alice.refer(CAROL_URI, now=1.0), 1.0)
    net.take(ALICE), net.take(BOB)
    net.run(BOB, bob.decline_transfer(now=1.5), 1.5)
    assert net.take(ALICE) == [TransferProgress(call_id=ANY, status=603, reason="Decline", final=True)]
    # a second transfer: the target is not there (no UA at CAROL): Timer B, 408 reported to the transferor
    net.run(ALICE, alice.refer(CAROL_URI, now=2.0), 2.0)
    net.take(ALICE)
    old = bob.call.call_id  # type: ignore[union-attr]
    net.run(BOB, bob.invite(CAROL_URI, OFFER, now=2.0, transfer_of=old), 2.0)
    net.advance(2.0, 36.0, step=1.0)
    assert TransferProgress(call_id=ANY, status=408, reason="Request Timeout", final=True) in net.take(ALICE)


def test_refer_without_refer_to_is_400() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    setup_call(net, alice, bob)
    assert alice.call is not None and alice.call.dialog is not None
    req = alice.call.dialog.request("REFER", alice._via(), contact=f"<{alice.config.contact_uri}>")
    start = len(net.wire)
    out = bob.receive(req.to_bytes(), ALICE, 1.0)
    net.run(BOB, out, 1.0)
    assert sent(net, start, b"SIP/2.0 400")
    assert net.take(BOB) == []


# --------------------------------------------------------------------------- attended transfer


def test_attended_transfer_replaces_the_consultation_call() -> None:
    net = Net()
    alice = net.add_ua(UserAgent(UaConfig(user="alice", local=ALICE, max_calls=2)))
    bob = net.add_ua(make_ua(BOB, "bob"))
    carol = net.add_ua(make_ua(CAROL, "carol"))
    setup_call(net, alice, bob)
    to_bob = alice.call.call_id  # type: ignore[union-attr]
    # alice consults carol in a second call
    net.run(ALICE, alice.invite(CAROL_URI, OFFER, now=1.0), 1.0)
    net.run(CAROL, carol.answer(ANSWER, now=1.1), 1.1)
    to_carol = alice.call.call_id  # type: ignore[union-attr]
    assert alice.calls[to_carol].state is CallState.CONFIRMED
    net.take(ALICE), net.take(CAROL)
    start = len(net.wire)
    net.run(ALICE, alice.refer(CAROL_URI, now=2.0, call_id=to_bob, replaces_call=to_carol), 2.0)
    asked = [e for e in net.take(BOB) if isinstance(e, TransferRequested)]
    assert len(asked) == 1 and asked[0].replaces == to_carol and asked[0].target == CAROL_URI
    net.run(BOB, bob.invite(asked[0].target, OFFER, now=2.1, transfer_of=to_bob), 2.1)
    invite = sent(net, start, b"INVITE")[0]
    d = alice.calls[to_carol].dialog
    assert d is not None
    assert parse_replaces(invite.header("replaces") or "") == ReplacesId(call_id=to_carol, to_tag=d.remote_tag,
                                                                           from_tag=d.local_tag)
    incoming = net.take(CAROL)
    assert len(incoming) == 1 and isinstance(incoming[0], IncomingCall) and incoming[0].replaces == to_carol
    net.run(CAROL, carol.answer(ANSWER, now=2.2, call_id=incoming[0].call_id), 2.2)
    # carol hangs up the consultation call once the new one is confirmed (RFC 3891 3)
    assert CallEnded(call_id=to_carol, reason="replaced", status=None) in net.take(CAROL)
    heard = net.take(ALICE)
    assert CallEnded(call_id=to_carol, reason="remote hangup", status=None) in heard
    progress = [e for e in heard if isinstance(e, TransferProgress)]
    assert [p.status for p in progress] == [202, 100, 180, 200] and progress[-1].succeeded
    net.run(ALICE, alice.hangup(now=3.0, call_id=to_bob), 3.0)
    assert carol.calls[incoming[0].call_id].state is CallState.CONFIRMED
    assert carol.calls[to_carol].state is CallState.ENDED
    assert bob.call is not None and bob.call.call_id == incoming[0].call_id


def test_replaces_for_an_unknown_dialog_is_481_and_busy_still_486() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    carol = net.add_ua(make_ua(CAROL, "carol"))
    setup_call(net, alice, bob)
    start = len(net.wire)
    net.run(CAROL, carol.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=1.0,
                                headers=[("Replaces", "nope@x;to-tag=a;from-tag=b")]), 1.0)
    assert sent(net, start, b"SIP/2.0 481")
    net.run(CAROL, carol.invite(f"sip:bob@{BOB[0]}:{BOB[1]}", OFFER, now=1.0), 1.0)
    assert sent(net, start, b"SIP/2.0 486")


# --------------------------------------------------------------------------- forking and glare


def test_second_2xx_of_a_fork_is_acked_and_hung_up() -> None:
    net = Net()
    alice = net.add_ua(make_ua(ALICE, "alice"))
    bob = net.add_ua(make_ua(BOB, "bob"))
    carol = net.add_ua(make_ua(CAROL, "carol"))
    setup_call(net, alice, bob)
    ok = next(d for s, _, d in net.wire if s == BOB and d.startswith(b"SIP/2.0 200"))
    bob_tag = bob.call.local_tag  # type: ignore[union-attr]
    # the same INVITE answered by another fork (carol's device): other To tag, other Contact
    fork = ok.replace(bob_tag.encode(), b"fork2tag").replace(f"{BOB[0]}:{BOB[1]}".encode(),
                                                              f"{CAROL[0]}:{CAROL[1]}".encode())
    start = len(net.wire)
    net.run(ALICE, alice.receive(fork, BOB, 0.5), 0.5)
    to_carol = [(d, m) for s, d, m in net.wire[start:] if s == ALICE]
    assert [m.split(b" ", 1)[0] for _, m in to_carol] == [b"ACK", b"BYE"]
    assert all(d == CAROL for d, _ in to_carol)
    ack, bye = (parse_message(m) for _, m in to_carol)
    assert ack.to_tag == "fork2tag" and bye.to_tag == "fork2tag" and ack.cseq[0] == 1
    # a retransmission of that 2xx is ACKed again, not hung up twice; the call with bob goes on
    start = len(net.wire)
    net.run(ALICE, alice.receive(fork, BOB, 0.7), 0.7)
    assert [m.split(b" ", 1)[0] for s, _, m in net.wire[start:] if s == ALICE] == [b"ACK"]
    assert alice.call is not None and alice.call.state is CallState.CONFIRMED
    assert alice.call.dialog is not None and alice.call.dialog.remote_tag == bob_tag
    assert not [e for e in net.take(ALICE) if isinstance(e, CallEnded | CallEstablished)]
    del carol


def test_glare_491_is_retried_after_the_rfc_waits() -> None:
    net = Net()
    alice = net.add_ua(UserAgent(UaConfig(user="alice", local=ALICE), rng=random.Random(1)))
    bob = net.add_ua(UserAgent(UaConfig(user="bob", local=BOB), rng=random.Random(2)))
    setup_call(net, alice, bob)
    hold_a, hold_b = OFFER.replace(b"30000", b"30002"), ANSWER.replace(b"31000", b"31002")
    a_inv = next(o for o in alice.reinvite(hold_a, now=1.0) if hasattr(o, "data"))
    b_inv = next(o for o in bob.reinvite(hold_b, now=1.0) if hasattr(o, "data"))
    # the two re-INVITEs cross: each side answers the other's with 491 (14.2)
    to_alice = bob.receive(a_inv.data, ALICE, 1.0)
    to_bob = alice.receive(b_inv.data, BOB, 1.0)
    net.run(BOB, to_alice, 1.0)
    net.run(ALICE, to_bob, 1.0)
    assert net.take(ALICE) == [] and net.take(BOB) == []  # no failure reported: a retry is scheduled
    a_retry, b_retry = alice.call.reinvite_retry_at, bob.call.reinvite_retry_at  # type: ignore[union-attr]
    assert a_retry is not None and 3.1 <= a_retry <= 5.0  # alice made the call: owns the Call-ID, 2.1-4 s
    assert b_retry is not None and 1.0 <= b_retry <= 3.0  # bob: 0-2 s
    t = net.advance(1.0, b_retry + 0.01, step=0.01)
    assert net.take(ALICE) == [OfferReceived(call_id=ANY, remote_sdp=hold_b)]
    net.run(ALICE, alice.answer(OFFER, now=t), t)
    assert net.take(BOB) == [CallUpdated(call_id=ANY, remote_sdp=OFFER)]
    assert net.take(ALICE) == [CallUpdated(call_id=ANY, remote_sdp=hold_b)]
    t = net.advance(t, a_retry + 0.01, step=0.01)
    assert net.take(BOB) == [OfferReceived(call_id=ANY, remote_sdp=hold_a)]
    net.run(BOB, bob.answer(ANSWER, now=t), t)
    assert net.take(ALICE) == [CallUpdated(call_id=ANY, remote_sdp=ANSWER)]
