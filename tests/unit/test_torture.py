"""RFC 4475 and RFC 5118 torture messages through the message core.

Each message is parsed with :func:`parse_message` and checked with ``validate_request``/``validate_response``
as the server does, and the outcome is compared with two things:

* ``EXPECTED`` below, an explicit table of what leansip does today (so any change in behaviour fails here and
  has to be looked at), and
* the manifest beside the messages (``rfc4475.toml``, ``rfc5118.toml``), which says which outcomes are
  acceptable at all (so the table cannot drift into something the RFC forbids).

The messages live outside the repository (``../shared/sip-torture`` or ``$LEANSIP_TORTURE_DIR``); without them
the tests skip, or fail when ``LEANSIP_REQUIRE_EXTERNAL=1``.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from leansip.sip.message import (
    Message,
    Request,
    Response,
    SipParseError,
    parse_message,
    validate_request,
    validate_response,
)
from leansip.sip.uri import AbsoluteURI, SipURI

PARSES = "parses"  # parse_message and validation succeed; the server goes on to process the message
DROP = 0  # SipParseError with status 0: no reply can (or may) be sent

# name -> outcome: PARSES, or the status carried by the SipParseError (400, 505, DROP). Derived from the
# manifests' accept/tolerate lists; where the manifest allows both "parse it" and "400" we write down what
# leansip does.
EXPECTED: dict[str, str | int] = {
    # RFC 4475 3.1.1: valid messages
    "wsinv": PARSES,
    "intmeth": PARSES,
    "esc01": PARSES,
    "escnull": PARSES,
    "esc02": PARSES,
    "lwsdisp": PARSES,
    "longreq": PARSES,
    "dblreq": PARSES,  # the REGISTER; the INVITE bytes after it are discarded
    "semiuri": PARSES,
    "transports": PARSES,
    "mpart01": PARSES,
    "unreason": PARSES,
    "noreason": PARSES,
    # RFC 4475 3.1.2: invalid messages
    "badinv01": DROP,  # the Via itself is broken: nowhere to send a 400
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": DROP,  # a response: never answered
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": PARSES,  # the proxy must not forward the ?Route header; parsing is allowed
    "baddate": PARSES,
    "regbadct": PARSES,  # but the Contact view refuses it with 400, see test_regbadct_contact
    "badaspec": PARSES,  # spaces inside <> ignored
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": DROP,
    # RFC 4475 3.2, 3.3, 3.4
    "badbranch": PARSES,
    "insuf": 400,
    "unkscm": PARSES,
    "novelsc": PARSES,
    "unksm2": PARSES,
    "bext01": PARSES,
    "invut": PARSES,
    "regaut01": PARSES,
    "multi01": 400,
    "mcl01": 400,
    "bcast": PARSES,
    "zeromf": PARSES,
    "cparam01": PARSES,
    "cparam02": PARSES,
    "regescrt": PARSES,
    "sdp01": PARSES,
    "inv2543": PARSES,
    "test": 400,  # archive-only: no SIP version, no Via, a header line without a colon
    # RFC 5118 (wire form: CRLF line ends, Content-Length fixed)
    "ipv6-good": PARSES,
    "ipv6-bad": 400,
    "port-ambiguous": PARSES,
    "port-unambiguous": PARSES,
    "via-received-param-with-delim": PARSES,
    "via-received-param-no-delim": PARSES,
    "ipv6-in-sdp": PARSES,
    "mult-ip-in-header": PARSES,
    "mult-ip-in-sdp": PARSES,
    "ipv4-mapped-ipv6": PARSES,
    "ipv6-bug-abnf-3-colons": PARSES,
    "ipv6-correct-abnf-2-colons": PARSES,
}


def torture_dir() -> Path:
    env = os.environ.get("LEANSIP_TORTURE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "sip-torture"


def _require_corpus() -> Path:
    base = torture_dir()
    if not (base / "rfc4475.toml").is_file() or not (base / "rfc5118.toml").is_file():
        reason = f"SIP torture corpus not found at {base} (set LEANSIP_TORTURE_DIR)"
        if os.environ.get("LEANSIP_REQUIRE_EXTERNAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return base


@cache
def _manifest(base: Path) -> dict[str, dict[str, Any]]:
    """name -> manifest entry, with ``path`` added (RFC 5118 messages are read from the wire-form directory)."""
    out: dict[str, dict[str, Any]] = {}
    for toml_name, subdir in (("rfc4475.toml", "rfc4475"), ("rfc5118.toml", "rfc5118-wire")):
        with open(base / toml_name, "rb") as fh:
            data = tomllib.load(fh)
        for entry in data["message"]:
            entry = dict(entry)
            entry["path"] = base / subdir / entry.get("file", entry["name"])
            out[entry["name"]] = entry
    return out


def _entry(name: str) -> tuple[dict[str, Any], bytes]:
    base = _require_corpus()
    entry = _manifest(base)[name]
    return entry, entry["path"].read_bytes()


def _run(data: bytes) -> tuple[str | int, Message | None, SipParseError | None]:
    """What the server does first with a datagram: parse, then validate. Only SipParseError may escape."""
    try:
        msg = parse_message(data)
        if isinstance(msg, Request):
            validate_request(msg)
        else:
            validate_response(msg)
    except SipParseError as exc:
        return exc.status, None, exc
    return PARSES, msg, None


def _manifest_allows(outcome: str | int, entry: dict[str, Any]) -> bool:
    """Does the manifest accept (or tolerate) what the core's outcome leads the server to do?"""
    ok = list(entry.get("accept", [])) + list(entry.get("tolerate", []))
    reject = list(entry.get("reject", ["5xx"]))
    if entry["kind"] == "response":
        # responses are never answered: a well-formed one is absorbed after parsing, a bad one dropped
        return outcome == (PARSES if entry["wellformed"] else DROP)
    if outcome == DROP:
        return "none" in ok
    if outcome == PARSES:
        # the server goes on and answers something other than 400 (or forwards): the manifest must allow it
        return any(p not in ("none", "400") for p in ok)
    code = str(outcome)
    klass = f"{code[0]}xx"
    if code in ok:
        return True
    if code in reject or klass in reject:
        return False
    return klass in ok or "final" in ok


