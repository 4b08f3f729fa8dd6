"""RFC 3261 section 17 / RFC 6026 transactions driven by a fake clock (plain floats)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.message import Request, Response, make_response, parse_message
from leansip.sip.transaction import (
    Deliver,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Send,
    Terminated,
    Timeout,
    TransportError,
    client_transaction,
    response_destination,
    server_key,
    server_transaction,
)
from leansip.sip.txstate import TRANSITIONS, IllegalTransition, Kind, State, Timers, TransactionError
from leansip.sip.txtable import TooManyTransactions, TransactionTable

DEST = ("192.0.2.10", 5060)
SRC = ("198.51.100.7", 5062)

INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP proxy.example.com:5060;branch=z9hG4bKproxy1, "
    "SIP/2.0/UDP alice.example.com;branch=z9hG4bKalice1;received=10.0.0.1\r\n"
    "Max-Forwards: 69\r\n"
    "Route: <sip:p1.example.com;lr>\r\n"
    "Route: <sip:p2.example.com;lr>\r\n"
    "Record-Route: <sip:proxy.example.com;lr>\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "To: Bob <sip:bob@example.com>\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@pc33.example.com>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKabc",
    sent_by: str = "pc33.example.com:5060",
    to_tag: str | None = None,
    cseq_method: str | None = None,
    cseq: int = 1,
    uri: str = "sip:bob@example.com",
    extra_via: str = "",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by}{branch_param}\r\n"
        f"{extra_via}"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=ft1\r\n"
        f"To: {to}\r\n"
        "Call-ID: call-1@example.com\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: str | None = "uas1") -> Response:
    """A response as it would arrive from the network (serialized and parsed again)."""
    msg = parse_message(make_response(req, status, to_tag=to_tag).to_bytes())
    assert isinstance(msg, Response)
    return msg


def sends(actions: list) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def only(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def drive(txn, until: float) -> list[tuple[float, object]]:
    """Fire the transaction's timers exactly at their deadlines up to ``until``."""
    log: list[tuple[float, object]] = []
    while (at := txn.get_timer()) is not None and at <= until:
        for action in txn.handle_timer(at):
            log.append((at, action))
    return log


# --------------------------------------------------------------------------- timers


def test_timer_values_follow_rfc_3261_table_4_and_rfc_6026():
    t = Timers()
    assert (t.t1, t.t2, t.t4) == (0.5, 4.0, 5.0)
    assert t.a == t.e == t.g == 0.5
    assert t.b == t.f == t.h == t.l == t.m == 32.0
    assert (t.d(False), t.d(True)) == (32.0, 0.0)
    assert (t.i(False), t.i(True)) == (5.0, 0.0)
    assert (t.j(False), t.j(True)) == (32.0, 0.0)
    assert (t.k(False), t.k(True)) == (5.0, 0.0)
    slow = Timers(t1=1.0, t2=8.0, t4=10.0)
    assert slow.b == 64.0 and slow.d(False) == 64.0 and slow.k(False) == 10.0
    with pytest.raises(ValueError):
        Timers(t1=5.0, t2=4.0)


# --------------------------------------------------------------------------- INVITE client


def test_invite_client_retransmits_on_timer_a_and_times_out_on_timer_b():
    txn = InviteClientTransaction(request(), DEST)
    first = txn.start(0.0)
    assert first == [Send(data=txn.data, dest=DEST, transport="udp", transaction=txn)]
    assert txn.state is State.CALLING
    log = drive(txn, 100.0)
    send_times = [at for at, a in log if isinstance(a, Send)]
    assert send_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # A doubles, uncapped
    assert all(a.data == txn.data for _, a in log if isinstance(a, Send))
    ends = [(at, type(a)) for at, a in log if not isinstance(a, Send)]
    assert ends == [(32.0, Timeout), (32.0, Terminated)]
    assert only([a for _, a in log], Timeout)[0].timer == "B"
    assert txn.state is State.TERMINATED and txn.get_timer() is None


def test_invite_client_over_tcp_does_not_retransmit_but_still_times_out():
    txn = InviteClientTransaction(request(), DEST, "tcp")
    assert len(txn.start(0.0)) == 1
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(32.0, Timeout), (32.0, Terminated)]


