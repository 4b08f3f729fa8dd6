"""The one handler interface (leansip.server.handler): a handler records a decision in its RequestContext and the
core carries it out: replies, relays (stateless and stateful, to explicit targets, parallel), serial forking
through failure handlers with per-branch timeouts, drops, the REGISTER hook, and what the core keeps from the
handler (retransmissions, in-dialog requests along our Record-Route). Sans-I/O, fake clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from leansip.server.context import RequestContext
from leansip.server.core import ServerCore
from leansip.server.handler import ResponseContext
from leansip.sip.message import Request, Response
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    BOB2,
    Out,
    feed,
    make_core,
    parse_out,
    register,
    registered,
    request,
    requests,
    response_to,
    responses,
)

VM = ("192.0.2.99", 5090)
VM_URI = f"sip:vm@{VM[0]}:{VM[1]}"
Decide = Callable[[Request, RequestContext], None]


class Script:
    """A handler written as a plain object, as a route script's Routes is: it only records decisions."""

    def __init__(self, decide: Decide, *, in_dialog: bool = False,
                 on_register: Decide | None = None,
                 on_response: Callable[[Response, ResponseContext], None] | None = None) -> None:
        self.decide = decide
        self.register_hook = on_register
        self.response_hook = on_response
        self.wants_in_dialog = in_dialog
        self.wants_register = on_register is not None
        self.wants_responses = on_response is not None
        self.seen: list[str] = []
        self.failures: list[int] = []

    def on_request(self, req: Request, ctx: RequestContext) -> None:
        self.seen.append(req.method)
        self.decide(req, ctx)

    def on_register(self, req: Request, ctx: RequestContext) -> None:
        assert self.register_hook is not None
        self.register_hook(req, ctx)

    def on_response(self, resp: Response, ctx: ResponseContext) -> None:
        assert self.response_hook is not None, "wants_responses is False: never called"
        self.response_hook(resp, ctx)

    def on_failure(self, fn: Callable[[Request, RequestContext, Response], None], req: Request, ctx: RequestContext,
                resp: Response) -> None:
        self.failures.append(resp.status)
        fn(req, ctx, resp)


def _core(decide: Decide, *, stateful: bool = True, **kw: object) -> tuple[ServerCore, Script]:
    script = Script(decide, **kw)  # type: ignore[arg-type]
    return make_core(handler=script, stateful=stateful), script


def _up(outs: list[Out]) -> list[int]:
    return [o.status for o in outs if not o.is_request and o.dest == ALICE]


def _to(outs: list[Out], dest: tuple[str, int], method: str = "INVITE") -> Request:
    hits = [o.msg for o in requests(outs, method) if o.dest == dest]
    assert len(hits) == 1, outs
    assert isinstance(hits[0], Request)
    return hits[0]


def _drive(core: ServerCore, until: float) -> list[Out]:
    out: list[Out] = []
    while (at := core.next_deadline()) is not None and at <= until:
        out.extend(parse_out(core.handle_timers(at)))
    return out


def test_reply_goes_back_through_the_transaction_and_absorbs_retransmissions() -> None:
    core, script = _core(lambda req, ctx: ctx.reply(486, "Busy Here", [("Retry-After", "60")]))
    invite = request("INVITE", "sip:bob@leansip")
    out = feed(core, invite, ALICE, 1.0)
    assert _up(out) == [100, 486]
    assert out[1].msg.header("retry-after") == "60" and out[1].msg.to_tag
    assert _up(feed(core, invite, ALICE, 1.5)) == [486]  # from the transaction, not the handler again
    assert script.seen == ["INVITE"]


def test_stateless_reply_and_the_ack_of_it_ends_at_the_core() -> None:
    core, script = _core(lambda req, ctx: ctx.reply(403), stateful=False)
    out = feed(core, request("INVITE", "sip:bob@leansip", branch="z9hG4bKa1", call_id="a1"), ALICE, 1.0)
    assert _up(out) == [403]
    ack = request("ACK", "sip:bob@leansip", branch="z9hG4bKa1", call_id="a1", cseq_method="ACK",
                  to_tag=out[0].msg.to_tag)
    assert feed(core, ack, ALICE, 1.1) == [] and script.seen == ["INVITE"]


def test_relay_to_a_uri_rewrites_the_request_uri_and_goes_to_its_host() -> None:
    core, _ = _core(lambda req, ctx: ctx.relay(VM_URI))
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    fwd = _to(out, VM)
    assert fwd.uri == VM_URI and fwd.header("record-route")


