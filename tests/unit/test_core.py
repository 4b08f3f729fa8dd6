"""ServerCore end to end without sockets: bytes in, (bytes, destination) out, fake clock.

Covers what the core answers itself (RFC 3261 8.2, 16.3), where responses go (18.2.2, RFC 3581), the reply
cache, the stateless proxy and redirect paths, and every RFC 4475/5118 torture message through a core built
like the real server's with digest authentication on (the outcomes checked against the corpus manifests).
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from leansip.app.config import Config, ListenSpec
from leansip.app.serve import build_core
from leansip.server.core import CoreSettings, ServerCore
from leansip.server.location import LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores.memory import MemoryStore
from leansip.server.users import DEMO_USERS_PATH, load_users
from leansip.sip.message import Request, Response, parse_message
from leansip.sip.send import Send
from leansip.sip.uri import parse_name_addr, parse_via

PORT = 15060
HERE = f"127.0.0.1:{PORT}"
NOW = 1_700_000_000.0
ALICE = ("192.0.2.20", 5070)
BOB = ("192.0.2.30", 5080)


@pytest.fixture(autouse=True)
def _no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The core never calls a (blocking) resolver: names are left to the I/O layer. Fail loudly if it does."""

    def fake(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"blocking DNS lookup from the core: {args!r}")

    monkeypatch.setattr(socket, "gethostbyname", fake)
    monkeypatch.setattr(socket, "getaddrinfo", fake)


def make_core(mode: str = "proxy", users: tuple[str, ...] = ("alice", "bob", "carol")) -> ServerCore:
    settings = CoreSettings(mode=mode, stateful=False, realm="leansip")
    return ServerCore(settings, LocationService(MemoryStore(), key=contact_key),
                      user_exists=lambda name: name in users, local_addresses=[("udp", "127.0.0.1", PORT)],
                      secret=b"k" * 32)


