"""Gateway sets (leansip.server.gateways): the selection policies, the health state machine and its hysteresis,
the OPTIONS prober driven by a fake clock, the configuration-only routes and the TOML tables' checks."""

from __future__ import annotations

import collections

import pytest

from leansip.server.gateways import (
    DOWN,
    HEALTH,
    UP,
    Gateway,
    GatewayConfigError,
    GatewayProber,
    GatewayRoutes,
    Gateways,
    GatewaySet,
    caller_of,
    parse_gateways,
)
from leansip.sip.message import Request, Response, parse_message
from leansip.sip.uri import SipURI, parse_uri


def _set(policy: str = "round-robin", n: int = 3, **kw: object) -> GatewaySet:
    weights = kw.pop("weights", [1] * n)
    priorities = kw.pop("priorities", [0] * n)
    gws = [Gateway("pstn", f"10.0.0.{i + 1}", 5060, "udp", weights[i], priorities[i])  # type: ignore[index]
           for i in range(n)]
    return GatewaySet("pstn", gws, policy=policy, **kw)  # type: ignore[arg-type]


def _hosts(gws: list[Gateway]) -> list[str]:
    return [g.host[-1] for g in gws]


def _down(g: Gateway) -> None:
    g.state = DOWN


# ------------------------------------------------------------------------------------------- policies
def test_round_robin_starts_one_further_each_time_and_fails_over_in_list_order() -> None:
    s = _set()
    assert [_hosts(s.candidates()) for _ in range(4)] == [["1", "2", "3"], ["2", "3", "1"], ["3", "1", "2"],
                                                          ["1", "2", "3"]]


def test_round_robin_skips_a_dead_destination() -> None:
    s = _set()
    _down(s.gateways[1])
    assert [_hosts(s.candidates()) for _ in range(3)] == [["1", "3"], ["3", "1"], ["1", "3"]]


def test_every_destination_down_means_no_candidates_and_is_counted() -> None:
    s = _set()
    for g in s.gateways:
        _down(g)
    assert s.candidates() == [] and s.unavailable == 1


def test_hash_of_call_id_is_stable_and_spreads() -> None:
    s = _set("hash-call-id")
    firsts = {s.candidates(call_id=f"call-{i}")[0].host for i in range(300)}
    assert len(firsts) == 3
    assert all(s.candidates(call_id="abc")[0] is s.candidates(call_id="abc")[0] for _ in range(5))


def test_hash_of_caller_moves_only_the_dead_gateways_callers() -> None:
    s = _set("hash-caller", n=4)
    callers = [f"user{i}@example.com" for i in range(200)]
    before = {c: s.candidates(caller=c)[0] for c in callers}
    dead = s.gateways[2]
    _down(dead)
    after = {c: s.candidates(caller=c)[0] for c in callers}
    moved = [c for c in callers if before[c] is not after[c]]
    assert moved and all(before[c] is dead for c in moved)
    assert all(after[c] is not dead for c in callers)


def test_weight_gives_each_its_share_smoothly() -> None:
    s = _set("weight", weights=[5, 1, 1])
    firsts = [s.candidates()[0].host[-1] for _ in range(70)]
    assert collections.Counter(firsts) == {"1": 50, "2": 10, "3": 10}
    # smooth: the heavy one never takes more than its turns in a row within one cycle of 7 (nginx: a a b a c a a)
    assert firsts[:7] == ["1", "1", "2", "1", "3", "1", "1"]
    # failover after the chosen one: heaviest first
    assert _hosts(_set("weight", weights=[1, 3, 2]).candidates())[1:] == ["3", "1"]


def test_priority_tries_the_lowest_value_first_then_fails_over_in_priority_order() -> None:
    s = _set("priority", priorities=[2, 1, 3])
    assert _hosts(s.candidates()) == ["2", "1", "3"]
    _down(s.gateways[1])
    assert _hosts(s.candidates()) == ["1", "3"]


# ------------------------------------------------------------------------------------------- health
def test_health_table_covers_every_state_and_result() -> None:
    assert set(HEALTH) == {(st, r) for st in (UP, DOWN) for r in ("ok", "failed")}


def test_hysteresis_needs_down_after_failures_in_a_row_and_up_after_successes() -> None:
    g = Gateway("pstn", "10.0.0.1", 5060)
    results = [(False, False), (True, False), (False, False), (False, True)]  # fail, ok (resets), fail, fail
    assert [g.probe_result(ok, 1.0, "x", 2, 3) for ok, _ in results] == [want for _, want in results]
    assert g.state == DOWN
    # down: a success, a failure (resets), then three successes
    flips = [g.probe_result(ok, 2.0, "x", 2, 3) for ok in (True, False, True, True, True)]
    assert flips == [False, False, False, False, True] and g.state == UP