def test_invite_client_provisional_stops_retransmissions_and_timer_b():
    req = request()
    txn = InviteClientTransaction(req, DEST)
    txn.start(0.0)
    drive(txn, 0.5)
    ringing = response(req, 180)
    assert txn.receive_response(ringing, 0.7) == [Deliver(message=ringing, transaction=txn)]
    assert txn.state is State.PROCEEDING
    assert txn.get_timer() is None  # no A, no B: the TU's Timer C guards Proceeding (16.6)
    again = response(req, 183)
    assert txn.receive_response(again, 1.0) == [Deliver(message=again, transaction=txn)]


def test_invite_client_non_2xx_generates_ack_and_absorbs_retransmissions_until_timer_d():
    inv = parse_message(INVITE.encode())
    assert isinstance(inv, Request)
    txn = InviteClientTransaction(inv, DEST)
    txn.start(0.0)
    busy = response(inv, 486, to_tag="busy-tag")
    actions = txn.receive_response(busy, 2.0)
    assert actions[0] == Deliver(message=busy, transaction=txn)
    ack_send = actions[1]
    assert isinstance(ack_send, Send) and ack_send.dest == DEST and len(actions) == 2
    assert txn.state is State.COMPLETED
    ack = parse_message(ack_send.data)
    assert isinstance(ack, Request)
    # RFC 3261 17.1.1.3
    assert ack.method == "ACK" and ack.uri == inv.uri
    assert ack.call_id == inv.call_id
    assert ack.header("from") == inv.header("from")
    assert ack.cseq == (314159, "ACK")
    assert ack.to_tag == "busy-tag"
    assert len(ack.vias) == 1 and ack.top_via.branch == "z9hG4bKproxy1"
    assert ack.top_via.sent_by == "proxy.example.com:5060"
    assert ack.header_values("route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.header("record-route") is None and ack.header("contact") is None
    assert ack.body == b"" and ack.header("content-length") == "0"
    assert ack.max_forwards == 69
    # a retransmitted 486 is not delivered again; the same ACK is re-sent
    again = txn.receive_response(response(inv, 486, to_tag="busy-tag"), 3.0)
    assert again == [Send(data=ack_send.data, dest=DEST, transport="udp", transaction=txn)]
    # no more INVITE retransmissions; Timer D ends it 32 s after the response
    assert txn.get_timer() == pytest.approx(34.0)
    assert txn.handle_timer(33.9) == []
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(34.0, Terminated)]


def test_invite_client_non_2xx_over_tcp_terminates_at_once_after_the_ack():
    req = request()
    txn = InviteClientTransaction(req, DEST, "tcp")
    txn.start(0.0)
    actions = txn.receive_response(response(req, 404), 1.0)
    assert [type(a) for a in actions] == [Deliver, Send, Terminated]
    assert txn.state is State.TERMINATED and txn.get_timer() is None


def test_invite_client_2xx_goes_to_accepted_and_passes_2xx_retransmissions_until_timer_m():
    req = request()
    txn = InviteClientTransaction(req, DEST)
    txn.start(0.0)
    ok = response(req, 200)
    assert txn.receive_response(ok, 1.0) == [Deliver(message=ok, transaction=txn)]  # no ACK: the TU's job
    assert txn.state is State.ACCEPTED
    ok2 = response(req, 200, to_tag="fork2")
    assert txn.receive_response(ok2, 2.0) == [Deliver(message=ok2, transaction=txn)]
    assert txn.receive_response(response(req, 180), 2.5) == []
    assert txn.receive_response(response(req, 500), 2.6) == []
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(33.0, Terminated)]


def test_invite_client_rejects_other_methods_and_missing_branch():
    with pytest.raises(TransactionError):
        InviteClientTransaction(request("OPTIONS"), DEST)
    with pytest.raises(TransactionError):
        InviteClientTransaction(request(branch=None), DEST)
    with pytest.raises(TransactionError):
        client_transaction(request("ACK"), DEST)


def test_client_illegal_moves_raise_the_typed_error():
    req = request()
    txn = InviteClientTransaction(req, DEST)
    with pytest.raises(IllegalTransition) as info:
        txn.receive_response(response(req, 200), 0.0)
    assert info.value.state is State.IDLE and info.value.kind is Kind.INVITE_CLIENT
    txn.start(0.0)
    with pytest.raises(IllegalTransition):
        txn.start(0.1)
    txn.transport_error(0.2)
    with pytest.raises(IllegalTransition):
        txn.receive_response(response(req, 200), 0.3)
    assert txn.handle_timer(1000.0) == []  # nothing armed, nothing to do