def _views(msg: Message) -> None:
    """Every structured view a server relies on must work on a well-formed message."""
    via = msg.top_via
    assert via.protocol == "SIP/2.0" and via.transport and via.host
    assert msg.vias[0].host == via.host
    num, method = msg.cseq
    assert num >= 0 and method
    assert msg.call_id
    for na in (msg.from_, msg.to):
        assert isinstance(na.uri, SipURI | AbsoluteURI)
    for contact in msg.contacts:
        assert isinstance(contact.uri, SipURI | AbsoluteURI)
    if isinstance(msg, Request):
        assert isinstance(msg.ruri, SipURI | AbsoluteURI)
        assert method == msg.method
        msg.max_forwards  # noqa: B018
        msg.expires  # noqa: B018


def test_table_covers_corpus() -> None:
    base = _require_corpus()
    files = {p.name for p in (base / "rfc4475").glob("*.dat")} | {p.name for p in (base / "rfc5118-wire").iterdir()}
    manifest = _manifest(base)
    assert {e["path"].name for e in manifest.values()} == files
    assert set(manifest) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_outcome(name: str) -> None:
    entry, data = _entry(name)
    outcome, msg, exc = _run(data)
    assert outcome == EXPECTED[name], f"{name}: {exc.reason if exc else 'parsed'}"
    assert _manifest_allows(outcome, entry), f"{name}: manifest does not accept {outcome}"
    if entry["wellformed"]:
        assert outcome == PARSES
    if msg is not None:
        assert isinstance(msg, Response if entry["kind"] == "response" else Request)
    if exc is not None:
        assert exc.reason
        if exc.message is not None:
            # a partial message offered for building the reply must be addressable
            assert isinstance(exc.message, Request)