# ------------------------------------------------------------------------------------------- probes
def _via(branch: str, transport: str) -> str:
    return f"SIP/2.0/{transport.upper()} 10.9.9.9:5060;branch={branch}"


def _answer(send_data: bytes, status: int) -> Response:
    req = parse_message(send_data)
    assert isinstance(req, Request)
    text = (f"SIP/2.0 {status} X\r\nVia: {req.header('via')}\r\nFrom: {req.header('from')}\r\n"
            f"To: {req.header('to')};tag=gw\r\nCall-ID: {req.header('call-id')}\r\nCSeq: {req.header('cseq')}\r\n"
            "Content-Length: 0\r\n\r\n")
    resp = parse_message(text.encode())
    assert isinstance(resp, Response)
    return resp


def test_the_prober_sends_one_options_to_each_destination_per_interval() -> None:
    s = _set(n=2, probe_interval=5.0, probe_timeout=2.0)
    prober = GatewayProber([s], _via, host="10.9.9.9", now=0.0, token="t0k")
    assert prober.next_deadline() == 0.0
    out = prober.handle_timers(0.0)
    assert sorted(o.dest for o in out) == [("10.0.0.1", 5060), ("10.0.0.2", 5060)]
    first = parse_message(out[0].data)
    assert isinstance(first, Request) and first.method == "OPTIONS" and first.uri == "sip:10.0.0.1:5060"
    assert first.top_via.host == "10.9.9.9" and first.call_id.startswith("gwprobe-t0k-")
    assert first.max_forwards == 70 and first.cseq[1] == "OPTIONS" and first.from_tag == "t0k"
    for o in out:
        assert prober.on_response(_answer(o.data, 200), 0.1)
    assert prober.next_deadline() == 5.0 and prober.handle_timers(4.9) == []
    assert len(prober.handle_timers(5.0)) == 2 and prober.sent == 4


def _run_prober(prober: GatewayProber, until: float, alive: set[str], step: float = 0.25) -> None:
    """Advance the fake clock to ``until``: gateways whose host is in ``alive`` answer each OPTIONS with 200."""
    t = 0.0
    while t <= until:
        for o in prober.handle_timers(t):
            if o.dest[0] in alive:
                assert prober.on_response(_answer(o.data, 200), t)
        t = round(t + step, 6)


def test_a_silent_destination_goes_down_after_its_timeouts_and_comes_back_after_answers() -> None:
    s = _set(n=2, probe_interval=5.0, probe_timeout=2.0, down_after=2, up_after=2)
    prober = GatewayProber([s], _via, host="10.9.9.9", now=0.0, token="t0k")
    changes: list[tuple[str, str, float]] = []
    prober.on_change = lambda g: changes.append((g.host, g.state, g.changed_at))
    _run_prober(prober, 4.0, {"10.0.0.1"})
    assert s.gateways[1].state == UP and s.gateways[1].last_result == "timeout"  # one failure is not enough
    _run_prober_from(prober, 4.25, 7.5, {"10.0.0.1"})
    assert s.gateways[1].state == DOWN and changes == [("10.0.0.2", DOWN, 7.0)]
    assert s.gateways[0].state == UP and s.gateways[0].last_result == "200"
    assert _hosts(s.candidates()) == ["1"]
    # restarted: two answered probes (at 10 and 15) bring it back
    _run_prober_from(prober, 7.75, 15.0, {"10.0.0.1", "10.0.0.2"})
    assert s.gateways[1].state == UP and changes[-1] == ("10.0.0.2", UP, 15.0)


def _run_prober_from(prober: GatewayProber, start: float, until: float, alive: set[str]) -> None:
    t = start
    while t <= until:
        for o in prober.handle_timers(t):
            if o.dest[0] in alive:
                assert prober.on_response(_answer(o.data, 200), t)
        t = round(t + 0.25, 6)


def test_udp_probes_are_retransmitted_until_the_probe_timeout() -> None:
    s = _set(n=1, probe_interval=10.0, probe_timeout=3.0)
    prober = GatewayProber([s], _via, now=0.0, token="t")
    sent = [0.0] if prober.handle_timers(0.0) else []
    t = 0.0
    while t < 3.0:
        t = prober.next_deadline() or 99.0
        if t < 3.0 and prober.handle_timers(t):
            sent.append(t)
    assert sent == [0.0, 0.5, 1.5]  # T1, then doubled (the next at 3.5 is past the timeout)
    prober.handle_timers(3.0)
    assert s.gateways[0].last_result == "timeout"