def test_transport_error_reports_and_terminates():
    txn = NonInviteClientTransaction(request("OPTIONS"), DEST)
    txn.start(0.0)
    actions = txn.transport_error(0.1, "connection refused")
    assert actions == [
        TransportError(transaction=txn, reason="connection refused"),
        Terminated(transaction=txn),
    ]
    assert txn.get_timer() is None


# --------------------------------------------------------------------------- non-INVITE client


def test_non_invite_client_backs_off_to_t2_and_times_out_on_timer_f():
    txn = NonInviteClientTransaction(request("OPTIONS"), DEST)
    txn.start(0.0)
    log = drive(txn, 100.0)
    send_times = [at for at, a in log if isinstance(a, Send)]
    assert send_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [(at, type(a)) for at, a in log if not isinstance(a, Send)] == [
        (32.0, Timeout),
        (32.0, Terminated),
    ]
    assert only([a for _, a in log], Timeout)[0].timer == "F"


def test_non_invite_client_in_proceeding_retransmits_every_t2():
    req = request("REGISTER")
    txn = NonInviteClientTransaction(req, DEST)
    txn.start(0.0)
    drive(txn, 0.5)  # one retransmission; next E due at 1.5
    trying = response(req, 100, to_tag=None)
    assert txn.receive_response(trying, 0.6) == [Deliver(message=trying, transaction=txn)]
    assert txn.state is State.PROCEEDING
    log = drive(txn, 40.0)
    send_times = [at for at, a in log if isinstance(a, Send)]
    # the pending E (1.5) fires, then every T2
    assert send_times == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert txn.state is State.TERMINATED


def test_non_invite_client_final_response_then_timer_k_absorbs_retransmissions():
    req = request("BYE")
    txn = NonInviteClientTransaction(req, DEST)
    txn.start(0.0)
    ok = response(req, 200)
    assert txn.receive_response(ok, 0.2) == [Deliver(message=ok, transaction=txn)]
    assert txn.state is State.COMPLETED
    assert txn.receive_response(response(req, 200), 1.0) == []
    assert txn.get_timer() == pytest.approx(5.2)
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(pytest.approx(5.2), Terminated)]


def test_end_timers_on_a_grid_fire_on_its_next_multiple_and_retransmissions_stay_exact():
    """Timers.end_grid: Timer F/K (and every ending timer) is rounded up to the grid, never down; Timer E
    (a retransmission) keeps its exact interval."""
    timers = Timers(end_grid=1.0)
    req = request("BYE")
    txn = NonInviteClientTransaction(req, DEST, timers=timers)
    txn.start(10.3)
    assert txn.get_timer() == pytest.approx(10.8)  # Timer E: exact
    assert txn._end_at == pytest.approx(43.0)  # Timer F: 10.3 + 32 = 42.3, on the grid 43
    txn.receive_response(response(req, 200), 10.4)
    assert txn.get_timer() == pytest.approx(16.0)  # Timer K: 10.4 + 5 = 15.4 -> 16
    assert [(at, type(a)) for at, a in drive(txn, 100.0)] == [(pytest.approx(16.0), Terminated)]
    exact = NonInviteClientTransaction(request("BYE"), DEST, timers=Timers(end_grid=2.5))
    exact.start(5.0)
    assert exact._end_at == pytest.approx(37.5)  # 37.0 -> the next multiple of 2.5
    with pytest.raises(ValueError):
        Timers(end_grid=-1.0)


def test_non_invite_client_over_tcp_terminates_on_the_final_response():
    req = request("OPTIONS")
    txn = NonInviteClientTransaction(req, DEST, "TLS")
    txn.start(0.0)
    assert txn.get_timer() == 32.0  # only Timer F
    actions = txn.receive_response(response(req, 404), 0.1)
    assert [type(a) for a in actions] == [Deliver, Terminated]


def test_client_uses_the_bytes_it_was_given():
    txn = client_transaction(request("OPTIONS"), DEST, data=b"OPTIONS spliced")
    assert isinstance(txn, NonInviteClientTransaction)
    assert txn.start(0.0)[0].data == b"OPTIONS spliced"


# --------------------------------------------------------------------------- INVITE server


