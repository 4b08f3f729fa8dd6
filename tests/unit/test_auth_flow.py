"""Digest authentication through the server core (RFC 3261 22, RFC 7616/8760): 407 for proxied requests,
401 for REGISTER, AOR ownership, ACK/CANCEL never challenged, stale nonces, per-source failure limiting."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from leansip.app.config import Config
from leansip.app.logging import JsonFormatter, LogfmtFormatter
from leansip.app.serve import build_core
from leansip.server.core import ServerCore
from leansip.server.users import UserRecord, UserStore
from leansip.sip.digest import build_authorization, parse_digest
from leansip.sip.ratelimit import FailureLimiter
from tests.unit.proxy_kit import (
    ALICE,
    BOB1,
    Out,
    feed,
    make_core,
    only,
    register,
    request,
    requests,
    response_to,
)

BOB = "sip:bob@leansip"
MODES = [pytest.param(True, id="stateful"), pytest.param(False, id="stateless")]


def _up(outs: list[Out], dest: tuple[str, int] = ALICE) -> list[int]:
    return [o.status for o in outs if not o.is_request and o.dest == dest]


def _bind_bob(core: ServerCore, now: float = 0.0) -> None:
    first = only(feed(core, register("bob", BOB1), BOB1, now))
    assert first.status == 401
    chal = first.msg.header_lines("www-authenticate")[0]
    creds = build_authorization(chal, "REGISTER", "sip:leansip", "bob", "bob")
    ok = only(feed(core, register("bob", BOB1, cseq=2, extra=[("Authorization", creds)]), BOB1, now))
    assert ok.status == 200


def _challenge(core: ServerCore, now: float, src: tuple[str, int] = ALICE, *, algorithm: str | None = None,
               ) -> str:
    out = feed(core, request("INVITE", BOB, src=src), src, now)
    assert _up(out, src)[-1] == 407 and requests(out) == []
    values = [o for o in out if not o.is_request and o.status == 407][0].msg.header_lines("proxy-authenticate")
    if algorithm is None:
        return values[0]
    return [v for v in values if parse_digest(v).algorithm == algorithm][0]


def _invite_with(core: ServerCore, creds: str, now: float, src: tuple[str, int] = ALICE,
                 cseq: int = 2) -> list[Out]:
    return feed(core, request("INVITE", BOB, src=src, cseq=cseq, extra=[("Proxy-Authorization", creds)]),
                src, now)


@pytest.mark.parametrize("stateful", MODES)
def test_invite_without_credentials_gets_407_sha256_first_then_md5(stateful: bool) -> None:
    core = make_core(auth=True, stateful=stateful)
    _bind_bob(core)
    out = feed(core, request("INVITE", BOB), ALICE, 1.0)
    resp = [o for o in out if not o.is_request and o.status == 407]
    assert len(resp) == 1 and requests(out) == []
    values = resp[0].msg.header_lines("proxy-authenticate")
    assert [parse_digest(v).algorithm for v in values] == ["SHA-256", "MD5"]  # RFC 8760 2.4: preferred first
    assert all(parse_digest(v).realm == "leansip" and "auth" in parse_digest(v).qop_options for v in values)
    assert resp[0].msg.header("www-authenticate") is None


@pytest.mark.parametrize("stateful", MODES)
@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_invite_with_credentials_is_forwarded(stateful: bool, algorithm: str) -> None:
    core = make_core(auth=True, stateful=stateful)
    _bind_bob(core)
    chal = _challenge(core, 1.0, algorithm=algorithm)
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "alice"), 1.1)
    fwd = [o for o in requests(out, "INVITE") if o.dest == BOB1]
    assert len(fwd) == 1
    # the credentials were for us: we keep them (16.6 leaves them), the callee ignores another realm's
    assert 407 not in _up(out)


@pytest.mark.parametrize("stateful", MODES)
def test_wrong_password_gets_407_again_and_is_never_forwarded(stateful: bool) -> None:
    core = make_core(auth=True, stateful=stateful)
    _bind_bob(core)
    chal = _challenge(core, 1.0)
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "wrong"), 1.1)
    assert _up(out) == ([100, 407] if stateful else [407])
    assert requests(out) == []
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "mallory", "alice"), 1.2, cseq=3)
    assert _up(out)[-1] == 407 and requests(out) == []
    assert core.stats.auth_failures == 2


def test_a_failed_authentication_is_one_warning_line_with_user_and_source() -> None:
    """An operator must see who failed from where at the default level (warning), in one flat line: it read
    ``level=info event=log ... msg="event=auth_failed src=... reason='wrong response'"`` before."""
    core = make_core(auth=True)
    _bind_bob(core)
    text, as_json = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(text), logging.StreamHandler(as_json)]
    handlers[0].setFormatter(LogfmtFormatter())
    handlers[1].setFormatter(JsonFormatter())
    server_log = logging.getLogger("leansip.server")
    for handler in handlers:
        server_log.addHandler(handler)
    server_log.setLevel(logging.WARNING)
    try:
        chal = _challenge(core, 1.0)
        _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "wrong"), 1.1)
    finally:
        for handler in handlers:
            server_log.removeHandler(handler)
        server_log.setLevel(logging.NOTSET)
    line = text.getvalue().strip()
    assert "\n" not in line and "msg=" not in line
    assert (f' level=warning event=auth_failed logger=leansip.server user=alice src={ALICE[0]}:{ALICE[1]} '
            'method=INVITE reason="wrong response"') in line, line
    doc = json.loads(as_json.getvalue())
    assert (doc["level"], doc["event"], doc["user"], doc["src"]) == ("warning", "auth_failed", "alice",
                                                                     f"{ALICE[0]}:{ALICE[1]}")


def test_register_401_then_200_and_register_for_another_aor_403() -> None:
    core = make_core(auth=True)
    _bind_bob(core)  # 401 then 200
    assert core.location.lookup("bob", 1.0)
    # alice authenticates correctly but tries to register bob's AOR
    first = only(feed(core, request("REGISTER", "sip:leansip", src=ALICE, from_user="alice", to_user="bob",
                                    contact="sip:evil@192.0.2.66:5062"), ALICE, 1.0))
    assert first.status == 401
    chal = first.msg.header_lines("www-authenticate")[0]
    creds = build_authorization(chal, "REGISTER", "sip:leansip", "alice", "alice")
    resp = only(feed(core, request("REGISTER", "sip:leansip", src=ALICE, from_user="alice", to_user="bob", cseq=2,
                                   contact="sip:evil@192.0.2.66:5062", extra=[("Authorization", creds)]),
                     ALICE, 1.1))
    assert resp.status == 403
    assert [b.contact for b in core.location.lookup("bob", 1.2)] == [f"sip:bob@{BOB1[0]}:{BOB1[1]}"]


@pytest.mark.parametrize("stateful", MODES)
def test_ack_and_cancel_are_never_challenged(stateful: bool) -> None:
    core = make_core(auth=True, stateful=stateful)
    _bind_bob(core)
    chal = _challenge(core, 1.0)
    creds = build_authorization(chal, "INVITE", BOB, "alice", "alice")
    invite = request("INVITE", BOB, branch="z9hG4bKac1", call_id="ac1@test", cseq=2,
                     extra=[("Proxy-Authorization", creds)])
    out = feed(core, invite, ALICE, 1.1)
    fwd = [o for o in requests(out, "INVITE") if o.dest == BOB1][0]
    feed(core, response_to(fwd.msg, 180), BOB1, 1.2)  # type: ignore[arg-type]
    # RFC 3261 22.1: CANCEL and ACK cannot be resubmitted with credentials, so they are not challenged
    cancel = feed(core, request("CANCEL", BOB, branch="z9hG4bKac1", call_id="ac1@test", cseq=2), ALICE, 1.3)
    assert 407 not in _up(cancel)
    assert [o.dest for o in requests(cancel, "CANCEL")] == [BOB1]
    if stateful:
        assert _up(cancel) == [200]
    ack = request("ACK", f"sip:bob@{BOB1[0]}:{BOB1[1]}", call_id="ac1@test", to_tag="callee1", cseq=2,
                  cseq_method="ACK", extra=[("Route", "<sip:10.0.0.1:5060;lr>")])
    out = feed(core, ack, ALICE, 1.4)
    assert [o.dest for o in requests(out, "ACK")] == [BOB1]
    assert _up(out) == []


@pytest.mark.parametrize("stateful", MODES)
def test_stale_nonce_gets_stale_true(stateful: bool) -> None:
    core = make_core(auth=True, stateful=stateful)
    _bind_bob(core)
    chal = _challenge(core, 1.0)
    creds = build_authorization(chal, "INVITE", BOB, "alice", "alice")
    out = _invite_with(core, creds, 1.0 + 301)  # nonce_ttl is 300 s
    assert requests(out) == []
    resp = [o for o in out if not o.is_request and o.status == 407][0]
    values = resp.msg.header_lines("proxy-authenticate")
    assert values and all(parse_digest(v).stale for v in values)
    assert core.stats.auth_failures == 0  # right password, old nonce: not a failure
    # answering the fresh challenge works
    out = _invite_with(core, build_authorization(values[0], "INVITE", BOB, "alice", "alice"), 302.0, cseq=3)
    assert [o.dest for o in requests(out, "INVITE")] == [BOB1]


@pytest.mark.parametrize("stateful", MODES)
def test_repeated_failures_slow_one_source_but_not_another(stateful: bool) -> None:
    core = make_core(auth=True, stateful=stateful, limiter=FailureLimiter(threshold_slow=3, threshold_block=20,
                                                                          window=60))
    _bind_bob(core)
    attacker = ("198.51.100.7", 5062)
    now = 1.0
    for i in range(3):
        chal = _challenge(core, now, attacker)
        out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", f"guess{i}"), now, attacker)
        assert _up(out, attacker)[-1] == 407
        now += 0.1
    # from now on the attacker's wrong answers are dropped unanswered (still counted towards a block) ...
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "guess9"), now, attacker, cseq=9)
    assert requests(out) == [] and 407 not in _up(out, attacker)
    assert core.stats.delayed >= 1
    # ... while another source authenticates and calls as usual
    chal = _challenge(core, now, ALICE)
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "alice"), now)
    assert [o.dest for o in requests(out, "INVITE")] == [BOB1]
    # after the window the attacker is heard again
    later = now + 61
    out = feed(core, request("INVITE", BOB, src=attacker), attacker, later)
    assert _up(out, attacker)[-1] == 407


def test_blocked_source_gets_403_others_unaffected() -> None:
    limiter = FailureLimiter(threshold_slow=50, threshold_block=4, window=60, block_for=300)
    core = make_core(auth=True, limiter=limiter)
    _bind_bob(core)
    attacker = ("198.51.100.8", 5062)
    for i in range(4):
        chal = _challenge(core, 1.0 + i, attacker)
        _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", f"x{i}"), 1.0 + i, attacker)
    out = feed(core, request("INVITE", BOB, src=attacker), attacker, 10.0)
    assert _up(out, attacker)[-1] == 403 and requests(out) == []
    assert core.stats.blocked >= 1
    chal = _challenge(core, 10.0, ALICE)
    out = _invite_with(core, build_authorization(chal, "INVITE", BOB, "alice", "alice"), 10.0)
    assert [o.dest for o in requests(out, "INVITE")] == [BOB1]
    out = feed(core, request("INVITE", BOB, src=attacker), attacker, 10.0 + 301)
    assert _up(out, attacker)[-1] == 407  # the block ends


def test_build_core_uses_the_configured_failure_limits(tmp_path: Path) -> None:
    """An empty FailureLimiter is falsy (it has a len()); the core must still keep the configured one."""
    config = Config(location="memory", db=tmp_path / "leansip.db", auth=True, realm="leansip",
                    fail_slow_after=2, fail_block_after=7, block_seconds=30, auth_algorithms=["MD5"])
    core = build_core(config, UserStore([UserRecord("alice", password="alice")]), 0.0)
    assert (core.limiter.threshold_slow, core.limiter.threshold_block, core.limiter.block_for) == (2, 7, 30.0)
    out = feed(core, request("INVITE", BOB), ALICE, 1.0)
    values = [o for o in out if not o.is_request and o.status == 407][0].msg.header_lines("proxy-authenticate")
    assert [parse_digest(v).algorithm for v in values] == ["MD5"]  # --auth-algorithms MD5 (for sipp)