def test_relay_to_a_list_forks_in_parallel_and_lookup_gives_the_contacts() -> None:
    def decide(req: Request, ctx: RequestContext) -> None:
        ctx.relay(ctx.lookup() + [VM_URI], record_route=False)

    core, _ = _core(decide)
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    assert {o.dest for o in requests(out, "INVITE")} == {BOB1, VM}
    assert _to(out, BOB1).header("record-route") is None


def test_empty_target_list_is_480() -> None:
    core, _ = _core(lambda req, ctx: ctx.relay(ctx.lookup()))
    assert _up(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)) == [100, 480]


def test_failure_handler_forks_serially_after_a_busy_callee() -> None:
    def voicemail(req: Request, ctx: RequestContext, resp: Response) -> None:
        ctx.relay(VM_URI)

    core, script = _core(lambda req, ctx: ctx.relay(ctx.lookup(), on_failure=voicemail))
    registered(core, "bob", BOB1)
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    bob = _to(out, BOB1)
    out = feed(core, response_to(bob, 486), BOB1, 2.0)
    assert _up(out) == []  # the 486 is not the answer: the call goes on
    vm = _to(out, VM)
    assert vm.uri == VM_URI and script.failures == [486]
    assert vm.branch != bob.branch and vm.branch.rsplit(".", 1)[0] == bob.branch.rsplit(".", 1)[0]
    assert _up(feed(core, response_to(vm, 200, to_tag="vm1"), VM, 3.0)) == [200]


def test_failure_handler_not_run_returns_the_best_response() -> None:
    core, script = _core(lambda req, ctx: ctx.relay(ctx.lookup(), on_failure=lambda r, c, resp: None))
    registered(core, "bob", BOB1)
    bob = _to(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), BOB1)
    assert _up(feed(core, response_to(bob, 486), BOB1, 2.0)) == [486] and script.failures == [486]


def test_failure_handler_reply_replaces_the_best_response() -> None:
    core, _ = _core(lambda req, ctx: ctx.relay(ctx.lookup(), on_failure=lambda r, c, resp: c.reply(603)))
    registered(core, "bob", BOB1)
    bob = _to(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), BOB1)
    assert _up(feed(core, response_to(bob, 486), BOB1, 2.0)) == [603]


def test_branch_timeout_cancels_the_ringing_callee_and_runs_the_failure_handler() -> None:
    def voicemail(req: Request, ctx: RequestContext, resp: Response) -> None:
        assert resp.status == 408
        ctx.relay(VM_URI)

    core, _ = _core(lambda req, ctx: ctx.relay(ctx.lookup(), timeout=20, on_failure=voicemail))
    registered(core, "bob", BOB1)
    bob = _to(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), BOB1)
    assert _up(feed(core, response_to(bob, 180), BOB1, 1.5)) == [180]
    assert _drive(core, 20.9) == []  # still ringing
    out = _drive(core, 21.0)
    assert _to(out, BOB1, "CANCEL").branch == bob.branch
    vm = _to(out, VM)
    assert _up(out) == []
    # bob's 487 to our CANCEL changes nothing upstream; voicemail answers
    assert _up(feed(core, response_to(bob, 487), BOB1, 21.1)) == []
    assert _up(feed(core, response_to(vm, 200, to_tag="vm1"), VM, 22.0)) == [200]


def test_nobody_registered_goes_straight_to_the_failure_handler_with_480() -> None:
    core, script = _core(lambda req, ctx: ctx.relay(ctx.lookup(), on_failure=lambda r, c, resp: c.relay(VM_URI)))
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    assert script.failures == [480] and _to(out, VM).uri == VM_URI


def test_cancel_during_a_call_stops_serial_forking() -> None:
    core, script = _core(lambda req, ctx: ctx.relay(ctx.lookup(), on_failure=lambda r, c, resp: c.relay(VM_URI)))
    registered(core, "bob", BOB1)
    invite = request("INVITE", "sip:bob@leansip", branch="z9hG4bKc1", call_id="c1")
    bob = _to(feed(core, invite, ALICE, 1.0), BOB1)
    feed(core, response_to(bob, 180), BOB1, 1.1)
    out = feed(core, request("CANCEL", "sip:bob@leansip", branch="z9hG4bKc1", call_id="c1"), ALICE, 1.2)
    assert _up(out) == [200] and requests(out, "CANCEL")
    assert _up(feed(core, response_to(bob, 487), BOB1, 1.3)) == [487]
    assert script.failures == [] and script.seen == ["INVITE"]