def test_invite_server_trying_then_retransmission_resends_last_provisional():
    req = request()
    txn = InviteServerTransaction(req, SRC)
    assert txn.state is State.PROCEEDING
    trying = txn.send_trying(0.0)
    sent = parse_message(trying[0].data)
    assert isinstance(sent, Response) and sent.status == 100 and sent.to_tag is None
    assert txn.receive_request(request(), 0.5) == trying
    ringing = txn.send_response(response(req, 180), 1.0)
    assert txn.receive_request(request(), 1.5) == ringing
    assert txn.get_timer() is None
    assert txn.receive_request(request("ACK"), 1.6) == []  # stray ACK before any final: absorbed


def test_invite_server_non_2xx_retransmits_on_timer_g_until_timer_h():
    req = request()
    txn = InviteServerTransaction(req, SRC)
    final = txn.send_response(response(req, 486), 0.0)
    assert txn.state is State.COMPLETED
    log = drive(txn, 100.0)
    send_times = [at for at, a in log if isinstance(a, Send)]
    assert send_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # G capped at T2
    assert all(a.data == final[0].data for _, a in log if isinstance(a, Send))
    assert [(at, type(a)) for at, a in log if not isinstance(a, Send)] == [
        (32.0, Timeout),
        (32.0, Terminated),
    ]
    assert only([a for _, a in log], Timeout)[0].timer == "H"


def test_invite_server_ack_confirms_then_timer_i_terminates():
    req = request()
    txn = InviteServerTransaction(req, SRC)
    final = txn.send_response(response(req, 603), 0.0)
    drive(txn, 1.6)  # G at 0.5 and 1.5
    assert txn.receive_request(request(), 2.0) == final  # INVITE retransmission: resend the final
    assert txn.receive_request(request("ACK", to_tag="uas1"), 2.5) == []
    assert txn.state is State.CONFIRMED
    assert txn.receive_request(request("ACK", to_tag="uas1"), 3.0) == []  # ACK retransmission absorbed
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(7.5, Terminated)]  # T4 after the ACK, no more G


def test_invite_server_over_tcp_has_no_timer_g_and_ack_terminates_at_once():
    req = request()
    txn = InviteServerTransaction(req, SRC, "tcp")
    assert txn.dest == SRC
    txn.send_response(response(req, 486), 0.0)
    assert txn.get_timer() == 32.0  # Timer H only
    actions = txn.receive_request(request("ACK", to_tag="uas1"), 1.0)
    assert actions == [Terminated(transaction=txn)]


def test_invite_server_2xx_accepted_absorbs_invites_passes_2xx_and_ack_until_timer_l():
    req = request()
    txn = InviteServerTransaction(req, SRC)
    txn.send_trying(0.0)
    ok = txn.send_response(response(req, 200), 1.0)
    assert txn.state is State.ACCEPTED
    assert txn.receive_request(request(), 1.5) == []  # RFC 6026: absorbed, not answered
    assert txn.send_response(response(req, 200), 2.0) == ok  # the TU's (proxy's) 2xx retransmission
    ack = request("ACK", to_tag="uas1")
    assert txn.receive_request(ack, 2.1) == [Deliver(message=ack, transaction=txn)]
    with pytest.raises(IllegalTransition):
        txn.send_response(response(req, 180), 2.2)
    with pytest.raises(IllegalTransition):
        txn.send_response(response(req, 486), 2.3)
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(33.0, Terminated)]


def test_invite_server_refuses_responses_after_a_non_2xx_final():
    req = request()
    txn = InviteServerTransaction(req, SRC)
    txn.send_response(response(req, 486), 0.0)
    for status in (180, 200, 486):
        with pytest.raises(IllegalTransition):
            txn.send_response(response(req, status), 0.1)
    with pytest.raises(ValueError):
        txn.send_response(Response(700), 0.1)


# --------------------------------------------------------------------------- non-INVITE server


def test_non_invite_server_states_and_timer_j():
    req = request("REGISTER")
    txn = NonInviteServerTransaction(req, SRC)
    assert txn.state is State.TRYING
    assert txn.receive_request(request("REGISTER"), 0.1) == []  # nothing to resend yet
    prov = txn.send_response(response(req, 100, to_tag=None), 0.2)
    assert txn.state is State.PROCEEDING
    assert txn.receive_request(request("REGISTER"), 0.3) == prov
    final = txn.send_response(response(req, 200), 1.0)
    assert txn.state is State.COMPLETED
    assert txn.receive_request(request("REGISTER"), 2.0) == final
    with pytest.raises(IllegalTransition):
        txn.send_response(response(req, 200), 2.0)
    with pytest.raises(IllegalTransition):
        txn.send_response(response(req, 100), 2.0)
    log = drive(txn, 100.0)
    assert [(at, type(a)) for at, a in log] == [(33.0, Terminated)]


