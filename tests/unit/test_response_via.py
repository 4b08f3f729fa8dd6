"""A response is routed by its next Via only when that Via is a usable SIP/2.0 Via (issue 23, part 1).

The Via grammar takes any ``protocol-name/version/transport`` (RFC 3261 25.1), so a fuzzer's byte copy such as
``SIP/2.z9hG4bK-9c010/UDP 127.0.0.1:53011`` parses. A response that matches no transaction goes on by its next
Via as a stateless proxy would send it (RFC 3261 16.7 step 2, 16.11): both proxies must drop it instead when
that Via is not SIP/2.0, names a transport we cannot send over, or a destination that is not a host and port,
and count the drop under one named reason.
"""

from __future__ import annotations

import pytest

from leansip.server.proxy import DROP_UNUSABLE_VIA
from leansip.server.routing import next_hop_of_response
from leansip.sip.uri import parse_via
from tests.unit.proxy_kit import ALICE, BOB1, PROXY, make_core

NOW = 1000.0

#: next Vias that parse but must not route a response, with why
UNUSABLE = [
    ("SIP/2.z9hG4bK-9c010/UDP 127.0.0.1:53011;rport;branch=z9hG4bK-a", "the version, from issue 23's fuzz run"),
    ("SIP/3.0/UDP 192.0.2.10:5062;branch=z9hG4bK-a", "another SIP version"),
    ("XIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-a", "another protocol"),
    ("SIP/2.0/FOO 192.0.2.10:5062;branch=z9hG4bK-a", "a transport we cannot send over"),
    ("SIP/2.0/UDP 192.0.2.10:0;branch=z9hG4bK-a", "port 0"),
    ("SIP/2.0/UDP 192.0.2.10:5062;rport=0;branch=z9hG4bK-a", "rport 0"),
    ("SIP/2.0/UDP 192.0.2.10:5062;received=no_such!host;branch=z9hG4bK-a", "received that is not a host"),
    ("SIP/2.0/UDP 192.0.2.10:5062;maddr=a..b;branch=z9hG4bK-a", "maddr that is not a host"),
]

#: next Vias that do route a response, with where to
USABLE = [
    ("SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-a", ("192.0.2.10", 5062)),
    ("SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-a", ("192.0.2.10", 5060)),
    ("sip / 2.0 / udp 192.0.2.10 : 5062;branch=z9hG4bK-a", ("192.0.2.10", 5062)),
    ("SIP/2.0/UDP 10.9.9.9:5060;received=192.0.2.10;rport=40000;branch=z9hG4bK-a", ("192.0.2.10", 40000)),
    ("SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-a", ("2001:db8::1", 5070)),
    ("SIP/2.0/UDP 192.0.2.10:5062;maddr=239.1.1.1;ttl=1;branch=z9hG4bK-a", ("239.1.1.1", 5062)),
]


@pytest.mark.parametrize("text, why", UNUSABLE, ids=[u[1] for u in UNUSABLE])
def test_next_hop_of_an_unusable_via_is_none(text: str, why: str) -> None:
    assert next_hop_of_response(parse_via(text)) is None, why


@pytest.mark.parametrize("text, dest", USABLE, ids=[u[0][:24] for u in USABLE])
def test_next_hop_of_a_usable_via(text: str, dest: tuple[str, int]) -> None:
    assert next_hop_of_response(parse_via(text)) == dest


def stray_response(next_via: str, status: int = 200) -> bytes:
    """A response for no transaction whose top Via is the proxy's own, as the fuzz run sent."""
    return "\r\n".join([
        f"SIP/2.0 {status} Whatever", f"Via: SIP/2.0/UDP {PROXY[0]}:{PROXY[1]};branch=z9hG4bK-nothing",
        f"Via: {next_via}", "From: <sip:alice@leansip>;tag=1", "To: <sip:bob@leansip>;tag=2", "Call-ID: stray",
        "CSeq: 1 INVITE", "Content-Length: 0", "", ""]).encode()


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
@pytest.mark.parametrize("text, why", UNUSABLE, ids=[u[1] for u in UNUSABLE])
def test_response_is_not_routed_by_an_unusable_via(stateful: bool, text: str, why: str) -> None:
    core = make_core(stateful=stateful)
    assert core.receive(stray_response(text), BOB1, "udp", NOW) == [], why
    assert core.stats.drops == {DROP_UNUSABLE_VIA: 1}
    assert core.stats.forwarded_responses == 0


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
def test_response_for_no_transaction_goes_on_by_a_usable_via(stateful: bool) -> None:
    core = make_core(stateful=stateful)
    out = core.receive(stray_response(f"SIP/2.0/UDP {ALICE[0]}:{ALICE[1]};branch=z9hG4bK-a"), BOB1, "udp", NOW)
    assert [s.dest for s in out] == [ALICE]
    assert out[0].data.split(b"\r\n")[1] == f"Via: SIP/2.0/UDP {ALICE[0]}:{ALICE[1]};branch=z9hG4bK-a".encode()
    assert core.stats.drops == {} and core.stats.forwarded_responses == 1
