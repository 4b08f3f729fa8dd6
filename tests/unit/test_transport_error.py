"""RFC 3261 16.9: a transport error on a forwarded request is answered at once, as if the branch said 503."""

from __future__ import annotations

from tests.unit.proxy_kit import ALICE, Out, feed, make_core, parse_out, registered, request, requests
from tests.unit.test_stateful_proxy import BOB_URI

BOB1 = ("192.0.2.21", 5070)


def _up(outs: list[Out]) -> list[int]:
    return [o.status for o in outs if not o.is_request and o.dest == ALICE]


def test_transport_error_on_the_only_branch_answers_500_at_once() -> None:
    core = make_core()
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", BOB_URI), ALICE, 1.0)
    fwd = [o for o in requests(out, "INVITE") if o.dest == BOB1]
    assert len(fwd) == 1
    # the stream transport reports that no connection to the target could be opened
    up = parse_out(core.transport_error(fwd[0].send.data, 1.01, "connection refused"))
    assert _up(up) == [500]  # 503 from the failed branch becomes 500 upstream (16.7 step 6)


def test_transport_error_for_an_unknown_message_is_ignored() -> None:
    core = make_core()
    assert core.transport_error(b"garbage", 1.0) == []
    assert core.transport_error(request("OPTIONS", BOB_URI), 1.0) == []


def test_stateless_proxy_has_nothing_to_undo() -> None:
    core = make_core(stateful=False)
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", BOB_URI), ALICE, 1.0)
    fwd = [o for o in requests(out, "INVITE") if o.dest == BOB1]
    assert core.transport_error(fwd[0].send.data, 1.0) == []