def test_non_invite_server_over_tcp_terminates_with_the_final_response():
    req = request("OPTIONS")
    txn = NonInviteServerTransaction(req, SRC, "ws")
    actions = txn.send_response(response(req, 200), 0.0)
    assert [type(a) for a in actions] == [Send, Terminated]
    assert actions[0].dest == SRC


def test_server_transaction_factory_and_ack():
    assert isinstance(server_transaction(request(), SRC), InviteServerTransaction)
    assert isinstance(server_transaction(request("CANCEL"), SRC), NonInviteServerTransaction)
    with pytest.raises(TransactionError):
        server_transaction(request("ACK"), SRC)


def test_response_destination_rfc_3261_18_2_2_and_rfc_3581():
    def via_of(text: str):
        return request(sent_by=text, branch="z9hG4bK1").top_via

    assert response_destination(via_of("pc33.example.com:5070"), SRC, "udp") == (SRC[0], 5070)
    assert response_destination(via_of("pc33.example.com"), SRC, "udp") == (SRC[0], 5060)
    rport = request(branch="z9hG4bK1;rport").top_via
    assert response_destination(rport, SRC, "udp") == SRC
    maddr = request(branch="z9hG4bK1;maddr=239.1.1.1").top_via
    assert response_destination(maddr, SRC, "udp") == ("239.1.1.1", 5060)
    assert response_destination(via_of("pc33.example.com:5070"), SRC, "tcp") == SRC


# --------------------------------------------------------------------------- the table: matching


def test_table_creates_server_transactions_and_absorbs_retransmissions():
    table = TransactionTable()
    inv = request()
    actions = table.receive_request(inv, SRC, "udp", 0.0, send_trying=True)
    txn = actions[0].transaction
    assert isinstance(txn, InviteServerTransaction)
    assert actions[0] == Deliver(message=inv, transaction=txn)
    assert parse_message(actions[1].data).status == 100  # type: ignore[union-attr]
    assert len(table) == 1
    retrans = table.receive_request(request(), SRC, "udp", 0.4)
    assert retrans == [actions[1]]  # 100 re-sent, not delivered again
    assert table.match_request(request()) is txn


def test_table_matching_uses_branch_sent_by_and_method():
    table = TransactionTable()
    table.receive_request(request(), SRC, "udp", 0.0)
    assert table.match_request(request(branch="z9hG4bKother")) is None
    assert table.match_request(request(sent_by="evil.example.com:5060")) is None
    assert table.match_request(request(sent_by="PC33.example.com:5060")) is not None  # host is case-blind
    assert table.match_request(request("OPTIONS")) is None


def test_table_ack_for_non_2xx_matches_the_invite_and_ack_for_2xx_goes_to_the_tu():
    table = TransactionTable()
    (deliver,) = table.receive_request(request(), SRC, "udp", 0.0)
    txn = deliver.transaction
    txn.send_response(response(request(), 486), 0.1)
    ack = request("ACK", to_tag="uas1")
    assert table.match_request(ack) is txn
    assert table.receive_request(ack, SRC, "udp", 0.2) == []
    assert txn.state is State.CONFIRMED
    # the ACK of a 2xx has its own branch (RFC 3261 13.2.2.4): no transaction
    ack2 = request("ACK", branch="z9hG4bKack2xx", to_tag="uas1")
    assert table.receive_request(ack2, SRC, "udp", 0.3) == [Deliver(message=ack2, transaction=None)]
    assert len(table) == 1


def test_table_cancel_has_its_own_transaction_and_finds_its_invite():
    table = TransactionTable()
    (deliver,) = table.receive_request(request(), SRC, "udp", 0.0)
    invite_txn = deliver.transaction
    cancel = request("CANCEL")
    (cdeliver,) = table.receive_request(cancel, SRC, "udp", 1.0)
    cancel_txn = cdeliver.transaction
    assert isinstance(cancel_txn, NonInviteServerTransaction) and cancel_txn is not invite_txn
    assert table.find_cancel_target(cancel) is invite_txn
    assert table.find_cancel_target(request("CANCEL", branch="z9hG4bKnope")) is None
    assert len(table) == 2
    assert server_key(cancel)[0] != server_key(request())[0]


