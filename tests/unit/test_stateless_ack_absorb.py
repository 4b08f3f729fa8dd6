"""The stateless proxy absorbs the ACK for a final response it generated itself (RFC 3261 17.2.1, 16.11).

Found with baresip behind ``leansip serve --stateless --auth``: the caller's ACK for our 407 was routed to the
registered callee (which had never seen that transaction). The proxy's own To tag is a function of the
request (``ServerCore.to_tag``), so an ACK carrying it belongs to one of our replies, as Kamailio's sl
module recognises its own tag.
"""

from __future__ import annotations

from leansip.server.core import ServerCore
from leansip.sip.digest import build_authorization
from leansip.sip.message import Response
from tests.unit.proxy_kit import ALICE, BOB1, feed, make_core, only, register, request, requests, responses


def _bind_bob(core: ServerCore) -> None:
    first = only(feed(core, register("bob", BOB1), BOB1, 0.0))
    assert first.status == 401
    creds = build_authorization(first.msg.header_lines("www-authenticate")[0], "REGISTER", "sip:leansip", "bob",
                                "bob")
    assert only(feed(core, register("bob", BOB1, cseq=2, extra=[("Authorization", creds)]), BOB1, 0.0)).status == 200


def _challenge(core: ServerCore, call_id: str) -> str:
    """Send an INVITE without credentials; return the To tag of the proxy's 407."""
    outs = feed(core, request("INVITE", "sip:bob@leansip", call_id=call_id), ALICE, 0.0)
    assert responses(outs) == [407], outs
    resp = outs[0].msg
    assert isinstance(resp, Response)
    assert resp.to_tag is not None
    return resp.to_tag


def test_ack_for_own_407_is_not_forwarded() -> None:
    core = make_core(stateful=False, auth=True)
    _bind_bob(core)
    tag = _challenge(core, "c407@test")
    ack = request("ACK", "sip:bob@leansip", call_id="c407@test", to_tag=tag, cseq=1)
    assert feed(core, ack, ALICE, 0.1) == []
    assert core.stats.drops == {"ACK for our reply": 1}  # counted under its whole reason (/api/stats)


def test_ack_with_callee_tag_is_still_forwarded() -> None:
    """A 2xx ACK (the callee's tag, along our Record-Route) must still go through."""
    core = make_core(stateful=False, auth=True)
    _bind_bob(core)
    _challenge(core, "c2xx@test")
    ack = request("ACK", f"sip:bob@{BOB1[0]}:{BOB1[1]}", call_id="c2xx@test", to_tag="callee1", cseq=2,
                  extra=[("Route", "<sip:10.0.0.1:5060;lr>")])
    assert [o.dest for o in requests(feed(core, ack, ALICE, 0.1), "ACK")] == [BOB1]
