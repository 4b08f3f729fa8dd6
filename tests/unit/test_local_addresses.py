"""A listener knows its own addresses (IPv4 and IPv6, concrete and wildcard) in Request-URIs, Routes and Vias:
``OPTIONS sip:[::1]:P`` to an IPv6 listener is answered by the server (not forwarded to itself: 482), and so
is ``OPTIONS sip:[::1]`` without a port."""

from __future__ import annotations

import pytest

from leansip.server.core import ServerCore
from leansip.sip.message import Request
from tests.unit.proxy_kit import make_core, new_branch, parse_out, requests, responses

PORT = 5072
CLIENT6 = ("::1", 40000)


def _core(listen: list[tuple[str, str, int]], *, stateful: bool = False,
          local_ips: frozenset[str] = frozenset()) -> ServerCore:
    core = make_core(stateful=stateful)
    core.local_addresses = list(listen)
    core.local_ips |= set(local_ips)
    assert core.proxy is not None
    core.proxy.set_local(core.local_addresses)
    return core


def _options(ruri: str, src: tuple[str, int], *, route: str | None = None) -> bytes:
    host = f"[{src[0]}]" if ":" in src[0] else src[0]
    lines = [f"OPTIONS {ruri} SIP/2.0", f"Via: SIP/2.0/UDP {host}:{src[1]};branch={new_branch()};rport",
             "Max-Forwards: 70", "From: <sip:alice@leansip>;tag=f1", "To: <sip:x@leansip>",
             f"Call-ID: {new_branch()}@t", "CSeq: 1 OPTIONS"]
    if route:
        lines.append(f"Route: {route}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("stateful", [False, True], ids=["stateless", "stateful"])
@pytest.mark.parametrize("ruri", [f"sip:[::1]:{PORT}", "sip:[::1]", f"sip:[::1]:{PORT};transport=udp"])
def test_options_to_our_ipv6_address_is_answered(stateful: bool, ruri: str) -> None:
    core = _core([("udp", "::1", PORT)], stateful=stateful)
    out = parse_out(core.receive(_options(ruri, CLIENT6), CLIENT6, "udp", 1.0))
    assert requests(out) == [] and responses(out) == [200], out
    assert out[0].dest == CLIENT6


def test_another_port_of_our_host_is_not_us() -> None:
    core = _core([("udp", "::1", PORT)])
    out = parse_out(core.receive(_options(f"sip:[::1]:{PORT + 1}", CLIENT6), CLIENT6, "udp", 1.0))
    fwd = requests(out, "OPTIONS")
    assert len(fwd) == 1 and fwd[0].dest == ("::1", PORT + 1)
    assert isinstance(fwd[0].msg, Request)
    assert fwd[0].msg.header_values("via")[0].startswith(f"SIP/2.0/UDP [::1]:{PORT};branch=")


@pytest.mark.parametrize(("listen", "ruri", "src"), [
    (("udp", "::", PORT), f"sip:[2001:db8::5]:{PORT}", CLIENT6),
    (("udp", "::", PORT), f"sip:[::1]:{PORT}", CLIENT6),
    (("udp", "0.0.0.0", PORT), f"sip:192.0.2.5:{PORT}", ("192.0.2.9", 5060)),
    (("udp", "0.0.0.0", PORT), "sip:127.0.0.1", ("127.0.0.1", 5062)),
])
def test_wildcard_listener_knows_every_address_of_the_machine(listen: tuple[str, str, int], ruri: str,
                                                              src: tuple[str, int]) -> None:
    core = _core([listen], local_ips={"2001:db8::5", "192.0.2.5"})
    out = parse_out(core.receive(_options(ruri, src), src, "udp", 1.0))
    assert responses(out) == [200], out


def test_our_ipv6_route_is_removed() -> None:
    core = _core([("udp", "::1", PORT)])
    data = _options("sip:dave@[2001:db8::9]:5080", CLIENT6, route=f"<sip:[::1]:{PORT};lr>")
    out = parse_out(core.receive(data, CLIENT6, "udp", 1.0))
    fwd = requests(out, "OPTIONS")
    assert len(fwd) == 1 and fwd[0].dest == ("2001:db8::9", 5080)
    assert fwd[0].msg.header("route") is None


def test_response_with_our_ipv6_via_is_forwarded() -> None:
    core = _core([("udp", "::1", PORT)])
    out = parse_out(core.receive(_options(f"sip:dave@[::1]:{PORT + 1}", CLIENT6), CLIENT6, "udp", 1.0))
    fwd = requests(out, "OPTIONS")[0].msg
    vias = "".join(f"Via: {v}\r\n" for v in fwd.header_values("via"))
    resp = (f"SIP/2.0 200 OK\r\n{vias}From: {fwd.header('from')}\r\nTo: {fwd.header('to')};tag=x\r\n"
            f"Call-ID: {fwd.header('call-id')}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    back = parse_out(core.receive(resp, ("::1", PORT + 1), "udp", 1.1))
    assert responses(back) == [200] and back[0].dest == CLIENT6


def test_wildcard_listener_advertises_a_concrete_address() -> None:
    core = _core([("udp", "0.0.0.0", PORT)], local_ips={"192.0.2.5"})
    out = parse_out(core.receive(_options(f"sip:dave@192.0.2.77:{PORT}", ("192.0.2.9", 5060)),
                                 ("192.0.2.9", 5060), "udp", 1.0))
    fwd = requests(out, "OPTIONS")[0].msg
    assert fwd.header_values("via")[0].startswith(f"SIP/2.0/UDP 192.0.2.5:{PORT};")


def test_ipv6_address_in_another_spelling_is_still_us() -> None:
    core = _core([("udp", "::1", PORT)])
    for ruri in (f"sip:[0:0:0:0:0:0:0:1]:{PORT}", f"sip:[0::1]:{PORT}", "sip:[::0001]"):
        out = parse_out(core.receive(_options(ruri, CLIENT6), CLIENT6, "udp", 1.0))
        assert responses(out) == [200], (ruri, out)