def test_table_rfc_2543_fallback_without_magic_cookie():
    table = TransactionTable()
    legacy = request(branch="1234")  # RFC 2543 peers use any branch, or none
    (deliver,) = table.receive_request(legacy, SRC, "udp", 0.0)
    txn = deliver.transaction
    assert txn.legacy
    assert table.match_request(request(branch="1234")) is txn
    assert table.match_request(request(branch="1234", cseq=2)) is None
    assert table.match_request(request(branch="1234", uri="sip:carol@example.com")) is None
    assert table.match_request(request(branch="1234", to_tag="x")) is None  # INVITE had no To tag
    txn.send_response(response(legacy, 486, to_tag="resp-tag"), 0.1)
    assert table.match_request(request("ACK", branch="1234", to_tag="resp-tag")) is txn
    assert table.match_request(request("ACK", branch="1234", to_tag="other")) is None
    cancel = request("CANCEL", branch="1234")
    assert table.find_cancel_target(cancel) is txn
    # no branch at all
    nobranch = request("OPTIONS", branch=None)
    (d2,) = table.receive_request(nobranch, SRC, "udp", 0.2)
    assert table.match_request(request("OPTIONS", branch=None)) is d2.transaction


def test_table_matches_responses_by_branch_and_cseq_method():
    table = TransactionTable()
    inv = request()
    invite_txn = table.create_client(inv, DEST)
    invite_txn.start(0.0)
    cancel = request("CANCEL")
    cancel_txn = table.create_client(cancel, DEST)
    cancel_txn.start(1.0)
    ok_cancel = response(cancel, 200)
    assert table.receive_response(ok_cancel, 1.1) == [Deliver(message=ok_cancel, transaction=cancel_txn)]
    terminated = response(inv, 487)
    assert table.receive_response(terminated, 1.2)[0] == Deliver(message=terminated, transaction=invite_txn)
    stray = response(request(branch="z9hG4bKunknown"), 200)
    assert table.receive_response(stray, 1.3) == [Deliver(message=stray, transaction=None)]
    with pytest.raises(TransactionError):
        table.create_client(request(), DEST)  # same branch and method


# --------------------------------------------------------------------------- the table: timers and bound


def test_table_single_heap_fires_timers_of_all_transactions_in_order():
    table = TransactionTable()
    assert table.next_deadline() is None and table.handle_timers(10.0) == []
    a = table.create_client(request(branch="z9hG4bKa"), DEST)
    b = table.create_client(request("OPTIONS", branch="z9hG4bKb"), DEST)
    a.start(0.0)
    b.start(0.2)
    assert table.next_deadline() == 0.5
    fired = table.handle_timers(0.5)
    assert [x.transaction for x in fired] == [a]
    assert table.next_deadline() == pytest.approx(0.7)
    fired = table.handle_timers(0.7)
    assert [x.transaction for x in fired] == [b]
    # a provisional response stops a's timers: the stale heap entry must not surface
    a.receive_response(response(a.request, 180), 0.8)
    assert table.next_deadline() == pytest.approx(1.7)  # b's next E (0.7 + 1.0)
    # run everything to the end: b times out, a is left alone in Proceeding
    now = 0.8
    timeouts = []
    while (at := table.next_deadline()) is not None:
        assert at >= now
        now = at
        timeouts += only(table.handle_timers(now), Timeout)
    assert [t.transaction for t in timeouts] == [b] and now == pytest.approx(32.2)
    assert table.transactions() == [a]


def test_table_drops_terminated_transactions():
    table = TransactionTable()
    req = request("OPTIONS")
    txn = table.create_client(req, DEST, "tcp")
    txn.start(0.0)
    table.receive_response(response(req, 200), 0.1)  # reliable: Timer K is 0
    assert len(table) == 0 and table.next_deadline() is None
    stxn = table.create_server(request("MESSAGE"), SRC)
    stxn.transport_error(0.2)
    assert len(table) == 0


