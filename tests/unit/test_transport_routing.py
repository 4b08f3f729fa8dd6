"""Router edits that depend on the transport: Via sent-by per listener, double Record-Route (RFC 5658)."""

from __future__ import annotations

from leansip.server.core import CoreSettings, ServerCore
from leansip.server.location import LocationService
from leansip.server.registrar import contact_key
from leansip.server.routing import Router
from leansip.server.stores import open_store
from leansip.sip.message import parse_message

LOCAL = [("udp", "192.0.2.1", 5060), ("tcp", "192.0.2.1", 5070), ("ws", "192.0.2.1", 8080)]


def router() -> Router:
    core = ServerCore(CoreSettings(stateful=False), LocationService(open_store("memory"), key=contact_key),
                      local_addresses=list(LOCAL))
    r = Router(core.services)
    r.set_local(LOCAL)
    return r


def invite(transport: str) -> bytes:
    return (f"INVITE sip:bob@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 198.51.100.7:5060;branch=z9hG4bKa\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@192.0.2.1>\r\nCall-ID: c\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def test_via_uses_the_listener_of_the_transport() -> None:
    r = router()
    assert r.via("z9hG4bKx", "tcp") == "SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKx"
    assert r.via("z9hG4bKx", "udp") == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"
    assert r.via("z9hG4bKx", "tls") == "SIP/2.0/TLS 192.0.2.1:5060;branch=z9hG4bKx"  # no TLS listener


def test_double_record_route_on_transport_change_and_both_removed_again() -> None:
    r = router()
    req = parse_message(invite("TCP"))
    r.prepare_forward(req, record_route=True, out_transport="udp")
    # the upper entry faces the callee (UDP), the lower one the caller (TCP)
    assert req.header_values("record-route") == ["<sip:192.0.2.1:5060;lr>",
                                                 "<sip:192.0.2.1:5070;transport=tcp;lr>"]
    # an in-dialog request from the callee carries both as Route: both are ours and both are popped
    bye = parse_message(b"BYE sip:a@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKb\r\n"
                         b"Route: <sip:192.0.2.1:5060;lr>, <sip:192.0.2.1:5070;transport=tcp;lr>\r\n"
                         b"Max-Forwards: 70\r\nFrom: <sip:bob@x>;tag=2\r\nTo: <sip:a@x>;tag=1\r\nCall-ID: c\r\n"
                         b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    r.preprocess_routes(bye)
    assert bye.header("route") is None


def test_single_record_route_without_transport_change() -> None:
    r = router()
    req = parse_message(invite("TCP"))
    r.prepare_forward(req, record_route=True, out_transport="tcp")
    assert req.header_values("record-route") == ["<sip:192.0.2.1:5070;transport=tcp;lr>"]
    legacy = parse_message(invite("UDP"))
    r.prepare_forward(legacy, record_route=True)  # callers that do not say the outgoing transport
    assert legacy.header_values("record-route") == ["<sip:192.0.2.1:5060;lr>"]


def test_our_via_on_any_listener() -> None:
    from leansip.sip.uri import parse_via

    r = router()
    assert r.is_our_via(parse_via("SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKx"))
    assert r.is_our_via(parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"))
    assert not r.is_our_via(parse_via("SIP/2.0/TCP 192.0.2.1:5071;branch=z9hG4bKx"))