@pytest.mark.parametrize("name", sorted(n for n, o in EXPECTED.items() if o == PARSES))
def test_torture_views_and_splice(name: str) -> None:
    entry, data = _entry(name)
    outcome, msg, _ = _run(data)
    assert msg is not None
    if entry["wellformed"]:
        _views(msg)
    out = msg.to_bytes()
    # nothing edited: the output is the input, byte for byte, up to the end of the body
    assert data.startswith(out)
    assert out.endswith(b"\r\n\r\n" + msg.body)
    again = parse_message(out)
    assert type(again) is type(msg)
    assert again.start_line() == msg.start_line()
    assert [(h.name, h.value) for h in again.headers] == [(h.name, h.value) for h in msg.headers]
    assert again.body == msg.body
    # the copy forwarded after a trivial edit still parses to the same structure, minus that edit
    again.set_header("max-forwards", "9")
    edited = parse_message(again.to_bytes())
    assert edited.header("max-forwards") == "9"
    assert edited.header_lines("max-forwards") == ["9"]
    assert [(h.name, h.value) for h in edited.headers if h.name != "max-forwards"] == [
        (h.name, h.value) for h in msg.headers if h.name != "max-forwards"
    ]


def test_dblreq_discards_trailing_invite() -> None:
    _, data = _entry("dblreq")
    msg = parse_message(data)
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert b"INVITE" not in msg.to_bytes()
    assert len(msg.to_bytes()) < len(data)


def test_regbadct_contact_refused() -> None:
    # RFC 4475 3.1.2.13: the registrar answers 400 when it looks at the Contact
    _, data = _entry("regbadct")
    msg = parse_message(data)
    with pytest.raises(SipParseError) as info:
        msg.contacts  # noqa: B018
    assert info.value.status == 400


def test_structured_details() -> None:
    """Spot checks that the views give the right values, not just any value."""
    semi = parse_message(_entry("semiuri")[1])
    assert isinstance(semi, Request)
    ruri = semi.ruri
    assert isinstance(ruri, SipURI)
    assert ruri.user == "user;par=u%40example.net" and ruri.host == "example.com" and ruri.params == {}

    unksm2 = parse_message(_entry("unksm2")[1])
    assert isinstance(unksm2.to.uri, AbsoluteURI) and unksm2.to.uri.scheme == "isbn"
    assert isinstance(unksm2.from_.uri, AbsoluteURI) and unksm2.from_.tag == "3234233"

    amb = parse_message(_entry("port-ambiguous")[1])
    assert isinstance(amb, Request)
    assert isinstance(amb.ruri, SipURI) and amb.ruri.host == "[2001:db8::10:5070]" and amb.ruri.port is None
    unamb = parse_message(_entry("port-unambiguous")[1])
    assert isinstance(unamb, Request)
    assert isinstance(unamb.ruri, SipURI) and unamb.ruri.host == "[2001:db8::10]" and unamb.ruri.port == 5070

    multi = parse_message(_entry("mult-ip-in-header")[1])
    assert [(v.transport, v.host, v.port) for v in multi.vias] == [
        ("UDP", "[2001:db8::9:1]", 6050),
        ("UDP", "192.0.2.1", None),
        ("TCP", "[2001:db8::9:255]", None),
    ]
    assert multi.vias[2].params["received"] == "192.0.2.200"

    nodelim = parse_message(_entry("via-received-param-no-delim")[1])
    assert nodelim.top_via.params["received"] == "2001:db8::9:255"

    noreason = parse_message(_entry("noreason")[1])
    assert isinstance(noreason, Response) and noreason.status == 100 and noreason.reason == ""

    unreason = parse_message(_entry("unreason")[1])
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason.encode("latin-1").decode("utf-8")  # the UTF-8 octets survive untouched

    mpart = parse_message(_entry("mpart01")[1])
    assert b"\x00" in mpart.body  # binary body handled by length, not as a C string
    assert len(mpart.body) == mpart.int_header("content-length")

    esc = parse_message(_entry("esc01")[1])
    assert isinstance(esc, Request) and isinstance(esc.ruri, SipURI)
    assert esc.ruri.user_unescaped == "sips:user@example.com"


def test_badvers_keeps_request_for_reply() -> None:
    _, data = _entry("badvers")
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 505
    assert isinstance(info.value.message, Request)
    assert info.value.message.call_id  # a 505 can be addressed