def test_table_bound_raises_too_many_transactions_until_one_ends():
    table = TransactionTable(max_transactions=2)
    table.receive_request(request("OPTIONS", branch="z9hG4bK1"), SRC, "udp", 0.0)
    c = table.create_client(request("OPTIONS", branch="z9hG4bK2"), DEST)
    with pytest.raises(TooManyTransactions) as info:
        table.receive_request(request("OPTIONS", branch="z9hG4bK3"), SRC, "udp", 0.0)
    assert info.value.limit == 2
    with pytest.raises(TooManyTransactions):
        table.create_client(request("OPTIONS", branch="z9hG4bK4"), DEST)
    # retransmissions of known transactions still get through
    assert table.receive_request(request("OPTIONS", branch="z9hG4bK1"), SRC, "udp", 0.1) == []
    c.start(0.0)
    c.transport_error(0.1)
    assert len(table) == 1
    table.receive_request(request("OPTIONS", branch="z9hG4bK3"), SRC, "udp", 0.2)
    assert len(table) == 2


def test_table_drops_stale_heap_entries_as_their_time_comes():
    """Cancelled timers leave stale heap entries; they are dropped when they reach the top of the heap, one at
    a time, and the heap is never rebuilt (a rebuild is one O(n) pause for every message behind it)."""
    table = TransactionTable()
    txns = []
    for i in range(3000):
        txn = table.create_client(request(branch=f"z9hG4bK{i}"), DEST)
        txn.start(0.0)
        txns.append(txn)
    assert len(table._heap) == 3000
    heap = table._heap
    for txn in txns:  # each 180 cancels Timers A and B, leaving a stale entry behind
        txn.receive_response(response(txn.request, 180), 0.1)
    assert table._heap is heap and len(heap) == 3000  # no rebuild
    assert table.next_deadline() is None and len(table._heap) == 0
    assert table.handle_timers(100.0) == []
    assert len(table) == 3000


# --------------------------------------------------------------------------- the table of transitions


def test_every_live_state_accepts_every_peer_event():
    """The network may send anything: peer-driven events never hit IllegalTransition in a live state."""
    peer_events = {
        Kind.INVITE_CLIENT: ("RECV_1XX", "RECV_2XX", "RECV_FINAL"),
        Kind.NON_INVITE_CLIENT: ("RECV_1XX", "RECV_2XX", "RECV_FINAL"),
        Kind.INVITE_SERVER: ("RECV_REQUEST", "RECV_ACK"),
        Kind.NON_INVITE_SERVER: ("RECV_REQUEST",),
    }
    for kind, table in TRANSITIONS.items():
        states = {state for state, _ in table} - {State.IDLE}
        for state in states:
            for name in peer_events[kind]:
                assert any(s is state and e.name == name for s, e in table), (kind, state, name)
        assert not any(s is State.TERMINATED for s, _ in table)


# --------------------------------------------------------------------------- random sequences


client_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.just(0)),
        st.tuples(st.just("resp"), st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 500, 603])),
        st.tuples(st.just("timer"), st.integers(0, 40_000)),
        st.tuples(st.just("error"), st.just(0)),
    ),
    max_size=40,
)
server_ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([100, 180, 200, 202, 302, 404, 486, 500, 603])),
        st.tuples(st.just("trying"), st.just(0)),
        st.tuples(st.just("again"), st.just(0)),
        st.tuples(st.just("ack"), st.just(0)),
        st.tuples(st.just("timer"), st.integers(0, 40_000)),
        st.tuples(st.just("error"), st.just(0)),
    ),
    max_size=40,
)


