"""Property tests for the SIP message core: only SipParseError may escape, and valid messages round-trip.

Seeds are the golden messages in tests/data/sip plus, when present, the RFC 4475/5118 torture corpus (see
tests/unit/test_torture.py for where it is looked for). Each test keeps ``max_examples`` moderate so the suite
stays fast; tests/fuzz/fuzz_atheris.py runs the same harness for as long as one likes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leansip.sip.message import (
    Header,
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    validate_request,
    validate_response,
)
from leansip.sip.uri import SipURI, parse_name_addr, parse_uri, parse_via, quote, uri_equal

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ROOT = Path(__file__).resolve().parents[1]


def _torture_dir() -> Path:
    env = os.environ.get("LEANSIP_TORTURE_DIR")
    if env:
        return Path(env)
    return ROOT.parent.parent / "shared" / "sip-torture"


def _seeds() -> list[bytes]:
    paths = sorted((ROOT / "data" / "sip").glob("*.sip"))
    base = _torture_dir()
    if base.is_dir():
        paths += sorted((base / "rfc4475").glob("*.dat"))
        paths += sorted(p for p in (base / "rfc5118-wire").glob("*") if p.is_file())
    return [p.read_bytes() for p in paths]


SEEDS = _seeds()


def exercise(data: bytes) -> Request | Response | None:
    """What a server may do with a datagram: parse, validate, read every lazy view, reply, forward.

    Returns the message when it parsed and validated. Any exception but SipParseError fails the test.
    """
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert isinstance(exc.status, int) and exc.reason
        if exc.message is not None:
            _views(exc.message)
        return None
    # the views must behave whether or not validation ran first
    _views(msg)
    try:
        if isinstance(msg, Request):
            validate_request(msg)
        else:
            validate_response(msg)
    except SipParseError as exc:
        if exc.message is not None:
            _views(exc.message)
        return None
    _views(msg)
    # a validated message can be forwarded: a proxy's edits give a message that parses again
    copy = msg.copy()
    copy.pop_first_value("via")
    copy.add_header("via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKfuzz", first=True)
    copy.set_header("max-forwards", "69")
    forwarded = parse_message(copy.to_bytes())
    assert forwarded.top_via.host == "proxy.example.com" and forwarded.body == msg.body
    return msg


def _attempt(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except SipParseError:
        return None


def _views(msg: Request | Response) -> None:
    getters = [
        lambda: msg.call_id,
        lambda: msg.cseq,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.from_tag,
        lambda: msg.to_tag,
        lambda: msg.from_.uri,
        lambda: msg.to.uri,
        lambda: msg.vias,
        lambda: msg.top_via,
        lambda: msg.branch,
        lambda: [c.uri for c in msg.contacts],
        lambda: msg.max_forwards,
        lambda: msg.expires,
        lambda: msg.int_header("content-length"),
        lambda: [msg.header_values(h.name) for h in msg.headers],
        lambda: [parse_name_addr(v).uri for v in msg.header_values("route")],
        lambda: [parse_name_addr(v).uri for v in msg.header_values("record-route")],
    ]
    if isinstance(msg, Request):
        getters.append(lambda: msg.ruri)
        getters.append(lambda: make_response(msg, 400, to_tag="x").to_bytes())
    for get in getters:
        _attempt(get)
    out = msg.to_bytes()
    assert isinstance(out, bytes)
    _attempt(lambda: parse_message(out))
    _attempt(lambda: msg.copy().pop_first_value("via"))


SPECIAL = [b"\r", b"\n", b"\r\n", b"\x00", b'"', b"<", b">", b",", b";", b":", b" ", b"\t", b"\\", b"%",
           b"[", b"]", b"@", b"=", b"/", b"?", b"\xb2", b"\xff", b"9" * 12, b"9" * 5000, b"\r\n ", b"\r\n\r\n"]


# A dictionary of values for numeric fields (CSeq, Content-Length, ports, status codes, ttl ...), as AFL
# dictionaries do: random flips alone almost never land a latin-1 digit or a 5000-digit number in one.
NUMBERS = [b"", b"-1", b"\xb2", b"1\xb9", b"0" * 20 + b"1", b"4294967296", b"9" * 5000, b"1 2", b"0x10", b"\x00"]
# numbers that are whole field values: after ":" or "=" or a space (CSeq, Content-Length, ports, ttl, codes)
DIGITS = re.compile(rb"(?<=[:= ])\d+(?![.\w])")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["number", "flip", "truncate", "number", "dupline", "insert", "delete", "dropline"]))
        pos = draw(st.integers(0, max(0, len(data))))
        if op == "number":
            head_end = bytes(data).find(b"\r\n\r\n")
            runs = list(DIGITS.finditer(bytes(data), 0, head_end if head_end >= 0 else len(data)))
            if runs:
                # uniform choice: hypothesis' own draws favour the first run, the "2" of "SIP/2.0"
                rnd = draw(st.randoms(use_true_random=False))
                run = rnd.choice(runs)
                data[run.start() : run.end()] = rnd.choice(NUMBERS)
        elif op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(SPECIAL))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "dupline":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.lists(st.sampled_from([b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP h", b"v:",
                                 b"CSeq: 1 INVITE", b"Call-ID: x", b"f: <sip:a@b>;tag=1", b"t: sip:c@d", b"l: 3",
                                 b"Content-Length: 0", b"m: *", b" folded", b"", b"abc", b"\r", b"\n", b"\r\n",
                                 b'To: "q <sip:x@y>', b"Max-Forwards: 70"]), max_size=14))
def test_random_lines(parts: list[bytes]) -> None:
    exercise(b"\r\n".join(parts))


@FUZZ
@given(mutated())
def test_mutated_seeds(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.text(max_size=120))
def test_uri_and_via_parsers_only_raise_parse_error(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via):
        _attempt(lambda parse=parse: parse(text))  # type: ignore[misc]
    for prefix in ("sip:", "sips:u@", "SIP/2.0/UDP ", "<sip:", '"'):
        _attempt(lambda p=prefix: parse_uri(p + text))  # type: ignore[misc]
        _attempt(lambda p=prefix: parse_via(p + text))  # type: ignore[misc]
        _attempt(lambda p=prefix: parse_name_addr(p + text))  # type: ignore[misc]


def test_every_seed_survives_exercise() -> None:
    assert len(SEEDS) >= 7
    for seed in SEEDS:
        exercise(seed)


# ----------------------------------------------------------------------------------------- generated messages
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
LABEL = st.builds(
    lambda a, mid, b: a + mid + b if mid or b else a,
    st.sampled_from(ALNUM),
    st.text(ALNUM + "-", max_size=8),
    st.text(ALNUM, max_size=1),
).map(lambda s: s.rstrip("-") or "x")
HOSTNAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
IPV6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]")
HOST = st.one_of(HOSTNAME, IPV4, IPV6)
PORT = st.one_of(st.none(), st.integers(1, 65535))
TOKEN = st.text("ABCXYZabcxyz0189-.!%*_+`'~", min_size=1, max_size=12)
USER = st.text(ALNUM + "ABC-_.!~*'()&=+$,;?/", min_size=1, max_size=12) | st.builds(
    lambda h, t: f"%{h:02X}{t}", st.integers(0, 255), st.text(ALNUM, max_size=4)
)
DISPLAY = st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=12)
METHOD = st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "BYE", "MESSAGE", "SUBSCRIBE"]) | st.text(
    "ABCDEFXYZ-", min_size=1, max_size=10
)


@st.composite
def sip_uri(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), USER))
    host = draw(HOST)
    port = draw(PORT)
    params = draw(st.dictionaries(TOKEN.map(str.lower), st.one_of(st.none(), TOKEN), max_size=3))
    text = f"{scheme}:" + (f"{user}@" if user else "") + host + (f":{port}" if port is not None else "")
    return text + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@st.composite
def sip_message(draw: st.DrawFn) -> tuple[Request | Response, dict[str, object]]:
    facts: dict[str, object] = {}
    vias = []
    for _ in range(draw(st.integers(1, 3))):
        branch = "z9hG4bK" + draw(TOKEN)
        host, port = draw(HOST), draw(PORT)
        transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]))
        sep = draw(st.sampled_from(["/", " / "]))
        vias.append((f"SIP{sep}2.0{sep}{transport} {host}" + (f":{port}" if port else "") + f";branch={branch}",
                     host, port, branch))
    facts["vias"] = [(h, p, b) for _, h, p, b in vias]
    via_lines: list[str] = []
    if draw(st.booleans()):
        via_lines.append(", ".join(v[0] for v in vias))
    else:
        via_lines.extend(v[0] for v in vias)
    method = draw(METHOD)
    cseq = draw(st.integers(0, 2**31 - 1))
    from_uri, to_uri = draw(sip_uri()), draw(sip_uri())
    display = draw(DISPLAY)
    from_tag = draw(TOKEN)
    facts.update(method=method, cseq=cseq, from_uri=from_uri, to_uri=to_uri, from_tag=from_tag, display=display)
    headers = [Header("via", v) for v in via_lines]
    headers += [
        Header("from", f"{quote(display)} <{from_uri}>;tag={from_tag}"),
        Header("to", f"<{to_uri}>"),
        Header("call-id", draw(TOKEN) + "@" + draw(HOSTNAME)),
        Header("cseq", f"{cseq} {method}"),
        Header("max-forwards", str(draw(st.integers(0, 255)))),
    ]
    contacts = draw(st.lists(sip_uri(), max_size=3))
    facts["contacts"] = contacts
    if contacts:
        headers.append(Header("contact", ", ".join(f"<{c}>;q=0.{i}" for i, c in enumerate(contacts))))
    body = draw(st.binary(max_size=64))
    headers.append(Header("content-length", str(len(body))))
    msg: Request | Response
    if draw(st.booleans()):
        ruri = draw(sip_uri())
        facts["ruri"] = ruri
        msg = Request(method, ruri, headers, body)
    else:
        msg = Response(draw(st.integers(100, 699)), draw(st.sampled_from(["OK", "", "Odd  reason", "D\xe9j\xe0"])),
                       headers, body)
    return msg, facts


@settings(FUZZ, max_examples=150)  # generating whole messages is the slow part
@given(sip_message())
def test_generated_messages_round_trip(case: tuple[Request | Response, dict[str, object]]) -> None:
    msg, facts = case
    data = msg.to_bytes()
    parsed = parse_message(data)
    assert type(parsed) is type(msg)
    assert parsed.start_line() == msg.start_line()
    assert [(h.name, h.value) for h in parsed.headers] == [(h.name, h.value) for h in msg.headers]
    assert parsed.body == msg.body
    assert parsed.to_bytes() == data  # untouched: byte for byte
    if isinstance(parsed, Request):
        validate_request(parsed)
        assert uri_equal(parsed.ruri, parse_uri(str(facts["ruri"])))
    else:
        validate_response(parsed)
    assert parsed.cseq == (facts["cseq"], facts["method"])
    assert [(v.host, v.port, v.branch) for v in parsed.vias] == facts["vias"]
    assert parsed.from_tag == facts["from_tag"] and parsed.to_tag is None
    assert parsed.from_.display is not None and parsed.from_.display.startswith('"')
    assert str(parsed.from_.uri) == facts["from_uri"] and str(parsed.to.uri) == facts["to_uri"]
    assert [str(c.uri) for c in parsed.contacts] == facts["contacts"]
    for contact in parsed.contacts:
        assert isinstance(contact.uri, SipURI)
    # the forwarding edits a proxy makes keep everything else intact
    parsed.pop_first_value("via")
    parsed.add_header("via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp", first=True)
    forwarded = parse_message(parsed.to_bytes())
    assert [(v.host, v.port, v.branch) for v in forwarded.vias] == [("proxy.example.com", None, "z9hG4bKp")] + list(
        facts["vias"]  # type: ignore[call-overload]
    )[1:]
    assert forwarded.body == msg.body


@FUZZ
@given(sip_uri())
def test_generated_uris(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    assert str(uri) == text
    rebuilt = parse_uri(uri.build())
    assert uri_equal(uri, rebuilt) and uri_equal(rebuilt, uri)
    na = parse_name_addr(f"<{text}>;tag=t")
    assert na.tag == "t" and uri_equal(na.uri, uri)


BASE = (
    b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
    b"Call-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:a@h:5060>\r\n"
)
# inputs that once made the core raise ValueError instead of SipParseError (str.isdigit accepts '\xb2',
# int() refuses it and any number of more than 4300 digits)
KNOWN_CRASHERS = [
    b"SIP/2.0 2\xb20 OK\r\n\r\n",
    BASE + b"Content-Length: \xb2\r\n\r\nab",
    BASE.replace(b"CSeq: 1", b"CSeq: \xb9") + b"\r\n",
    BASE.replace(b"CSeq: 1", b"CSeq: " + b"1" * 5000) + b"\r\n",
    BASE.replace(b"branch=z9hG4bK1", b"branch=z9hG4bK1;ttl=" + b"1" * 5000) + b"\r\n",
    BASE.replace(b"h:5060", b"h:\xb2") + b"\r\n",
    BASE.replace(b"Max-Forwards: 70", b"Max-Forwards: \xb2") + b"\r\n",
    BASE.replace(b"SIP/2.0/UDP h", b"SIP/2.0/UDP h:\xb2") + b"\r\n",
]


def test_known_crashers() -> None:
    for data in KNOWN_CRASHERS:
        exercise(data)  # SipParseError somewhere (the Contact one only when its URI is read), nothing else
    for data in KNOWN_CRASHERS[:5]:
        assert exercise(data) is None  # these are refused by parse or validate