def test_serial_forking_is_bounded() -> None:
    def again(req: Request, ctx: RequestContext, resp: Response) -> None:
        ctx.relay(VM_URI, on_failure=again)

    core, script = _core(lambda req, ctx: ctx.relay(VM_URI, on_failure=again))
    out = feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0)
    ups: list[int] = []
    for i in range(40):
        fwd = [o.msg for o in requests(out, "INVITE")]
        if not fwd:
            break
        assert isinstance(fwd[0], Request)
        out = feed(core, response_to(fwd[0], 486, to_tag=f"t{i}"), VM, 2.0 + i)
        ups += _up(out)
    assert ups == [486] and len(script.failures) == 16


def test_drop_sends_nothing_and_forgets_the_request() -> None:
    core, script = _core(lambda req, ctx: ctx.drop())
    invite = request("INVITE", "sip:bob@leansip")
    assert _up(feed(core, invite, ALICE, 1.0)) == [100]  # the transaction's 100 went first
    assert _up(feed(core, invite, ALICE, 1.5)) == [100]  # no transaction kept: the handler sees it again
    assert script.seen == ["INVITE", "INVITE"] and len(core.proxy.table) == 0  # type: ignore[union-attr]
    assert feed(core, request("MESSAGE", "sip:bob@leansip"), ALICE, 2.0) == []


def test_stateless_relay_from_a_stateful_server_keeps_no_transaction() -> None:
    core, _ = _core(lambda req, ctx: ctx.relay(VM_URI, stateful=False))
    msg = request("MESSAGE", "sip:bob@leansip")
    first = _to(feed(core, msg, ALICE, 1.0), VM, "MESSAGE")
    assert len(core.proxy.table) == 0  # type: ignore[union-attr]
    # a stateless branch: the same for the retransmission (RFC 3261 16.11)
    assert _to(feed(core, msg, ALICE, 1.5), VM, "MESSAGE").branch == first.branch
    assert _up(feed(core, response_to(first, 200), VM, 1.6)) == [200]


def test_stateful_relay_from_a_stateless_server_makes_its_transaction() -> None:
    core, _ = _core(lambda req, ctx: ctx.relay(VM_URI, stateful=True), stateful=False)
    invite = request("INVITE", "sip:bob@leansip", branch="z9hG4bKs1", call_id="s1")
    out = feed(core, invite, ALICE, 1.0)
    assert _up(out) == [100]
    vm = _to(out, VM)
    assert len(core.proxy.table) == 2  # type: ignore[union-attr]
    assert _up(feed(core, invite, ALICE, 1.2)) == [100]  # absorbed by the transaction
    assert _up(feed(core, response_to(vm, 486), VM, 1.5)) == [486]
    cancel = request("CANCEL", "sip:bob@leansip", branch="z9hG4bKs1", call_id="s1")
    assert _up(feed(core, cancel, ALICE, 1.6)) == [200]  # matched to the INVITE's transaction, not the handler


def test_handler_that_decides_nothing_gets_a_500() -> None:
    core, _ = _core(lambda req, ctx: None)
    assert _up(feed(core, request("OPTIONS", "sip:bob@leansip"), ALICE, 1.0)) == [500]


def test_deciding_twice_raises_and_bad_arguments_are_refused() -> None:
    seen: list[str] = []

    def decide(req: Request, ctx: RequestContext) -> None:
        ctx.reply(404)
        for bad in (lambda: ctx.relay(), lambda: ctx.reply(99)):
            with pytest.raises(ValueError) as exc:
                bad()
            seen.append(str(exc.value))

    core, _ = _core(decide)
    assert _up(feed(core, request("OPTIONS", "sip:bob@leansip"), ALICE, 1.0)) == [404]
    assert "already decided (reply)" in seen[0] and "200-699" in seen[1]
    with pytest.raises(ValueError, match="not a SIP URI"):
        RequestContext(core.services, Request("OPTIONS", "sip:x@y"), ALICE, "udp", 0.0).relay("mailto:x@y")
    with pytest.raises(ValueError, match="stateful"):
        RequestContext(core.services, Request("OPTIONS", "sip:x@y"), ALICE, "udp", 0.0).relay(
            VM_URI, stateful=False, timeout=5)