def _check_run(table: TransactionTable, txn, log: list) -> None:
    ends = only(log, Terminated)
    assert len(ends) <= 1
    if ends:
        assert log.index(ends[0]) == len(log) - 1  # nothing after Terminated
        assert txn.state is State.TERMINATED and len(table) == 0
    else:
        assert txn.state is not State.TERMINATED
        assert table.next_deadline() == txn.get_timer()


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "OPTIONS"]), transport=st.sampled_from(["udp", "tcp"]), ops=client_ops
)
def test_random_client_sequences_only_raise_illegal_transition(method, transport, ops):
    table = TransactionTable()
    req = request(method)
    txn = table.create_client(req, DEST, transport)
    now = 0.0
    log: list = []
    for op, arg in ops:
        try:
            if op == "start":
                log += txn.start(now)
            elif op == "resp":
                if txn.state is State.TERMINATED:
                    # after termination the table treats the response as stray
                    assert table.receive_response(response(req, arg), now)[0].transaction is None
                log += txn.receive_response(response(req, arg), now)
            elif op == "timer":
                now += arg / 1000
                log += table.handle_timers(now)
            else:
                log += txn.transport_error(now)
        except IllegalTransition:
            pass
        _check_run(table, txn, log)
        if txn.state is not State.TERMINATED and txn.state is not State.IDLE:
            at = txn.get_timer()
            assert at is None or at > now


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["INVITE", "MESSAGE"]), transport=st.sampled_from(["udp", "tls"]), ops=server_ops
)
def test_random_server_sequences_only_raise_illegal_transition(method, transport, ops):
    table = TransactionTable()
    req = request(method)
    (first,) = table.receive_request(req, SRC, transport, 0.0)
    txn = first.transaction
    now = 0.0
    log: list = []
    for op, arg in ops:
        try:
            if op == "send":
                log += txn.send_response(response(req, arg, to_tag=None if arg == 100 else "uas1"), now)
            elif op == "trying":
                if isinstance(txn, InviteServerTransaction):
                    log += txn.send_trying(now)
            elif op == "again":
                log += txn.receive_request(request(method), now)
            elif op == "ack":
                if isinstance(txn, InviteServerTransaction):
                    log += txn.receive_request(request("ACK", to_tag="uas1"), now)
            elif op == "timer":
                now += arg / 1000
                log += table.handle_timers(now)
            else:
                log += txn.transport_error(now)
        except IllegalTransition:
            pass
        _check_run(table, txn, log)
        if txn.state is State.COMPLETED:
            assert txn.last_response is not None


def test_deadline_queue_gives_entries_in_deadline_then_insertion_order() -> None:
    from leansip.sip.txtable import DeadlineQueue

    q: DeadlineQueue[str] = DeadlineQueue()
    for at, name in ((2.0, "b1"), (1.0, "a1"), (2.0, "b2"), (1.5, "x"), (1.0, "a2")):
        q.add(at, name)
    assert len(q) == 5 and q.first() == (1.0, ["a1", "a2"])
    assert q.pop_due(0.9) is None
    assert q.pop_due(1.6) == ["a1", "a2"] and q.pop_due(1.6) == ["x"] and q.pop_due(1.6) is None
    first = q.first()
    assert first is not None and first[0] == 2.0
    q.drop_front(1)  # "b1" was stale
    assert len(q) == 1 and q.first() == (2.0, ["b2"])
    q.drop_front(1)
    assert len(q) == 0 and q.first() is None and q.pop_due(99.0) is None


def test_deadline_queue_an_earlier_deadline_after_stale_entries_were_dropped() -> None:
    from leansip.sip.txtable import DeadlineQueue

    q: DeadlineQueue[str] = DeadlineQueue()
    q.add(2.0, "b1")
    q.add(2.0, "b2")
    q.drop_front(1)  # "b1" stale
    assert q.earliest == 2.0 and q.front[q.front_start:] == ["b2"]
    q.add(1.0, "a")  # the old earliest goes back among the others, without its dropped entry
    assert len(q) == 2 and q.first() == (1.0, ["a"])
    assert q.pop_due(1.0) == ["a"] and q.first() == (2.0, ["b2"]) and q.pop_due(5.0) == ["b2"]
    assert q.earliest == float("inf") and len(q) == 0
    for never in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            q.add(never, "x")
    assert len(q) == 0


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from([0.5, 1.0, 1.25, 2.0, 3.0, 32.0]), st.sampled_from(["add", "pop", "drop"])),
                max_size=60))
def test_deadline_queue_pops_what_a_heap_of_tuples_pops(ops: list[tuple[float, str]]) -> None:
    """Against the structure it replaced (a heap of (deadline, seq, entry)): adds, drops of the first entry (a
    stale one), and pops at rising times."""
    import heapq

    from leansip.sip.txtable import DeadlineQueue

    q: DeadlineQueue[int] = DeadlineQueue()
    ref: list[tuple[float, int]] = []
    now = 0.0
    got: list[int] = []
    want: list[int] = []
    for seq, (delay, action) in enumerate(ops):
        q.add(now + delay, seq)
        heapq.heappush(ref, (now + delay, seq))
        if action == "drop":
            q.drop_front(1)
            heapq.heappop(ref)
        elif action == "pop":
            now += 1.0
            while (due := q.pop_due(now)) is not None:
                got.extend(due)
            while ref and ref[0][0] <= now:
                want.append(heapq.heappop(ref)[1])
        assert got == want and len(q) == len(ref)
        assert q.earliest == (ref[0][0] if ref else float("inf"))