def req_bytes(start: str, *, via: str = "SIP/2.0/UDP 192.0.2.30:5080;branch=z9hG4bK-1", call_id: str = "call-1",
              cseq: int = 1, method: str | None = None, frm: str = "<sip:bob@127.0.0.1>;tag=from1",
              to: str = "<sip:alice@127.0.0.1>", extra: tuple[str, ...] = (), max_forwards: str | None = "70",
              body: bytes = b"") -> bytes:
    method = method or start.split()[0]
    lines = [start, f"Via: {via}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", *extra,
              f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def register_bytes(user: str, contact: str, *, via: str, call_id: str | None = None, cseq: int = 1,
                   extra: tuple[str, ...] = ()) -> bytes:
    return req_bytes(f"REGISTER sip:{HERE} SIP/2.0", via=via, call_id=call_id or f"reg-{user}", cseq=cseq,
                     frm=f"<sip:{user}@127.0.0.1>;tag=r{user}", to=f"<sip:{user}@127.0.0.1>",
                     extra=(f"Contact: {contact}", *extra))


def response(send: Send) -> Response:
    msg = parse_message(send.data)
    assert isinstance(msg, Response), send.data[:80]
    return msg


def request(send: Send) -> Request:
    msg = parse_message(send.data)
    assert isinstance(msg, Request), send.data[:80]
    return msg


def one_response(out: list[Send]) -> tuple[Response, tuple[str, int]]:
    assert len(out) == 1, [s.data[:40] for s in out]
    return response(out[0]), out[0].dest


def register(core: ServerCore, user: str, addr: tuple[str, int], contact: str | None = None, *,
             extra: tuple[str, ...] = ()) -> None:
    contact = contact or f"<sip:{user}@{addr[0]}:{addr[1]}>"
    data = register_bytes(user, contact, via=f"SIP/2.0/UDP {addr[0]}:{addr[1]};branch=z9hG4bK-reg-{user}",
                          extra=extra)
    resp, _dest = one_response(core.receive(data, addr, "udp", NOW))
    assert resp.status == 200


# ---------------------------------------------------------------------- response routing (RFC 3261 18.2.2)
@pytest.mark.parametrize(
    "via, source, dest, received, rport",
    [
        # sent-by matches the source: to the sent-by port, no received added
        ("192.0.2.30:5080", ("192.0.2.30", 5080), ("192.0.2.30", 5080), None, None),
        # sent-by host differs: received= the source IP, still the sent-by port
        ("10.1.1.1:5080", ("192.0.2.30", 7000), ("192.0.2.30", 5080), "192.0.2.30", None),
        # no port in sent-by: 5060
        ("pc.example.com", ("192.0.2.30", 7000), ("192.0.2.30", 5060), "192.0.2.30", None),
        # RFC 3581: rport asks for the source port, and received is filled in even when the host matches
        ("192.0.2.30:5080;rport", ("192.0.2.30", 7000), ("192.0.2.30", 7000), "192.0.2.30", "7000"),
        ("10.1.1.1:5080;rport", ("192.0.2.30", 7000), ("192.0.2.30", 7000), "192.0.2.30", "7000"),
        # maddr wins, at the sent-by port
        ("10.1.1.1:5090;maddr=239.1.1.1", ("192.0.2.30", 7000), ("239.1.1.1", 5090), "192.0.2.30", None),
    ],
)
def test_register_response_goes_where_rfc_3261_18_2_2_says(
    via: str, source: tuple[str, int], dest: tuple[str, int], received: str | None, rport: str | None
) -> None:
    core = make_core()
    data = register_bytes("alice", "<sip:alice@192.0.2.30:5080>", via=f"SIP/2.0/UDP {via};branch=z9hG4bK-r1")
    resp, got = one_response(core.receive(data, source, "udp", NOW))
    assert resp.status == 200
    assert got == dest
    top = resp.top_via
    assert top.params.get("received") == received
    assert top.params.get("rport") == rport
    assert resp.to_tag  # RFC 3261 8.2.6.2
    assert parse_name_addr(resp.header("contact") or "").uri_text == "sip:alice@192.0.2.30:5080"
    assert [b.contact for b in core.location.lookup("alice", NOW)] == ["sip:alice@192.0.2.30:5080"]


def test_options_to_server_gets_200_with_allow() -> None:
    core = make_core()
    resp, dest = one_response(core.receive(req_bytes(f"OPTIONS sip:{HERE} SIP/2.0"), BOB, "udp", NOW))
    assert resp.status == 200 and dest == BOB
    allow = {m.strip() for m in (resp.header("allow") or "").split(",")}
    assert {"REGISTER", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL"} <= allow
    assert resp.to_tag


def test_unknown_method_to_server_gets_405_with_allow() -> None:
    core = make_core()
    resp, dest = one_response(core.receive(req_bytes(f"FROBNICATE sip:{HERE} SIP/2.0"), BOB, "udp", NOW))
    assert resp.status == 405 and dest == BOB
    assert "REGISTER" in (resp.header("allow") or "")


def test_require_unknown_extension_gets_420_with_unsupported() -> None:
    core = make_core()
    data = req_bytes(f"OPTIONS sip:{HERE} SIP/2.0", extra=("Require: foo, path",))
    resp, _ = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 420
    assert resp.header("unsupported") == "foo"


def test_proxy_require_unknown_extension_gets_420_even_for_a_user() -> None:
    core = make_core()
    data = req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0", extra=("Proxy-Require: bar",))
    resp, _ = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 420
    assert resp.header("unsupported") == "bar"


def test_other_sip_version_gets_505() -> None:
    core = make_core()
    data = req_bytes(f"OPTIONS sip:{HERE} SIP/3.0")
    resp, dest = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 505 and dest == BOB


def test_malformed_request_gets_400() -> None:
    core = make_core()
    data = req_bytes(f"OPTIONS sip:{HERE} SIP/2.0", extra=("CSeq: 2 OPTIONS",))  # two CSeq headers
    resp, dest = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 400 and dest == BOB
    assert resp.call_id == "call-1"


def test_cseq_method_mismatch_gets_400() -> None:
    core = make_core()
    data = req_bytes(f"OPTIONS sip:{HERE} SIP/2.0", method="INVITE")
    resp, _ = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 400


@pytest.mark.parametrize("data", [
    b"OPTIONS sip:x SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nVia: garbage\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"\x00\x01\x02 not sip at all",
    b"",
    b"\r\n\r\n",
])
def test_no_via_or_garbage_is_dropped(data: bytes) -> None:
    core = make_core()
    assert core.receive(data, BOB, "udp", NOW) == []


def test_max_forwards_zero_to_a_user_gets_483() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    data = req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0", max_forwards="0")
    resp, _ = one_response(core.receive(data, BOB, "udp", NOW))
    assert resp.status == 483


def test_max_forwards_zero_options_to_server_still_answered() -> None:
    # RFC 3261 16.3 step 3 applies to forwarding; the server answers OPTIONS addressed to itself
    core = make_core()
    resp, _ = one_response(core.receive(req_bytes(f"OPTIONS sip:{HERE} SIP/2.0", max_forwards="0"), BOB, "udp",
                                        NOW))
    assert resp.status == 200


def test_unknown_uri_scheme_gets_416() -> None:
    core = make_core()
    resp, _ = one_response(core.receive(req_bytes("INVITE tel:+15551234 SIP/2.0"), BOB, "udp", NOW))
    assert resp.status == 416


def test_a_response_is_never_answered() -> None:
    core = make_core()
    data = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.30:5080;branch=z9hG4bK-x\r\n"
            b"From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>;tag=2\r\nCall-ID: c\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert core.receive(data, BOB, "udp", NOW) == []
    bad = data.replace(b"CSeq: 1 INVITE", b"CSeq: x")
    assert core.receive(bad, BOB, "udp", NOW) == []


def test_ack_to_our_own_final_response_is_absorbed() -> None:
    core = make_core()
    invite = req_bytes(f"INVITE sip:nobody@{HERE} SIP/2.0")
    resp, _ = one_response(core.receive(invite, BOB, "udp", NOW))
    assert resp.status == 404 and resp.to_tag
    # RFC 3261 17.1.1.3: the ACK carries our To tag and the INVITE's Request-URI (which names us):
    # nothing is sent, in particular not the ACK to ourselves
    ack = req_bytes(f"ACK sip:nobody@{HERE} SIP/2.0", to=f"<sip:alice@127.0.0.1>;tag={resp.to_tag}")
    assert core.receive(ack, BOB, "udp", NOW) == []


def test_in_dialog_request_for_our_aor_goes_to_the_binding() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    bye = req_bytes(f"BYE sip:alice@{HERE} SIP/2.0", to="<sip:alice@127.0.0.1>;tag=a1", cseq=2)
    [fwd] = core.receive(bye, BOB, "udp", NOW)
    assert fwd.dest == ALICE
    assert request(fwd).uri == "sip:alice@192.0.2.20:5070"


def test_in_dialog_request_for_a_ua_contact_keeps_its_request_uri() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    bye = req_bytes("BYE sip:alice@192.0.2.21:5072 SIP/2.0", to="<sip:alice@127.0.0.1>;tag=a1", cseq=2)
    [fwd] = core.receive(bye, BOB, "udp", NOW)
    assert fwd.dest == ("192.0.2.21", 5072)
    assert request(fwd).uri == "sip:alice@192.0.2.21:5072"
    assert request(fwd).header("record-route") is None  # only initial requests are record-routed


def test_reply_cache_answers_only_the_source_it_answered() -> None:
    core = make_core()
    data = register_bytes("alice", "<sip:alice@192.0.2.20:5070>", via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-rs")
    core.receive(data, ALICE, "udp", NOW)
    other = ("192.0.2.99", 5099)
    [reply] = core.receive(data, other, "udp", NOW + 1)  # the same bytes from elsewhere: handled, not replayed
    assert core.stats.retransmissions == 0
    assert reply.dest == ("192.0.2.99", 5070) and response(reply).status == 200  # Via received= the source
    core.receive(data, other, "udp", NOW + 2)  # now cached for that source
    assert core.stats.retransmissions == 1


def test_cacheable_tells_what_the_reply_cache_can_hold_by_the_first_bytes() -> None:
    from leansip.server.core import _cacheable

    for start in (b"SIP/2.0 200 OK\r\n", b"INVITE sip:a@b SIP/2.0\r\n", b"ACK sip:a@b SIP/2.0\r\n"):
        assert not _cacheable(start)
    for start in (b"REGISTER sip:b SIP/2.0\r\n", b"SUBSCRIBE sip:a@b SIP/2.0\r\n", b"INFO sip:a@b SIP/2.0\r\n",
                  b"ACKX sip:a@b SIP/2.0\r\n", b"BYE sip:a@b SIP/2.0\r\n", b"\r\nINVITE sip:a@b SIP/2.0", b"SIP",
                  b""):
        assert _cacheable(start)


def test_reply_cache_answers_retransmission_with_identical_bytes() -> None:
    core = make_core()
    data = register_bytes("alice", "<sip:alice@192.0.2.20:5070>", via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-rc")
    first = core.receive(data, ALICE, "udp", NOW)
    # change the binding behind the cache's back: an identical retransmission must still get the first answer
    core.location.remove_all("alice")
    again = core.receive(data, ALICE, "udp", NOW + 1)
    assert [(s.data, s.dest) for s in again] == [(s.data, s.dest) for s in first]
    assert core.stats.retransmissions == 1
    # after the cache lifetime the request is processed again (and re-creates the binding)
    later = core.receive(data, ALICE, "udp", NOW + core.settings.reply_cache_ttl + 1)
    assert response(later[0]).status == 200
    assert core.stats.retransmissions == 1
    assert core.location.lookup("alice", NOW + 40)


def test_register_query_and_star_removal_through_core() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    query = req_bytes(f"REGISTER sip:{HERE} SIP/2.0", call_id="q1", frm="<sip:alice@127.0.0.1>;tag=q",
                      via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-q1")
    resp, _ = one_response(core.receive(query, ALICE, "udp", NOW + 10))
    assert resp.status == 200
    assert resp.header("contact") == "<sip:alice@192.0.2.20:5070>;expires=3590"
    star = req_bytes(f"REGISTER sip:{HERE} SIP/2.0", call_id="q2", frm="<sip:alice@127.0.0.1>;tag=q",
                     via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-q2", extra=("Contact: *", "Expires: 0"))
    resp, _ = one_response(core.receive(star, ALICE, "udp", NOW + 11))
    assert resp.status == 200 and resp.header("contact") is None
    bad_star = req_bytes(f"REGISTER sip:{HERE} SIP/2.0", call_id="q3", frm="<sip:alice@127.0.0.1>;tag=q",
                         via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-q3", extra=("Contact: *",))
    resp, _ = one_response(core.receive(bad_star, ALICE, "udp", NOW + 12))
    assert resp.status == 400


def test_register_with_bad_contact_gets_400_not_an_exception() -> None:
    core = make_core()
    data = register_bytes("alice", "<sip:alice@[::1>", via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-bc")
    resp, _ = one_response(core.receive(data, ALICE, "udp", NOW))
    assert resp.status == 400


def test_housekeeping_expires_bindings() -> None:
    core = make_core()
    register(core, "alice", ALICE, "<sip:alice@192.0.2.20:5070>;expires=60")
    core.housekeeping(NOW + 59)
    assert core.location.count() == 1
    core.housekeeping(NOW + 60)
    assert core.location.count() == 0
    assert core.stats.expired_bindings == 1


# ---------------------------------------------------------------------- stateless proxy
def test_invite_is_forwarded_to_the_contact_and_the_200_comes_back() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    invite = req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0", via="SIP/2.0/UDP 192.0.2.30:5080;branch=z9hG4bK-inv",
                       extra=("Contact: <sip:bob@192.0.2.30:5080>",))
    out = core.receive(invite, BOB, "udp", NOW)
    assert len(out) == 2
    trying = response(out[0])
    assert trying.status == 100 and out[0].dest == BOB
    assert trying.to_tag is None  # a 100 from a proxy carries no To tag
    fwd = request(out[1])
    assert out[1].dest == ALICE
    assert fwd.uri == "sip:alice@192.0.2.20:5070"
    vias = [parse_via(v) for v in fwd.header_values("via")]
    assert len(vias) == 2
    assert (vias[0].host, vias[0].port) == ("127.0.0.1", PORT)
    assert (vias[0].branch or "").startswith("z9hG4bK")
    assert vias[1].branch == "z9hG4bK-inv"
    assert fwd.max_forwards == 69
    assert fwd.header_values("record-route") == [f"<sip:{HERE};lr>"]
    # a retransmission of the INVITE is forwarded with the same branch (RFC 3261 16.11)
    again = core.receive(invite, BOB, "udp", NOW + 0.5)
    assert parse_via(request(again[1]).header_values("via")[0]).branch == vias[0].branch

    # the callee answers: the 200 goes back to the caller without our Via
    ok_lines = ["SIP/2.0 200 OK", *[f"Via: {v}" for v in fwd.header_values("via")],
                f"Record-Route: <sip:{HERE};lr>", "From: <sip:bob@127.0.0.1>;tag=from1",
                "To: <sip:alice@127.0.0.1>;tag=callee1", "Call-ID: call-1", "CSeq: 1 INVITE",
                "Contact: <sip:alice@192.0.2.20:5070>", "Content-Length: 0", "", ""]
    back = core.receive("\r\n".join(ok_lines).encode(), ALICE, "udp", NOW + 1)
    assert len(back) == 1 and back[0].dest == BOB
    ok = response(back[0])
    assert ok.status == 200
    assert [parse_via(v).branch for v in ok.header_values("via")] == ["z9hG4bK-inv"]
    assert ok.to_tag == "callee1"


def test_forwarded_request_to_a_nat_contact_goes_to_the_register_source() -> None:
    core = make_core()
    nat = ("203.0.113.7", 40001)
    data = register_bytes("alice", "<sip:alice@10.0.0.5:5060>", via="SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK-n")
    assert response(core.receive(data, nat, "udp", NOW)[0]).status == 200
    out = core.receive(req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0"), BOB, "udp", NOW)
    assert out[1].dest == nat
    assert request(out[1]).uri == "sip:alice@10.0.0.5:5060"


def test_response_to_the_caller_uses_received_and_rport() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    caller = ("198.51.100.4", 33333)
    invite = req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0", via="SIP/2.0/UDP 10.9.9.9:5060;rport;branch=z9hG4bK-c")
    out = core.receive(invite, caller, "udp", NOW)
    assert out[0].dest == caller
    fwd = request(out[1])
    second = parse_via(fwd.header_values("via")[1])
    assert second.params.get("received") == "198.51.100.4" and second.params.get("rport") == "33333"
    ringing = ["SIP/2.0 180 Ringing", *[f"Via: {v}" for v in fwd.header_values("via")],
               "From: <sip:bob@127.0.0.1>;tag=from1", "To: <sip:alice@127.0.0.1>;tag=t", "Call-ID: call-1",
               "CSeq: 1 INVITE", "Content-Length: 0", "", ""]
    back = core.receive("\r\n".join(ringing).encode(), ALICE, "udp", NOW)
    assert [s.dest for s in back] == [caller]


def test_response_whose_top_via_is_not_ours_is_dropped() -> None:
    core = make_core()
    data = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK-x\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.30:5080;branch=z9hG4bK-y\r\n"
            b"From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:alice@127.0.0.1>;tag=2\r\nCall-ID: c\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert core.receive(data, ALICE, "udp", NOW) == []


def test_unknown_user_404_known_user_without_binding_480() -> None:
    core = make_core()
    resp, _ = one_response(core.receive(req_bytes(f"INVITE sip:nobody@{HERE} SIP/2.0"), BOB, "udp", NOW))
    assert resp.status == 404
    resp, _ = one_response(core.receive(req_bytes(f"INVITE sip:carol@{HERE} SIP/2.0", call_id="c2"), BOB, "udp",
                                        NOW))
    assert resp.status == 480


def test_expired_binding_gives_480() -> None:
    core = make_core()
    register(core, "alice", ALICE, "<sip:alice@192.0.2.20:5070>;expires=60")
    resp, _ = one_response(core.receive(req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0"), BOB, "udp", NOW + 61))
    assert resp.status == 480


def test_request_coming_back_to_us_is_a_loop_482() -> None:
    core = make_core()
    # alice's contact is the proxy itself: the forwarded INVITE comes straight back, unchanged but for our Via
    register(core, "alice", ALICE, f"<sip:alice@{HERE}>")
    out = core.receive(req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0"), BOB, "udp", NOW)
    assert response(out[0]).status == 100
    fwd = out[1]
    out2 = core.receive(fwd.data, ("127.0.0.1", PORT), "udp", NOW)
    assert len(out2) == 1
    loop = response(out2[0])
    assert loop.status == 482
    assert out2[0].dest == ("127.0.0.1", PORT)


def test_spiral_is_not_a_loop() -> None:
    core = make_core()
    register(core, "alice", ALICE)
    # the request passed us before for another Request-URI (e.g. a forwarding service): not a loop
    out = core.receive(req_bytes(f"INVITE sip:bob-forward@{HERE} SIP/2.0"), BOB, "udp", NOW)
    assert response(out[0]).status == 404
    first = req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0",
                      via=f"SIP/2.0/UDP {HERE};branch=z9hG4bKfirstpass-0123456789ab")
    data = first.replace(b"Max-Forwards: 70\r\n",
                         b"Via: SIP/2.0/UDP 192.0.2.30:5080;branch=z9hG4bK-1\r\nMax-Forwards: 69\r\n")
    out = core.receive(data, ("127.0.0.1", PORT), "udp", NOW)
    assert response(out[0]).status == 100
    assert out[1].dest == ALICE


def test_redirect_mode_302_lists_all_contacts_with_q() -> None:
    core = make_core(mode="redirect")
    data = req_bytes(f"REGISTER sip:{HERE} SIP/2.0", via="SIP/2.0/UDP 192.0.2.20:5070;branch=z9hG4bK-rr",
                     frm="<sip:alice@127.0.0.1>;tag=r", extra=(
                         "Contact: <sip:alice@192.0.2.20:5070>;q=0.5, <sip:alice@192.0.2.21:5070>;q=0.9",
                         "Contact: <sip:alice@192.0.2.22:5070>"))
    assert response(core.receive(data, ALICE, "udp", NOW)[0]).status == 200
    resp, dest = one_response(core.receive(req_bytes(f"INVITE sip:alice@{HERE} SIP/2.0"), BOB, "udp", NOW))
    assert resp.status == 302 and dest == BOB
    contacts = [parse_name_addr(v) for v in resp.header_values("contact")]
    assert [(c.uri_text, c.params.get("q")) for c in contacts] == [
        ("sip:alice@192.0.2.22:5070", "1"),
        ("sip:alice@192.0.2.21:5070", "0.9"),
        ("sip:alice@192.0.2.20:5070", "0.5"),
    ]
    # ACK for the 302 is absorbed; unknown users 404; known without binding 480
    ack = req_bytes(f"ACK sip:alice@{HERE} SIP/2.0", to=f"<sip:alice@127.0.0.1>;tag={resp.to_tag}")
    assert core.receive(ack, BOB, "udp", NOW) == []
    resp, _ = one_response(core.receive(req_bytes(f"INVITE sip:zed@{HERE} SIP/2.0", call_id="z"), BOB, "udp", NOW))
    assert resp.status == 404
    resp, _ = one_response(core.receive(req_bytes(f"INVITE sip:carol@{HERE} SIP/2.0", call_id="c"), BOB, "udp", NOW))
    assert resp.status == 480


# ---------------------------------------------------------------------- torture corpus with auth on
def torture_dir() -> Path:
    env = os.environ.get("LEANSIP_TORTURE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "sip-torture"


def _torture_cases() -> list[tuple[str, dict[str, Any], Path]]:
    base = torture_dir()
    cases = []
    for toml_name, subdir in (("rfc4475.toml", "rfc4475"), ("rfc5118.toml", "rfc5118-wire")):
        manifest = base / toml_name
        if not manifest.is_file():
            continue
        with open(manifest, "rb") as fh:
            for entry in tomllib.load(fh)["message"]:
                cases.append((entry["name"], entry, base / subdir / entry.get("file", entry["name"])))
    return cases


TORTURE = _torture_cases()


def _outcome(out: list[Send]) -> tuple[str, list[Response]]:
    """What a peer at the Via address sees: "none", "1xx-only", or the final status code."""
    replies = [response(s) for s in out if s.data.startswith(b"SIP/2.0 ")]
    finals = [r for r in replies if r.status >= 200]
    if not replies:
        return "none", replies
    if not finals:
        return "1xx-only", replies
    assert len(finals) == 1, [r.status for r in finals]
    return str(finals[0].status), replies


def manifest_allows(outcome: str, entry: dict[str, Any]) -> bool:
    """The manifest's rule: accept/tolerate patterns ("none", "1xx-only", "final", "4xx", exact codes); a
    final code listed in ``reject`` (exactly or by class) fails unless listed exactly in accept/tolerate."""
    ok = [str(p) for p in (*entry.get("accept", []), *entry.get("tolerate", []))]
    if outcome in ("none", "1xx-only"):
        return outcome in ok
    if outcome in ok:
        return True
    klass = f"{outcome[0]}xx"
    reject = [str(p) for p in entry.get("reject", ["5xx"])]
    if outcome in reject or klass in reject:
        return False
    return klass in ok or "final" in ok


def test_torture_corpus_present() -> None:
    if not TORTURE:
        reason = f"SIP torture corpus not found at {torture_dir()} (set LEANSIP_TORTURE_DIR)"
        if os.environ.get("LEANSIP_REQUIRE_EXTERNAL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert len(TORTURE) == 62


@pytest.fixture(scope="module")
def auth_core() -> ServerCore:
    """A core built as ``leansip serve --auth --users <demo users> --stateless`` builds it."""
    os.environ.setdefault("LEANSIP_SECRET", "torture-test-secret-0123456789abcdef")
    config = Config(listen=[ListenSpec("udp", "127.0.0.1", 5060)], auth=True, location="memory",
                    realm="leansip", admin=None, stateful=False, users=DEMO_USERS_PATH)
    return build_core(config, load_users(DEMO_USERS_PATH), NOW)


@pytest.mark.parametrize("name, entry, path", TORTURE, ids=[c[0] for c in TORTURE])
def test_torture_message_with_auth_on(name: str, entry: dict[str, Any], path: Path, auth_core: ServerCore,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str) -> str:
        raise OSError("no DNS")

    monkeypatch.setattr(socket, "gethostbyname", fake)
    data = path.read_bytes()
    out = auth_core.receive(data, ("127.0.0.1", 40000), "udp", NOW)
    outcome, replies = _outcome(out)
    assert manifest_allows(outcome, entry), f"{name}: {outcome} not allowed by {entry.get('accept')} " \
                                            f"/ {entry.get('tolerate')} / reject {entry.get('reject')}"
    for reply in replies:
        assert reply.header("call-id") not in entry.get("forbid_reply_callid", [])
        if reply.status >= 200 and entry.get("require_header"):
            assert reply.header(entry["require_header"]) is not None
        if reply.status not in (100, 400, 505):  # a 400/505 may answer a To we could not parse
            assert reply.to_tag, f"{name}: {reply.status} without To tag"
    for send in out:
        if send.data.startswith(b"SIP/2.0 "):
            # replies go back to the sender's address (received=127.0.0.1), never to the example.com names
            assert send.dest[0] == "127.0.0.1"
    if entry["kind"] == "request" and b"INVITE" in data.split(b" ", 1)[0]:
        return  # INVITE retransmissions are the transaction layer's (a stateless challenge has a fresh nonce)
    # a retransmission gets the same answer
    assert [s.data for s in auth_core.receive(data, ("127.0.0.1", 40000), "udp", NOW + 0.5)
            if s.data.startswith(b"SIP/2.0 ")] == [s.data for s in out if s.data.startswith(b"SIP/2.0 ")]


def test_serve_gives_the_stateful_proxy_its_transaction_bounds() -> None:
    config = Config(listen=[ListenSpec("udp", "127.0.0.1", 5060)], location="memory", admin=None, stateful=True,
                    max_transactions=1234, max_transaction_memory=3)
    core = build_core(config, load_users(DEMO_USERS_PATH), NOW)
    table = core.proxy.table  # type: ignore[union-attr]
    assert (table.max_transactions, table.max_bytes) == (1234, 3 << 20)
