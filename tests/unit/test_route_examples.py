"""The example route scripts (examples/routes/) run through leansip.testing: no sockets, a fake clock. Each
script's real-program test is in tests/integration/test_route_examples.py; these check the decisions and
serve as examples of the testing helper itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from leansip.routes import Routes
from leansip.testing import RouteTest
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "routes"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture
def pbx(monkeypatch: pytest.MonkeyPatch) -> RouteTest:
    monkeypatch.setenv("PBX_VOICEMAIL", "sip:vm@192.0.2.99:5090")
    monkeypatch.setenv("PBX_RING_SECONDS", "15")
    t = RouteTest(EXAMPLES / "pbx.py", users=USERS)
    assert t.register("bob", "sip:bob@192.0.2.20:5062") == 200
    return t


def test_pbx_challenges_then_rings_the_callee(pbx: RouteTest) -> None:
    call = pbx.invite("bob", caller="alice", authenticate=False)
    assert call.challenged and call.relayed == []
    call = pbx.invite("bob", caller="alice")
    assert call.statuses == [100, 407, 100] and call.challenge is not None and call.relayed_to == ["sip:bob@192.0.2.20:5062"]
    call.respond(180)
    call.respond(200)
    assert call.statuses[-2:] == [180, 200]


def test_pbx_busy_callee_goes_to_voicemail(pbx: RouteTest) -> None:
    call = pbx.invite("bob", caller="alice")
    call.respond(486)
    assert call.relayed_to == ["sip:bob@192.0.2.20:5062", "sip:vm@192.0.2.99:5090"]
    assert call.status is None  # the caller never hears the 486
    call.respond(200)
    assert call.status == 200


def test_pbx_unanswered_call_goes_to_voicemail_after_the_ring_time(pbx: RouteTest) -> None:
    call = pbx.invite("bob", caller="alice")
    call.respond(180)
    pbx.advance(14.9)
    assert call.relayed_to == ["sip:bob@192.0.2.20:5062"]
    pbx.advance(0.1)
    assert call.cancelled == ["sip:bob@192.0.2.20:5062"]
    assert call.relayed_to[-1] == "sip:vm@192.0.2.99:5090" and call.relayed[-1].at == pbx.now


def test_pbx_offline_user_goes_to_voicemail_unknown_is_404_decline_stays(pbx: RouteTest) -> None:
    assert pbx.invite("carol", caller="alice").relayed_to == ["sip:vm@192.0.2.99:5090"]
    assert pbx.invite("nobody", caller="alice").status == 404
    call = pbx.invite("bob", caller="alice")
    call.respond(603)
    assert call.status == 603 and len(call.relayed) == 1


def test_prefix_routes_numbers_users_and_404(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFIX_ROUTES", "+1=192.0.2.71:5060,+1900=192.0.2.79:5060,+44=192.0.2.72:5060")
    t = RouteTest(EXAMPLES / "prefix.py", users=USERS)
    t.register("bob", "sip:bob@192.0.2.20:5062")
    assert t.invite("+15551234").relayed[0].dest == ("192.0.2.71", 5060)
    assert t.invite("+19005550000").relayed[0].dest == ("192.0.2.79", 5060)  # the longer prefix
    assert t.invite("+442071234567").relayed_to == ["sip:+442071234567@192.0.2.72:5060"]
    assert t.invite("bob").relayed_to == ["sip:bob@192.0.2.20:5062"]
    assert t.invite("+33123").status == 404 and t.invite("carol").status == 404


def test_acl_blocks_destinations_and_limits_calls_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACL_BLOCKED", "+1900")
    monkeypatch.setenv("ACL_MAX_CALLS", "2")
    t = RouteTest(EXAMPLES / "acl.py", users=USERS)
    t.register("bob", "sip:bob@192.0.2.20:5062")
    assert t.invite("+19005551212").status == 403
    first, second = t.invite("bob"), t.invite("bob")
    assert first.relayed and second.relayed
    third = t.invite("bob")
    assert third.status == 486 and third.response is not None and third.response.reason == "Too many calls"
    assert t.invite("bob", caller="carol").relayed  # the limit is per caller
    first.respond(486)  # a failed call no longer counts
    assert t.invite("bob").relayed


def test_forward_follows_the_table_as_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "forward.db"
    monkeypatch.setenv("FORWARD_DB", str(db))
    t = RouteTest(EXAMPLES / "forward.py", users=USERS)
    t.register("bob", "sip:bob@192.0.2.20:5062")
    t.register("carol", "sip:carol@192.0.2.30:5062")
    assert t.invite("bob").relayed_to == ["sip:bob@192.0.2.20:5062"]
    with sqlite3.connect(db) as other:
        other.execute("INSERT INTO forward VALUES ('bob', 'carol')")
    assert t.invite("bob").relayed_to == ["sip:carol@192.0.2.30:5062"]
    with sqlite3.connect(db) as other:
        other.execute("UPDATE forward SET target = 'sip:+15551234@192.0.2.71:5060' WHERE user = 'bob'")
    assert t.invite("bob").relayed_to == ["sip:+15551234@192.0.2.71:5060"]


def test_helper_builds_requests_from_sip_text_and_runs_stateless() -> None:
    routes = Routes()

    @routes.request("MESSAGE")
    def message(req, ctx):  # type: ignore[no-untyped-def]
        ctx.relay("sip:inbox@192.0.2.50", stateful=False)

    t = RouteTest(routes, stateful=False)
    ex = t.send_text("MESSAGE sip:bob@leansip SIP/2.0\n"
                     "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKtext1\n"
                     "From: <sip:alice@leansip>;tag=a\nTo: <sip:bob@leansip>\nCall-ID: text-1\n"
                     "CSeq: 1 MESSAGE\nMax-Forwards: 70\n\nhello")
    assert ex.relayed_to == ["sip:inbox@192.0.2.50"] and ex.relayed[0].request.body == b"hello"
    ex.respond(202)
    assert ex.status == 202 and t.stats["forwarded_requests"] == 1


def test_the_readme_example_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pytest file README.md shows under "Testing a script" runs as it is written (from the repository)."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("# test_pbx.py")
    code = text[start:text.index("```", start)]
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md:test_pbx.py", "exec"), namespace)  # noqa: S102 - our own README
    monkeypatch.chdir(REPO_ROOT)
    tests = [name for name in namespace if name.startswith("test_")]
    assert len(tests) == 2
    for name in tests:
        fn = namespace[name]
        assert callable(fn)
        fn(monkeypatch) if fn.__code__.co_argcount else fn()