def test_in_dialog_requests_along_our_record_route_skip_the_handler_unless_asked() -> None:
    for in_dialog in (False, True):
        core, script = _core(lambda req, ctx: ctx.relay(ctx.lookup() or None), in_dialog=in_dialog)
        registered(core, "bob", BOB1)
        bob = _to(feed(core, request("INVITE", "sip:bob@leansip", call_id="d1"), ALICE, 1.0), BOB1)
        assert _up(feed(core, response_to(bob, 200), BOB1, 1.1)) == [200]
        rr = bob.header_values("record-route")
        assert rr
        bye = request("BYE", f"sip:bob@{BOB1[0]}:{BOB1[1]}", call_id="d1", cseq=2, to_tag="callee1",
                      extra=[("Route", v) for v in rr])
        assert _to(feed(core, bye, ALICE, 2.0), BOB1, "BYE")
        assert script.seen == (["INVITE", "BYE"] if in_dialog else ["INVITE"])


def test_register_hook_can_refuse_and_is_not_called_otherwise() -> None:
    def refuse_carol(req: Request, ctx: RequestContext) -> None:
        if req.to.uri.user == "carol":  # type: ignore[union-attr]
            ctx.reply(403, "Carol may not register")

    core, _ = _core(lambda req, ctx: ctx.relay(), on_register=refuse_carol)
    assert responses(feed(core, register("carol", BOB2), BOB2, 1.0)) == [403]
    assert responses(feed(core, register("bob", BOB1), BOB1, 1.0)) == [200]
    assert not core.location.lookup("carol", 1.0) and core.location.lookup("bob", 1.0)


def test_response_hook_edits_and_drops_provisional_responses_both_ways() -> None:
    seen: list[tuple[int, str | None]] = []

    def hook(resp: Response, ctx: ResponseContext) -> None:
        seen.append((resp.status, None if ctx.request is None else ctx.request.method))
        ctx.remove_header("X-Internal")
        ctx.add_header("X-Seen", "yes")
        if resp.status == 183:
            ctx.drop()
        if resp.status == 200:
            with pytest.raises(ValueError, match="cannot be dropped"):
                ctx.drop()

    for stateful in (True, False):
        seen.clear()
        core, _ = _core(lambda req, ctx: ctx.relay(VM_URI), stateful=stateful, on_response=hook)
        vm = _to(feed(core, request("INVITE", "sip:bob@leansip"), ALICE, 1.0), VM)
        assert _up(feed(core, response_to(vm, 183, extra=[("X-Internal", "1")]), VM, 1.1)) == []
        up = [o for o in feed(core, response_to(vm, 200, extra=[("X-Internal", "1")]), VM, 1.2) if o.dest == ALICE]
        assert [o.status for o in up] == [200]
        assert up[0].msg.header("x-internal") is None and up[0].msg.header("x-seen") == "yes"
        assert seen == [(183, "INVITE" if stateful else None), (200, "INVITE" if stateful else None)]


def test_request_edits_reach_the_relayed_request_and_protected_headers_are_refused() -> None:
    def decide(req: Request, ctx: RequestContext) -> None:
        ctx.set_ruri("sip:carol@leansip")
        ctx.remove_header("Subject")
        ctx.add_header("X-Routed-By", "script")
        ctx.set_header("Priority", "urgent")
        for name in ("Via", "Call-ID", "cseq", "t"):
            with pytest.raises(ValueError, match="cannot be edited"):
                ctx.add_header(name, "x")
        with pytest.raises(ValueError, match="one line"):
            ctx.add_header("X-Bad", "a\r\nVia: evil")
        ctx.relay(ctx.lookup())

    core, _ = _core(decide)
    registered(core, "carol", BOB2)
    data = request("INVITE", "sip:bob@leansip", extra=[("Subject", "hi"), ("Priority", "normal")])
    fwd = _to(feed(core, data, ALICE, 1.0), BOB2)
    assert fwd.uri == f"sip:carol@{BOB2[0]}:{BOB2[1]}"
    assert fwd.header("subject") is None and fwd.header("x-routed-by") == "script"
    assert fwd.header_values("priority") == ["urgent"]


def test_lookup_by_user_name_and_by_uri() -> None:
    core, _ = _core(lambda req, ctx: ctx.reply(200))
    registered(core, "bob", BOB1)
    ctx = RequestContext(core.services, Request("MESSAGE", "sip:x@leansip"), ALICE, "udp", 1.0)
    assert [t.dest for t in ctx.lookup("bob")] == [BOB1]
    assert [t.dest for t in ctx.lookup("sip:bob@anywhere")] == [BOB1]
    assert ctx.lookup() == [] and ctx.lookup("nobody") == []
