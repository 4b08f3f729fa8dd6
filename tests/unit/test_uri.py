"""SIP/SIPS URIs, name-addr values and Via values (leansip.sip.uri)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.errors import SipParseError
from leansip.sip.uri import (
    AbsoluteURI,
    SipURI,
    Via,
    is_digits,
    is_token,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    quote,
    split_comma,
    unquote,
    uri_equal,
    uri_key,
    valid_host,
)

# text -> (scheme, user, password, host, port, params, headers)
URI_CASES: list[tuple[str, tuple[object, ...]]] = [
    ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None, {}, None)),
    ("sip:atlanta.com", ("sip", None, None, "atlanta.com", None, {}, None)),
    ("SIP:Bob@Example.COM", ("sip", "Bob", None, "Example.COM", None, {}, None)),
    (
        "sip:alice:secretword@atlanta.com;transport=tcp",
        ("sip", "alice", "secretword", "atlanta.com", None, {"transport": "tcp"}, None),
    ),
    (
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        ("sips", "alice", None, "atlanta.com", None, {}, "subject=project%20x&priority=urgent"),
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        ("sip", "+1-212-555-1212", "1234", "gateway.com", None, {"user": "phone"}, None),
    ),
    ("sips:1212@gateway.com", ("sips", "1212", None, "gateway.com", None, {}, None)),
    ("sip:alice@192.0.2.4", ("sip", "alice", None, "192.0.2.4", None, {}, None)),
    (
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        ("sip", None, None, "atlanta.com", None, {"method": "REGISTER"}, "to=alice%40atlanta.com"),
    ),
    ("sip:alice;day=tuesday@atlanta.com", ("sip", "alice;day=tuesday", None, "atlanta.com", None, {}, None)),
    ("sip:[2001:db8::10]", ("sip", None, None, "[2001:db8::10]", None, {}, None)),
    ("sip:[2001:db8::10]:5070", ("sip", None, None, "[2001:db8::10]", 5070, {}, None)),
    ("sip:[2001:db8::10:5070]", ("sip", None, None, "[2001:db8::10:5070]", None, {}, None)),
    ("sip:user@[::ffff:192.0.2.1]:5061;lr", ("sip", "user", None, "[::ffff:192.0.2.1]", 5061, {"lr": None}, None)),
    (
        "sips:a:p%40ss@host.example.com:5061;Transport=TLS;lr;maddr=239.255.255.1?h=v",
        (
            "sips",
            "a",
            "p%40ss",
            "host.example.com",
            5061,
            {"transport": "TLS", "lr": None, "maddr": "239.255.255.1"},
            "h=v",
        ),
    ),
    ("sip:%61lice@atlanta.com", ("sip", "%61lice", None, "atlanta.com", None, {}, None)),
    ("sip:user@example.com.", ("sip", "user", None, "example.com.", None, {}, None)),
    ("sip:h:0", ("sip", None, None, "h", 0, {}, None)),
    ("sip:h:65535", ("sip", None, None, "h", 65535, {}, None)),
]


@pytest.mark.parametrize(("text", "parts"), URI_CASES, ids=[c[0] for c in URI_CASES])
def test_parse_sip_uri(text: str, parts: tuple[object, ...]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers) == parts
    assert str(uri) == text  # the text as written is kept for forwarding
    # rebuilding from the parts gives a URI that parses to the same parts (names of params are lower-cased)
    rebuilt = parse_uri(uri.build())
    assert (rebuilt.scheme, rebuilt.user, rebuilt.password, rebuilt.host, rebuilt.port) == parts[:5]  # type: ignore[union-attr]
    assert (rebuilt.params, rebuilt.headers) == parts[5:]  # type: ignore[union-attr]
    assert uri_equal(uri, rebuilt)


def test_uri_properties() -> None:
    uri = parse_uri("sips:%61l%69ce@AtLanta.COM;transport=TCP")
    assert isinstance(uri, SipURI)
    assert uri.user_unescaped == "alice"
    assert uri.host_lower == "atlanta.com"
    assert uri.effective_port == 5061 and uri.transport == "tcp"
    assert uri.host_port == "AtLanta.COM"
    assert uri.aor() == "alice@atlanta.com"
    plain = parse_uri("sip:h:5070")
    assert isinstance(plain, SipURI)
    assert plain.effective_port == 5070 and plain.transport == "udp" and plain.aor() == "h"
    assert plain.host_port == "h:5070"
    assert parse_uri("sips:h").transport == "tls"  # type: ignore[union-attr]
    changed = uri.with_changes(port=5062, params={"lr": None})
    assert str(changed) == "sips:%61l%69ce@AtLanta.COM:5062;lr"
    assert uri.port is None and "transport" in uri.params  # the original is untouched
    escnull = parse_uri("sip:null-%00-null@example.com")
    assert escnull.user_unescaped == "null-\x00-null"  # type: ignore[union-attr]


def test_other_schemes_are_opaque() -> None:
    for text in ("tel:+1-201-555-0123", "isbn:2983792873", "nobodyKnowsThisScheme:totallyopaquecontent",
                 "soap.beep://192.0.2.103:3002", "http://www.example.com"):
        uri = parse_uri(text)
        assert isinstance(uri, AbsoluteURI)
        assert str(uri) == text and uri.aor() == text
        assert uri.scheme == text.split(":", 1)[0].lower()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@atlanta.com",
        "1sip:h",
        "sip:",
        "tel:",
        "sip:@h",
        "sip:a b@h",
        "sip:a@h\r\n",
        "<sip:a@h>",
        "sip:a@",
        "sip:a@h_b",
        "sip:a@-h",
        "sip:a@256.1.1.1",
        "sip:a@h:65536",
        "sip:a@h:",
        "sip:a@h:5o60",
        "sip:a@h:\u00b2",
        "sip:a@h:123456",
        "sip:2001:db8::10",
        "sip:[2001:db8::10",
        "sip:[2001:db8::10]x",
        "sip:[2001:db8::10]:",
        "sip:[h]",
        "sip:h;=x",
        "sip:h;a=",
        "sip:h;a b",
        "sip:a\"b@h",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


# RFC 3261 19.1.4: the equal and the not-equal pairs listed there.
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    # escaping is not significant in the password or in parameter values either
    ("sip:alice:secr%65t@atlanta.com", "sip:alice:secret@atlanta.com"),
    ("sip:h;transport=%74cp", "sip:h;transport=TCP"),
]
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # different usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # can resolve to different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # different port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # different header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that is what the name resolves to
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),  # equality is not transitive
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice:a@atlanta.com", "sip:alice:b@atlanta.com"),
    ("sip:h;maddr=239.1.1.1", "sip:h"),
    ("sip:h;user=phone", "sip:h;user=ip"),
    ("sip:h?a=1", "sip:h?a=2"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert uri_equal(ua, ub) and uri_equal(ub, ua)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_rfc3261_unequal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not uri_equal(ua, ub) and not uri_equal(ub, ua)


def test_uri_key() -> None:
    assert uri_key(parse_uri("sip:%61lice@AtLanta.COM;transport=TCP;foo=bar")) == "sip:alice@atlanta.com;transport=tcp"
    assert uri_key(parse_uri("sip:alice@atlanta.com:5060")) != uri_key(parse_uri("sip:alice@atlanta.com"))
    assert uri_key(parse_uri("tel:+123")) == "tel:+123"
    assert uri_equal(parse_uri("tel:+123"), parse_uri("tel:+123"))
    assert not uri_equal(parse_uri("tel:+123"), parse_uri("sip:+123@h"))


# name-addr: text -> (display, uri_text, params, bracketed)
NAME_ADDR_CASES: list[tuple[str, tuple[object, ...]]] = [
    ('"Alice" <sip:alice@atlanta.com>;tag=1928301774', ('"Alice"', "sip:alice@atlanta.com", {"tag": "1928301774"}, True)),
    ('"Alice \\"A\\" <Smith>" <sip:a@h>', ('"Alice \\"A\\" <Smith>"', "sip:a@h", {}, True)),
    ('"Bob"<sip:bob@h>', ('"Bob"', "sip:bob@h", {}, True)),
    ("caller<sip:caller@example.com>;tag=323", ("caller", "sip:caller@example.com", {"tag": "323"}, True)),
    ("Alice Smith <sip:a@h;lr>;tag=1;X", ("Alice Smith", "sip:a@h;lr", {"tag": "1", "x": None}, True)),
    ("<sip:a@h?Route=%3Csip:p%3E>", (None, "sip:a@h?Route=%3Csip:p%3E", {}, True)),
    ("<  sip:a@h  >", (None, "sip:a@h", {}, True)),
    ("sip:a@h;tag=1;expires=3", (None, "sip:a@h", {"tag": "1", "expires": "3"}, False)),
    ("  sip:a@h  ", (None, "sip:a@h", {}, False)),
    ("<isbn:2983792873>", (None, "isbn:2983792873", {}, True)),
    ('"" <sip:a@h> ; tag = x', ('""', "sip:a@h", {"tag": "x"}, True)),
    ("<sip:a@h>;q=0.7;+sip.instance=\"<urn:uuid:1>\"", (None, "sip:a@h", {"q": "0.7", "+sip.instance": '"<urn:uuid:1>"'}, True)),
]


@pytest.mark.parametrize(("text", "parts"), NAME_ADDR_CASES, ids=[c[0] for c in NAME_ADDR_CASES])
def test_parse_name_addr(text: str, parts: tuple[object, ...]) -> None:
    na = parse_name_addr(text)
    assert (na.display, na.uri_text, na.params, na.bracketed) == parts
    assert na.tag == na.params.get("tag")
    # build() always writes the <> form, which parses back to the same value
    again = parse_name_addr(na.build())
    assert (again.display, again.uri_text, again.params) == parts[:3]
    assert str(na) == na.build()


def test_name_addr_uri_is_parsed_lazily() -> None:
    na = parse_name_addr("<sip:a@bad_host>;tag=1")
    assert na.tag == "1"
    with pytest.raises(SipParseError):
        na.uri  # noqa: B018
    assert parse_name_addr("Bob <sips:bob@h:5061>").uri.port == 5061  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"unterminated <sip:a@h>',
        '"x" sip:a@h',
        "Bell, Alexander <sip:a@h>",
        "a@b <sip:a@h>",
        "<sip:a@h",
        "<>",
        "<sip:a@h> junk",
        "<sip:a@h>;tag=",
        "<sip:a@h>;tag=\"x",
        "sip:a@h?Route=x",
        "<sip:a@h>;;",
    ],
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


# Via: text -> (protocol, transport, host, port, params)
VIA_CASES: list[tuple[str, tuple[object, ...]]] = [
    (
        "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        ("SIP/2.0", "UDP", "pc33.atlanta.com", None, {"branch": "z9hG4bK776asdhds"}),
    ),
    (
        # RFC 3261 20.42, unfolded: LWS around the '/' and around the ':' before the port (COLON = SWS ":" SWS)
        "SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1",
        (
            "SIP/2.0",
            "UDP",
            "first.example.com",
            4000,
            {"ttl": "16", "maddr": "224.2.0.1", "branch": "z9hG4bKa7c6a8dlze.1"},
        ),
    ),
    (
        "SIP/2.0/UDP [::1] :5060;branch=z9hG4bK1",
        ("SIP/2.0", "UDP", "[::1]", 5060, {"branch": "z9hG4bK1"}),
    ),
    (
        "SIP / 2.0 / UDP first.example.com:4000;ttl=16 ;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1",
        (
            "SIP/2.0",
            "UDP",
            "first.example.com",
            4000,
            {"ttl": "16", "maddr": "224.2.0.1", "branch": "z9hG4bKa7c6a8dlze.1"},
        ),
    ),
    (
        "SIP/2.0/TCP 192.0.2.1:5060 ; branch = z9hG4bK1 ; received=192.0.2.9;rport",
        ("SIP/2.0", "TCP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "received": "192.0.2.9", "rport": None}),
    ),
    (
        "sip/2.0/tls h;rport=5071;RECEIVED=10.0.0.1",
        ("SIP/2.0", "TLS", "h", None, {"rport": "5071", "received": "10.0.0.1"}),
    ),
    (
        "SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3;received=[2001:db8::9:255]",
        ("SIP/2.0", "UDP", "[2001:db8::9:1]", 6050, {"branch": "z9hG4bKas3", "received": "[2001:db8::9:255]"}),
    ),
    (
        "SIP/2.0/UDP 192.0.2.1;received=2001:db8::9:255;branch=z9hG4bKx",
        ("SIP/2.0", "UDP", "192.0.2.1", None, {"received": "2001:db8::9:255", "branch": "z9hG4bKx"}),
    ),
    (
        "SIP/2.0/UNKNOWN-TRANSPORT h.example.com;branch=z9hG4bK.x;x=\"quoted;value\"",
        ("SIP/2.0", "UNKNOWN-TRANSPORT", "h.example.com", None, {"branch": "z9hG4bK.x", "x": '"quoted;value"'}),
    ),
]


@pytest.mark.parametrize(("text", "parts"), VIA_CASES, ids=lambda v: str(v)[:40])
def test_parse_via(text: str, parts: tuple[object, ...]) -> None:
    via = parse_via(text)
    assert (via.protocol, via.transport, via.host, via.port, via.params) == parts
    assert via.branch == via.params.get("branch")
    assert via.sent_by == (via.host if via.port is None else f"{via.host}:{via.port}")
    assert str(via) == text.strip()
    again = parse_via(via.build())
    assert (again.protocol, again.transport, again.host, again.port, again.params) == parts


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0/UDP",
        "SIP/2.0 UDP h",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h:port",
        "SIP/2.0/UDP bad_host",
        "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h;ttl=256",
        "SIP/2.0/UDP h;ttl=" + "1" * 5000,
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;rport=65536",
        "SIP/2.0/UDP h;rport=\u00b2",
        "SIP/2.0/UDP h;;branch=z9hG4bK1",
        "SIP/2.0/UDP h;branch=z9hG4bK1;",
        "SIP/2.0/UDP h junk",
        "SIP/2.0/UDP h:",
        "SIP/2.0/UDP h : ;branch=z9hG4bK1",
        "SIP/2.0/UDP h:5060:5060",
        "SIP/2.0/UDP [2001:db8::1",
    ],
)
def test_via_errors(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_via(text)
    assert info.value.status == 400


def test_via_build() -> None:
    via = Via("SIP/2.0", "UDP", "h", 5060, {"branch": "z9hG4bK1", "rport": None})
    assert str(via) == "SIP/2.0/UDP h:5060;branch=z9hG4bK1;rport"


def test_helpers() -> None:
    assert is_token("INVITE") and is_token("z9hG4bK.!%*_+`'~-") and not is_token("") and not is_token("a b")
    assert is_digits("0123") and not is_digits("") and not is_digits("\u00b2") and not is_digits("-1")
    assert valid_host("[::1]") and valid_host("a-b.example.com") and not valid_host("[::1") and not valid_host("")
    assert split_comma(' a , "b,c" ,<d,e>, ') == ["a", '"b,c"', "<d,e>", ""]
    assert split_comma("  ") == [] and split_comma("x") == ["x"]
    assert parse_params(' ; A = "x;y" ; b') == {"a": '"x;y"', "b": None}
    assert parse_params("") == {}
    assert unquote('"a\\"b\\\\c"') == 'a"b\\c' and unquote("plain") == "plain"
    assert unquote(quote('he said "hi" \\o/')) == 'he said "hi" \\o/'
    with pytest.raises(SipParseError):
        parse_params("x=1")
    with pytest.raises(SipParseError):
        split_comma('"open, never closed')


def _same_outcome(fast: Callable[[str], Any], full: Callable[[str], Any], text: str) -> tuple[Any, Any] | None:
    """Check that a fast-path parser gives what the full parser gives for ``text``: the same error reason, or
    an equal value with its parameters in the same order. Returns (fast, full) results, or None after an error."""
    try:
        expected = full(text)
    except SipParseError as exc:
        with pytest.raises(SipParseError) as info:
            fast(text)
        assert info.value.reason == exc.reason
        return None
    got = fast(text)
    assert got == expected
    assert list(got.params) == list(expected.params)
    return got, expected


@pytest.mark.parametrize("text", [
    "<sip:alice@example.com>;tag=1928301774",
    '"Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf',
    "sip:carol@chicago.example.com;tag=887s",
    "sip:carol@chicago.example.com;transport=tcp;tag=887s",
    "<sip:a@h;transport=tcp>;foo=bar;tag=x-y.z!",
    '"a;tag=b" <sip:x@h>',
    '"x>" <sip:a@h>;tag=1',
    "<sip:a@h>;tag=1;tag=2",
    "<sip:a@h> ;tag=1",
    "<sip:a@h>;tag=1 ",
    "<sip:a@h>;TAG=1",
    "<sip:a@h>;tag=",
    "<sip:a@h>;tag=a b",
    "<sip:a@h>;tag=\"q\"",
    "<sip:a;tag=in-uri@h>",
    "<sip:a@h>;tag=1;x",
    "<>;tag=1",
    "bad uri;tag=1",
])
def test_tagged_name_addr_shortcut_matches_the_full_parse(text: str) -> None:
    """parse_name_addr() answers a tagged value from the cached parse of the rest (tags are new in every
    dialog): the result, or the error, must be what the full parse gives."""
    from leansip.sip.uri import _parse_name_addr, parse_name_addr

    for _ in range(2):  # cold, then with the untagged part cached
        pair = _same_outcome(parse_name_addr, _parse_name_addr, text)
        if pair is None:
            return
        got, expected = pair
        assert str(got.uri) == str(expected.uri)


_ODD = ["", " ", "\t", "\r\n", "\x0b", "\xa0", ":", ";", "[", "=", ",", "ü", "*", '"q"']


@st.composite
def _via_texts(draw: st.DrawFn) -> str:
    """Well-formed Vias half of the time (so the fast path runs and succeeds), the other half with odd pieces and
    characters dropped in."""
    if draw(st.booleans()):
        head = (f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS', 'WS', 'WSS', 'SCTP', 'TLS-SCTP']))} "
                f"{draw(st.sampled_from(['host.example.com', '192.0.2.1', 'h-1.x', 'bad_host', '1.2.3.999']))}"
                f"{draw(st.sampled_from(['', ':5060', ':1', ':65535', ':65536', ':', ':x', ':007']))}")
        params = draw(st.lists(st.sampled_from(
            ["branch=z9hG4bK77", "branch=", "rport", "rport=5", "rport=99999", "ttl=16", "ttl=256",
             "received=192.0.2.2", "maddr=224.2.0.1", "BRANCH=z9hG4bK1", "x"]), min_size=1, max_size=4))
        return head + "".join(f";{p}" for p in params) + draw(st.sampled_from(["", " ", "\t", "\r\n"]))
    parts = [
        draw(st.sampled_from(["SIP/2.0/", "SIP/2.0/", "SIP/2.0/", "sip/2.0/", "SIP / 2.0 / ", "SIP/2.1/"])),
        draw(st.sampled_from(["UDP", "TCP", "TLS", "WSS", "SCTP", "udp", "XYZ", "UDP;x"])),
        draw(st.sampled_from([" ", " ", "  ", "\t", ""])),
        draw(st.sampled_from(["host.example.com", "192.0.2.1", "[2001:db8::1]", "[::1", "h_x", "", "a b"])),
        draw(st.sampled_from(["", "", ":5060", ":", ":65536", ":999999", ": 4000", ":1:2", ":x"])),
    ]
    params = draw(st.lists(st.sampled_from(
        ["branch=z9hG4bK77", "branch=", "rport", "rport=5", "rport=x", "ttl=16", "ttl=300",
         "received=192.0.2.2", "maddr=224.2.0.1", "x=a b", '"q"', ""]), max_size=4))
    parts += [f";{p}" for p in params]
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(parts)))
        parts.insert(i, draw(st.sampled_from(_ODD)))
    return "".join(parts)


@given(_via_texts())
@settings(max_examples=3000, deadline=None)
def test_via_fast_path_agrees_with_the_grammar(text: str) -> None:
    """_parse_via() (under the cache) splits the usual Via form with string operations; whatever it accepts, rejects or builds
    must be what the full grammar gives."""
    from leansip.sip.uri import _parse_via, _parse_via_grammar

    _same_outcome(_parse_via, _parse_via_grammar, text)


@pytest.mark.parametrize("text", [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
    "SIP/2.0/TCP client.example.com;branch=z9hG4bK1;received=192.0.2.9",
    "SIP/2.0/UDP h:;branch=z9hG4bK1",
    "SIP/2.0/UDP h:70000;branch=z9hG4bK1",
    "SIP/2.0/UDP h:5060;branch=",
    "SIP/2.0/UDP h:5060;rport=abc",
    "SIP/2.0/UDP h:5060 ;branch=z9hG4bK1",
    "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1",
    "SIP/2.0/UDP first.example.com: 4000;branch=z9hG4bK1",
])
def test_via_fast_path_examples(text: str) -> None:
    from leansip.sip.uri import _parse_via, _parse_via_grammar

    _same_outcome(_parse_via, _parse_via_grammar, text)


# The regexes _parse_uri used on every URI before its checks got regex-free fast paths: kept here as the grammar
# the fast paths must agree with.
_GRAMMAR_BAD_CHAR = re.compile(r"[ \t\r\n<>]")
_GRAMMAR_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_GRAMMAR_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/:\[\]#{}|^`\\]+\Z")


def _uri_by_grammar(text: str) -> str | None:
    """Which check the URI grammar fails first (the reason _parse_uri gives), or None when it passes them."""
    if not text or _GRAMMAR_BAD_CHAR.search(text):
        return f"bad URI {text[:60]!r}"
    scheme, colon, rest = text.partition(":")
    if not colon or not _GRAMMAR_SCHEME.match(scheme):
        return f"URI without a scheme: {text[:60]!r}"
    if scheme.lower() in ("sip", "sips"):
        at = rest.rfind("@")
        if at >= 0:
            user = rest[:at].partition(":")[0]
            if not user or not _GRAMMAR_USER.match(user):
                return f"bad user part in URI {text[:60]!r}"
    return None


_URI_PIECES = ["sip", "sips", "SIP", "Sip", "tel", "x-1", "1x", "", ":", "@", "alice", "Bob7", "+1-555", "a b",
               "a\tb", "<", ">", "\r\n", "ü", "é9", "١", "%41", "user;x=y", "h.example", "127.0.0.1", ":5060",
               ";transport=tcp", "?h=v", "[::1]", "pw", "²"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_URI_PIECES), min_size=1, max_size=7))
def test_uri_fast_checks_agree_with_the_grammar(pieces: list[str]) -> None:
    """_parse_uri checks the usual URI without a regex (`in` for the forbidden characters, the sip scheme by
    comparison, an ASCII-alphanumeric user by isalnum): it must fail exactly where the grammar's regexes fail,
    with the same reason (non-ASCII digits and letters, which str.isalnum accepts, included)."""
    from leansip.sip.uri import _parse_uri

    text = "".join(pieces)
    reason = _uri_by_grammar(text)
    try:
        _parse_uri(text)
    except SipParseError as exc:
        if reason is not None:
            assert exc.reason == reason
        else:  # the checks after these (host, port, parameters) may still refuse it, for their own reasons
            assert not exc.reason.startswith(("bad URI ", "URI without a scheme", "bad user part"))
        return
    assert reason is None


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("::1", True), ("2001:db8::5", True), ("[::1]", False), ("256.1.1.1", False),
    ("example.com", False), ("1.2.3", False), ("", False),
])
def test_is_ip_literal(host: str, expected: bool) -> None:
    """IP literals (registrar: does a contact need source routing; router: does a host need a lookup), the
    same answer from the cache the second time."""
    from leansip.sip.uri import is_ip_literal

    assert is_ip_literal(host) is expected
    assert is_ip_literal(host) is expected


_CLASS_ALPHABET = "aZz09-._!%*+`'~[]:/&$@?=#^|\" ;,\t\n\x00\x7f\x80\xb2\xe9\u0660\U0001d7ce"


@given(st.text(alphabet=_CLASS_ALPHABET, max_size=12))
@settings(max_examples=1500, deadline=None)
def test_character_tables_agree_with_the_grammar(text: str) -> None:
    """Each table-driven class check (``all_in``) says what the grammar's regex says, non-ASCII digits and
    letters (which ``str.isdigit``/``isalnum`` accept) and a trailing newline (which ``$`` would) included."""
    from leansip.sip import digest_parse
    from leansip.sip import uri as uri_mod

    def matches(pattern: str) -> bool:
        return re.fullmatch(pattern, text) is not None

    assert is_token(text) == matches(r"[A-Za-z0-9\-.!%*_+`'~]+")  # RFC 3261 25.1 token
    assert is_digits(text) == matches(r"[0-9]+")
    assert uri_mod._param_value_ok(text) == matches(uri_mod._PARAM_VALUE)  # gen-value / host characters
    assert digest_parse._is_token(text) == matches(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 7230 tchar


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from("0123456789 +-_x\xb2\u0661\u00bd"), max_size=22), st.integers(1, 18))
def test_digits_value_is_is_digits_and_int(text: str, max_len: int) -> None:
    """digits_value folds is_digits, a length limit and int() into one pass: -1 for anything else."""
    from leansip.sip.uri import digits_value, is_digits

    expected = int(text) if is_digits(text) and len(text) <= max_len else -1
    assert digits_value(text, max_len) == expected


def test_digits_value_limits() -> None:
    from leansip.sip.uri import digits_value

    assert digits_value("9" * 18, 18) == 10**18 - 1
    assert digits_value("0" * 10, 10) == 0 and digits_value("0" * 11, 10) == -1
    assert digits_value("1", 19) == -1  # beyond what a machine integer holds: refused, not wrapped