@pytest.mark.parametrize(("status", "alive"), [(200, True), (404, True), (405, True), (408, False), (500, False),
                                               (503, False), (603, True)])
def test_which_answers_mean_alive(status: int, alive: bool) -> None:
    s = _set(n=1, probe_interval=10.0, down_after=1, up_after=1)
    prober = GatewayProber([s], _via, now=0.0, token="t")
    (o,) = prober.handle_timers(0.0)
    assert prober.on_response(_answer(o.data, 100), 0.1)  # provisional: ours, settles nothing
    assert s.gateways[0].last_result == ""
    assert prober.on_response(_answer(o.data, status), 0.2)
    assert s.gateways[0].state == (UP if alive else DOWN)
    assert prober.on_response(_answer(o.data, status), 0.3)  # a repeat of a settled one is still ours


def test_a_transport_error_fails_the_probe_at_once_and_other_responses_are_not_ours() -> None:
    s = GatewaySet("t", [Gateway("t", "10.0.0.1", 5060, "tcp")], probe_interval=10.0, down_after=1)
    prober = GatewayProber([s], _via, now=0.0, token="t")
    (o,) = prober.handle_timers(0.0)
    assert o.transport == "tcp" and ";transport=tcp" in o.data.decode().split("\r\n")[0]
    assert not prober.on_transport_error(b"something else", 0.1)
    assert prober.on_transport_error(o.data, 0.1) and s.gateways[0].state == DOWN
    other = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\n"
                          b"To: <sip:b@h>\r\nCall-ID: someone-else\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(other, Response) and not prober.on_response(other, 0.2)


def test_sets_without_probing_are_never_probed() -> None:
    prober = GatewayProber([_set(probe_interval=0.0)], _via, now=0.0)
    assert prober.next_deadline() is None and prober.handle_timers(100.0) == []


