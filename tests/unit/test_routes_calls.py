"""Route scripts and issue 22: ``ctx.relay(gateways="pstn")`` with failover inside the transaction, a failure
handler moving on to another set, the script's ``ctx.cdr`` fields on the call's record, and the mistakes a
script can make with them (through leansip.testing: the real core, no sockets, a fake clock)."""

from __future__ import annotations

import pytest

from leansip.routes import Routes
from leansip.testing import RouteTest

SETS = {
    "pstn": {"policy": "priority", "timeout": 2.0, "destinations": [
        {"address": "192.0.2.51:5060", "priority": 1}, {"address": "192.0.2.52:5060", "priority": 2}]},
    "backup": {"destinations": ["192.0.2.61:5060"]},
}


def _script() -> Routes:
    routes = Routes()

    @routes.request("INVITE")
    def call(req, ctx):  # type: ignore[no-untyped-def]
        ctx.cdr["account"] = "acme"
        if (req.ruri.user or "").startswith("+"):
            return ctx.relay(gateways="pstn", on_failure=backup)
        ctx.relay(ctx.lookup())

    def backup(req, ctx, response):  # type: ignore[no-untyped-def]
        ctx.cdr["route"] = f"backup after {response.status}"
        ctx.relay(gateways="backup")

    return routes


def test_a_script_relays_to_a_gateway_set_and_it_fails_over_within_the_transaction() -> None:
    t = RouteTest(_script(), gateways=SETS, calls=True)
    call = t.invite("sip:+15551234@leansip")
    assert [r.dest for r in call.relayed] == [("192.0.2.51", 5060)]
    call.relayed[0].respond(503)  # the first gateway is overloaded: the next one, same transaction
    assert [r.dest for r in call.relayed] == [("192.0.2.51", 5060), ("192.0.2.52", 5060)]
    assert call.status is None  # the caller heard nothing final
    call.relayed[1].respond(200)
    assert call.status == 200
    inv = call.request
    bye = t.send_text(f"BYE sip:+15551234@192.0.2.52:5060 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKb1"
                      f";rport\nMax-Forwards: 70\nRoute: <sip:192.0.2.1:5060;lr>\nFrom: {inv.header('from')}\n"
                      f"To: {inv.header('to')};tag=callee2\nCall-ID: {inv.call_id}\nCSeq: 3 BYE\n\n")
    assert bye.relayed and bye.relayed[0].dest == ("192.0.2.52", 5060)
    bye.relayed[0].respond(200)
    (record,) = t.records()
    assert (record.status, record.end_reason, record.callee_addr) == (200, "bye", "192.0.2.52:5060")
    assert record.extra == {"account": "acme"}


def test_a_silent_gateway_is_left_after_the_set_timeout() -> None:
    t = RouteTest(_script(), gateways=SETS)
    call = t.invite("sip:+15551234@leansip")
    t.advance(2.5)  # the first one retransmits the INVITE (Timer A) and never answers
    assert list(dict.fromkeys(r.dest for r in call.relayed)) == [("192.0.2.51", 5060), ("192.0.2.52", 5060)]
    assert call.status is None


def test_when_the_set_is_exhausted_the_failure_handler_moves_on_to_another_set() -> None:
    t = RouteTest(_script(), gateways=SETS, calls=True)
    call = t.invite("sip:+15551234@leansip")
    call.relayed[0].respond(503)
    call.relayed[1].respond(408)
    assert call.relayed[-1].dest == ("192.0.2.61", 5060)  # backup
    call.relayed[-1].respond(486)
    assert call.status == 486
    (record,) = t.records()
    assert (record.status, record.end_reason) == (486, "rejected")
    assert record.extra == {"account": "acme", "route": "backup after 408"}


def test_every_gateway_down_goes_to_the_failure_handler_at_once() -> None:
    t = RouteTest(_script(), gateways=SETS)
    core_sets = t.core.services.gateways
    assert core_sets is not None
    for g in core_sets.sets["pstn"].gateways:
        g.state = "down"
    call = t.invite("sip:+15551234@leansip")
    assert [r.dest for r in call.relayed] == [("192.0.2.61", 5060)]


def test_a_call_refused_by_the_script_is_recorded_with_its_fields() -> None:
    routes = Routes()

    @routes.request("INVITE")
    def call(req, ctx):  # type: ignore[no-untyped-def]
        ctx.cdr["why"] = "blocked"
        ctx.reply(403, "Not allowed")

    t = RouteTest(routes, calls=True)
    assert t.invite("bob").status == 403
    (record,) = t.records()
    assert (record.status, record.reason, record.end_reason, record.extra) == (403, "Not allowed", "rejected",
                                                                               {"why": "blocked"})


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"gateways": "nope"}, "no gateway set 'nope' (configured: pstn, backup)"),
    ({"gateways": "pstn", "to": "sip:x@192.0.2.9"}, "a target or a gateway set, not both"),
    ({"gateways": "pstn", "stateful": False}, "relayed statefully"),
])
def test_mistakes_with_gateway_sets_are_script_errors_named(kwargs: dict[str, object], words: str) -> None:
    routes = Routes()
    seen: list[str] = []

    @routes.request("INVITE")
    def call(req, ctx):  # type: ignore[no-untyped-def]
        try:
            ctx.relay(**kwargs)
        except ValueError as exc:
            seen.append(str(exc))
            raise

    t = RouteTest(routes, gateways=SETS)
    assert t.invite("sip:+15551234@leansip").status == 500  # a script error: 500, the server goes on
    assert seen and words in seen[0]
