"""The Via parse cache: what it hands out must be what parsing the text gives, whoever put it there.

Two builders put Vias in it by hand (the proxy's own Via, and a client's Via stamped with received/rport);
these tests hold both to :func:`leansip.sip.uri._parse_via` on the same text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.server.core import CoreSettings, ServerCore, stamp_via
from leansip.server.location import LocationService
from leansip.server.routing import Router
from leansip.sip import uri as uri_mod
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, parse_message
from leansip.sip.uri import _VIA_CACHE, _parse_via, parse_via

HOSTS = ["client.example.com", "192.0.2.1", "[2001:db8::1]", "h-1.x"]
PORTS = ["", ":5060", ":1", ":65535"]
PARAMS = ["branch=z9hG4bK77", "rport", "rport=5", "ttl=16", "received=192.0.2.2", "maddr=224.2.0.1",
          "BRANCH=z9hG4bK1", "x", "x=y"]


def _request(via: str) -> Request:
    msg = parse_message((f"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=1\r\n"
                         "To: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                         "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


@given(st.sampled_from(["UDP", "TCP", "TLS", "WS"]), st.sampled_from(HOSTS), st.sampled_from(PORTS),
       st.lists(st.sampled_from(PARAMS), min_size=1, max_size=4, unique_by=lambda p: p.split("=")[0].lower()),
       st.sampled_from([("192.0.2.1", 5060), ("198.51.100.7", 40000), ("2001:db8::9", 5062)]),
       st.sampled_from(["udp", "tcp"]))
@settings(max_examples=400, deadline=None)
def test_a_stamped_via_is_what_parsing_its_text_gives(transport: str, host: str, port: str, params: list[str],
                                                     source: tuple[str, int], over: str) -> None:
    req = _request(f"SIP/2.0/{transport} {host}{port}" + "".join(f";{p}" for p in params))
    stamp_via(req, source, over)
    stamped = req.top_via
    assert req.header("via") == stamped.text
    assert _VIA_CACHE.get(stamped.text, stamped) == stamped == _parse_via(stamped.text)


@pytest.mark.parametrize("listen", [[("udp", "127.0.0.1", 5060)], [("udp", "::1", 5070), ("tcp", "::1", 5071)],
                                    [("udp", "proxy.example.com", 5060), ("ws", "127.0.0.1", 8080),
                                     ("tls", "127.0.0.1", 5061)]])
def test_our_via_is_what_parsing_its_text_gives(listen: list[tuple[str, str, int]]) -> None:
    router = Router(ServerCore(CoreSettings(), LocationService()).services)
    router.set_local(listen)
    for transport in ("udp", "tcp", "tls", "ws", "wss"):
        text = router.via("z9hG4bK-abc.1", transport)
        assert _VIA_CACHE[text] == _parse_via(text) == parse_via(text)


def test_a_cached_via_is_the_same_parse_and_errors_are_not_cached() -> None:
    text = "SIP/2.0/UDP 192.0.2.1:5060;rport"  # no branch: kept whole (a branch takes _with_branch, below)
    first = parse_via(text)
    assert parse_via(text) is first and first == _parse_via(text)
    bad = "SIP/2.0/UDP 192.0.2.1:99999;branch=z9hG4bK1"
    for _ in range(2):  # refused the second time too, by the parser itself: a bad Via is never remembered
        with pytest.raises(SipParseError, match=r"^bad port in '192\.0\.2\.1:99999'$"):
            parse_via(bad)
        assert bad not in _VIA_CACHE
        assert not any(key.startswith("SIP/2.0/UDP 192.0.2.1:99999") for key in _VIA_CACHE)


BRANCHES = ["z9hG4bK1", "z9hG4bK-524287-1---b7d9e0d6", "z9hG4bK.x!%*_+`'~", "z9hG4bK[1]", "", "z9 hG", "a,b",
            "z9hG4bK\x7f"]


@given(st.sampled_from(["UDP", "TCP", "WS"]), st.sampled_from(HOSTS), st.sampled_from(PORTS),
       st.lists(st.sampled_from(PARAMS + ["branch=z9hG4bK0", "Branch=z9hG4bK9", "x=\"q;branch=1\""]), max_size=3),
       st.lists(st.sampled_from(PARAMS), max_size=2),
       st.sampled_from(BRANCHES), st.sampled_from(BRANCHES), st.sampled_from(["", " ", ";"]))
@settings(max_examples=600, deadline=None)
def test_a_via_from_its_branchless_shape_is_what_parsing_its_text_gives(
        transport: str, host: str, port: str, before: list[str], after: list[str], first: str, second: str,
        tail: str) -> None:
    """Two Vias that differ only in the branch: the second comes from the first's shape (_with_branch), and must
    equal the full parse of its own text, or fail as the full parse fails."""
    def text(branch: str) -> str:
        params = "".join(f";{p}" for p in before) + f";branch={branch}" + "".join(f";{p}" for p in after)
        return f"SIP/2.0/{transport} {host}{port}{params}{tail}"

    uri_mod._VIA_SHAPES.clear()
    for t in (text(first), text(second)):
        try:
            expected = _parse_via(t)
        except SipParseError:
            with pytest.raises(SipParseError):
                parse_via(t)
            continue
        got = parse_via(t)
        assert got == expected and got.params == expected.params and list(got.params) == list(expected.params)
        assert str(got) == str(expected)


def test_a_new_requests_via_is_parsed_from_its_shape_and_not_kept_whole() -> None:
    uri_mod._VIA_SHAPES.clear()
    texts = [f"SIP/2.0/UDP 192.0.2.9:5062;rport;branch=z9hG4bK-shape-{i};x=y" for i in range(3)]
    vias = [parse_via(t) for t in texts]
    assert list(uri_mod._VIA_SHAPES) == ["SIP/2.0/UDP 192.0.2.9:5062;rport;branch=;x=y"]
    assert [v.branch for v in vias] == [f"z9hG4bK-shape-{i}" for i in range(3)]
    assert all(t not in _VIA_CACHE for t in texts)
    assert vias[2] == _parse_via(texts[2]) and vias[2].params is not vias[1].params