# ------------------------------------------------------------------------------------------- routes
def _uri(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


def test_routes_take_the_longest_prefix_and_prefer_a_named_domain() -> None:
    routes = parse_gateways(
        {"a": {"destinations": ["10.0.0.1"]}, "b": {"destinations": ["10.0.0.2"]},
         "c": {"destinations": ["10.0.0.3"]}},
        [{"prefix": "+1", "set": "a"}, {"prefix": "+1800", "set": "b", "strip": 1, "add": "00"},
         {"domain": "pstn.example.com", "set": "c"}, {"prefix": "+1", "domain": "Carrier.example", "set": "c"}],
    ).routes
    assert routes.match(_uri("sip:+15551234@leansip")).set_name == "a"  # type: ignore[union-attr]
    toll_free = routes.match(_uri("sip:+18005551234@leansip"))
    assert toll_free is not None and toll_free.set_name == "b" and toll_free.rewrite("+18005551234") == "0018005551234"
    assert routes.match(_uri("sip:+15551234@carrier.example")).set_name == "c"  # type: ignore[union-attr]
    assert routes.match(_uri("sip:bob@pstn.example.com")).set_name == "c"  # type: ignore[union-attr]
    assert routes.match(_uri("sip:bob@leansip")) is None
    assert len(GatewayRoutes([])) == 0


def _invite(ruri: str) -> Request:
    msg = parse_message((f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
                         "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\n"
                         "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def test_a_request_is_routed_to_its_set_with_the_user_rewritten() -> None:
    gateways = parse_gateways(
        {"pstn": {"destinations": ["10.0.0.1", {"address": "10.0.0.2:5080", "transport": "tcp"}]},
         "trunk": {"destinations": ["10.0.0.3"], "rewrite_host": True}},
        [{"prefix": "0", "strip": 1, "add": "+49", "set": "pstn"}, {"domain": "trunk.example", "set": "trunk"}])
    routed = gateways.route(_invite("sip:03012345@leansip;user=phone"))
    assert routed is not None and routed[0].name == "pstn" and routed[1] == "sip:+493012345@leansip;user=phone"
    pstn = gateways.sets["pstn"]
    assert Gateways.request_uri(pstn, pstn.gateways[1], routed[1]) == routed[1]  # the next hop only
    trunk_routed = gateways.route(_invite("sip:bob@trunk.example"))
    assert trunk_routed is not None and trunk_routed[1] == "sip:bob@trunk.example"
    trunk = gateways.sets["trunk"]
    assert Gateways.request_uri(trunk, trunk.gateways[0], trunk_routed[1]) == "sip:bob@10.0.0.3:5060"
    tcp = Gateway("trunk", "2001:db8::5", 5061, "tls")
    assert Gateways.request_uri(trunk, tcp, "sip:bob@trunk.example") == "sip:bob@[2001:db8::5]:5061;transport=tls"
    assert gateways.route(_invite("sip:bob@leansip")) is None and gateways.get("pstn") is pstn
    assert caller_of(_invite("sip:bob@leansip")) == "alice@example.com"


def test_a_full_set_table_parses_into_gateways() -> None:
    sets = parse_gateways({"pstn": {
        "policy": "priority", "probe_interval": 5, "probe_timeout": 1.5, "down_after": 3, "up_after": 1,
        "timeout": 3, "failover_on": [408, 500, 503], "rewrite_host": True,
        "destinations": [{"address": "gw1.example.com", "transport": "TLS", "priority": 1},
                         {"address": "[2001:db8::1]:5080", "weight": 4}, "192.0.2.7:5070"]}}, None).sets
    s = sets["pstn"]
    assert (s.policy, s.probe_interval, s.probe_timeout, s.down_after, s.up_after, s.timeout) == (
        "priority", 5.0, 1.5, 3, 1, 3.0)
    assert s.failover_on == (408, 500, 503) and s.rewrite_host
    assert [(g.host, g.port, g.transport, g.weight, g.priority) for g in s.gateways] == [
        ("gw1.example.com", 5061, "tls", 1, 1), ("2001:db8::1", 5080, "udp", 4, 0), ("192.0.2.7", 5070, "udp", 1, 0)]
    assert s.gateways[1].uri == "sip:[2001:db8::1]:5080" and s.gateways[0].uri == "sip:gw1.example.com:5061;transport=tls"


@pytest.mark.parametrize(("sets", "routes", "key", "words"), [
    ({"p": {"destinations": []}}, None, "gateways.p.destinations", "at least one"),
    ({"p": {}}, None, "gateways.p.destinations", "at least one"),
    ({"p": {"destinations": ["h"], "policy": "random"}}, None, "gateways.p.policy", "must be one of"),
    ({"p": {"destinations": ["h"], "polcy": "x"}}, None, "gateways.p.polcy", "unknown setting"),
    ({"p": {"destinations": ["h"], "timeout": 0}}, None, "gateways.p.timeout", "> 0"),
    ({"p": {"destinations": ["h"], "down_after": 0}}, None, "gateways.p.down_after", ">= 1"),
    ({"p": {"destinations": ["h"], "probe_interval": "5"}}, None, "gateways.p.probe_interval", "a number"),
    ({"p": {"destinations": ["h"], "failover_on": [200]}}, None, "gateways.p.failover_on", "final statuses"),
    ({"p": {"destinations": [{"address": "h", "transport": "sctp"}]}}, None, "gateways.p.destinations[0].transport",
     "one of"),
    ({"p": {"destinations": [{"address": "h:99999"}]}}, None, "gateways.p.destinations[0].address", "1-65535"),
    ({"p": {"destinations": [{"address": "sip:h"}]}}, None, "gateways.p.destinations[0].address", "host:port"),
    ({"p": {"destinations": [{"address": "::1"}]}}, None, "gateways.p.destinations[0].address", "brackets"),
    ({"p": {"destinations": [{"weight": 2}]}}, None, "gateways.p.destinations[0].address", "missing"),
    ({"p": {"destinations": [{"address": "h", "weight": 0}]}}, None, "gateways.p.destinations[0].weight", ">= 1"),
    ({"p": {"destinations": [{"address": "h", "weight": True}]}}, None, "gateways.p.destinations[0].weight",
     "an integer"),
    ({"p q": {"destinations": ["h"]}}, None, "gateways.p q", "name"),
    ({"p": {"destinations": ["h"]}}, [{"prefix": "0", "set": "q"}], "gateway_routes[0].set", "no gateway set 'q'"),
    ({"p": {"destinations": ["h"]}}, [{"set": "p"}], "gateway_routes[0]", "prefix, a domain"),
    ({"p": {"destinations": ["h"]}}, [{"set": "p", "prefix": "0", "strip": -1}], "gateway_routes[0].strip", ">= 0"),
    ({"p": {"destinations": ["h"]}}, {"set": "p"}, "gateway_routes", "list of tables"),
])
def test_configuration_mistakes_name_the_key(sets: object, routes: object, key: str, words: str) -> None:
    with pytest.raises(GatewayConfigError) as info:
        parse_gateways(sets, routes)
    assert info.value.key == key and words in str(info.value)
