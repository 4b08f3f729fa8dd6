"""The phone's STUN client with a fake clock: first query, retransmissions, mapping, refresh, pause, spoofing."""

from __future__ import annotations

import pytest

from leansip.media.stun import StunClass, StunMessage, binding_success, parse_message
from leansip.ua.stun_client import StunClient

SERVER = ("192.0.2.10", 3478)
PUBLIC = ("203.0.113.7", 40000)


def answer(request: bytes, mapped: tuple[str, int] = PUBLIC) -> bytes:
    return binding_success(parse_message(request), mapped).serialize(fingerprint=True)


def test_first_query_then_mapping_then_refresh_after_30s() -> None:
    client = StunClient(SERVER)
    changes: list[tuple[str, int] | None] = []
    client.on_change = changes.append
    [req] = client.start(100.0)
    msg = parse_message(req)
    assert msg.message_class == StunClass.REQUEST
    assert client.state == "querying"
    assert client.receive(answer(req), SERVER, 100.2)
    assert client.mapped == PUBLIC and changes == [PUBLIC]
    assert client.state == "mapped"
    assert client.next_deadline() == pytest.approx(130.2)
    assert client.handle_timer(130.1) == []
    [again] = client.handle_timer(130.2)
    assert parse_message(again).transaction_id != msg.transaction_id  # a new transaction
    assert client.receive(answer(again), SERVER, 130.3)
    assert changes == [PUBLIC]  # unchanged mapping: no second notification
    assert client.queries == 2


def test_retransmits_on_rfc5389_schedule_then_times_out_and_clears_mapping() -> None:
    client = StunClient(SERVER)
    client.mapped = PUBLIC  # as if learned earlier
    [req] = client.start(0.0)
    sent_at = [0.0]
    now = 0.0
    while (deadline := client.next_deadline()) is not None and client.state == "querying":
        now = deadline
        out = client.handle_timer(now)
        if out:
            assert out == [req]  # the same bytes, same transaction id
            sent_at.append(now)
    # RFC 5389 7.2.1: sends at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5, failure at 39.5
    assert sent_at == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert now == pytest.approx(39.5)
    assert client.mapped is None and client.failures == 1 and client.state == "failed"
    assert client.next_deadline() == pytest.approx(69.5)  # tries again after the refresh interval


def test_answers_from_elsewhere_or_with_another_id_are_ignored() -> None:
    client = StunClient(SERVER)
    [req] = client.start(0.0)
    assert client.receive(answer(req), ("198.51.100.1", 3478), 0.1)  # STUN, consumed, but not trusted
    assert client.mapped is None
    stranger = binding_success(StunMessage(), ("198.51.100.99", 1)).serialize()
    assert client.receive(stranger, SERVER, 0.1)
    assert client.mapped is None and client.state == "querying"
    assert not client.receive(b"\x80\x00" + bytes(30), SERVER, 0.1)  # RTP is not STUN: not ours
    assert client.receive(answer(req), SERVER, 0.2)
    assert client.mapped == PUBLIC


def test_error_response_counts_as_failure() -> None:
    client = StunClient(SERVER)
    [req] = client.start(0.0)
    error = StunMessage(message_class=StunClass.ERROR, transaction_id=parse_message(req).transaction_id)
    error.add("ERROR-CODE", (400, "Bad Request"))
    assert client.receive(error.serialize(), SERVER, 0.1)
    assert client.mapped is None and client.failures == 1


def test_pause_stops_refresh_and_resume_queries_at_once() -> None:
    client = StunClient(SERVER, refresh=30.0)
    [req] = client.start(0.0)
    client.receive(answer(req), SERVER, 0.1)
    client.pause()
    assert client.next_deadline() is None and client.state == "paused"
    assert client.handle_timer(1000.0) == []
    [again] = client.resume(1000.0)
    assert client.state == "querying"
    client.receive(answer(again, ("203.0.113.7", 40002)), SERVER, 1000.1)
    assert client.mapped == ("203.0.113.7", 40002)
    assert client.resume(1001.0) == []  # not paused: nothing to do
