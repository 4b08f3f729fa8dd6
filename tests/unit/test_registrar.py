"""Registrar (RFC 3261 10.3) over a MemoryStore LocationService with a fake clock.

Each test builds REGISTER requests from text, applies them with an explicit ``now`` and checks both the
response (status, Contact list with remaining expiry, Min-Expires) and what the location service holds.
"""

from __future__ import annotations

import pytest

from leansip.server.location import LocationService
from leansip.server.registrar import Registrar, RegistrarPolicy, contact_key
from leansip.server.stores.memory import MemoryStore
from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, parse_message
from leansip.sip.uri import parse_name_addr

T0 = 1_700_000_000.0
SOURCE = ("192.0.2.10", 5062)


def make_register(
    contacts: list[str] | None = None,
    *,
    user: str = "alice",
    call_id: str = "reg-1",
    cseq: int = 1,
    expires: str | None = None,
    via_host: str = "192.0.2.10:5062",
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host};branch=z9hG4bK-{call_id}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag=f1",
        f"To: <sip:{user}@example.com>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    lines += [f"Contact: {c}" for c in contacts or ()]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def contacts_of(resp: Response) -> dict[str, dict[str, str | None]]:
    """Contact URI -> its parameters, from a 200 OK."""
    out: dict[str, dict[str, str | None]] = {}
    for value in resp.header_values("contact"):
        na = parse_name_addr(value)
        out[na.uri_text] = dict(na.params)
    return out


class Env:
    def __init__(self, policy: RegistrarPolicy | None = None) -> None:
        self.location = LocationService(MemoryStore(), key=contact_key)
        self.registrar = Registrar(self.location, policy or RegistrarPolicy(default_expires=3600, min_expires=60,
                                                                             max_expires=7200))

    def register(self, req: Request, now: float = T0, source: tuple[str, int] = SOURCE,
                 transport: str = "udp") -> Response:
        return self.registrar.register(req, source, transport, now, to_tag="tt")

    def bindings(self, aor: str = "alice", now: float = T0) -> dict[str, float]:
        return {b.contact: b.expires_at for b in self.location.lookup(aor, now)}


@pytest.fixture
def env() -> Env:
    return Env()


# ---------------------------------------------------------------------- expiry
def test_expiry_from_contact_param_wins_over_header(env: Env) -> None:
    resp = env.register(make_register(["<sip:alice@192.0.2.10:5062>;expires=120"], expires="600"))
    assert resp.status == 200
    assert env.bindings() == {"sip:alice@192.0.2.10:5062": T0 + 120}
    assert contacts_of(resp)["sip:alice@192.0.2.10:5062"]["expires"] == "120"


def test_expiry_from_expires_header(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>"], expires="600"))
    assert env.bindings() == {"sip:alice@192.0.2.10:5062": T0 + 600}


def test_expiry_default_when_none_given(env: Env) -> None:
    resp = env.register(make_register(["<sip:alice@192.0.2.10:5062>"]))
    assert env.bindings() == {"sip:alice@192.0.2.10:5062": T0 + 3600}
    assert contacts_of(resp)["sip:alice@192.0.2.10:5062"]["expires"] == "3600"


@pytest.mark.parametrize("where", ["param", "header"])
def test_too_brief_gets_423_with_min_expires(env: Env, where: str) -> None:
    if where == "param":
        req = make_register(["<sip:alice@192.0.2.10:5062>;expires=30"])
    else:
        req = make_register(["<sip:alice@192.0.2.10:5062>"], expires="59")
    resp = env.register(req)
    assert resp.status == 423
    assert resp.header("min-expires") == "60"
    assert env.bindings() == {}


def test_exactly_min_expires_is_accepted(env: Env) -> None:
    assert env.register(make_register(["<sip:alice@192.0.2.10:5062>;expires=60"])).status == 200
    assert env.bindings() == {"sip:alice@192.0.2.10:5062": T0 + 60}


def test_too_long_is_clamped_to_max(env: Env) -> None:
    resp = env.register(make_register(["<sip:alice@192.0.2.10:5062>"], expires="999999999999"))
    assert resp.status == 200
    assert env.bindings() == {"sip:alice@192.0.2.10:5062": T0 + 7200}
    assert contacts_of(resp)["sip:alice@192.0.2.10:5062"]["expires"] == "7200"


@pytest.mark.parametrize("value", ["soon", "\xb2", "6\xb9", "-1", ""])
def test_bad_expires_is_a_parse_error(env: Env, value: str) -> None:
    """Non-ASCII digits ('\xb2' is a latin-1 byte of the peer's that str.isdigit() takes) are a 400 too, not a
    ValueError from int()."""
    with pytest.raises(SipParseError) as info:
        env.register(make_register(["<sip:alice@192.0.2.10:5062>"], expires=value))
    assert info.value.status == 400
    with pytest.raises(SipParseError):
        env.register(make_register([f"<sip:alice@192.0.2.10:5062>;expires={value or 'x'}"]))


# ---------------------------------------------------------------------- refresh and ordering
def test_refresh_with_higher_cseq_extends(env: Env) -> None:
    contact = "<sip:alice@192.0.2.10:5062>"
    env.register(make_register([contact], cseq=1, expires="300"))
    resp = env.register(make_register([contact], cseq=2, expires="900"), now=T0 + 100)
    assert resp.status == 200
    assert env.bindings(now=T0 + 100) == {"sip:alice@192.0.2.10:5062": T0 + 100 + 900}
    assert contacts_of(resp)["sip:alice@192.0.2.10:5062"]["expires"] == "900"


def test_lower_cseq_same_call_id_is_refused(env: Env) -> None:
    contact = "<sip:alice@192.0.2.10:5062>"
    env.register(make_register([contact], cseq=5, expires="300"))
    resp = env.register(make_register([contact], cseq=4, expires="900"), now=T0 + 1)
    assert resp.status >= 400
    assert env.bindings(now=T0 + 1) == {"sip:alice@192.0.2.10:5062": T0 + 300}  # unchanged


def test_lower_cseq_cannot_remove_either(env: Env) -> None:
    contact = "<sip:alice@192.0.2.10:5062>"
    env.register(make_register([contact], cseq=5, expires="300"))
    resp = env.register(make_register([contact + ";expires=0"], cseq=3), now=T0 + 1)
    assert resp.status >= 400
    assert "sip:alice@192.0.2.10:5062" in env.bindings(now=T0 + 1)


def test_same_call_id_same_cseq_is_a_retransmission(env: Env) -> None:
    contact = "<sip:alice@192.0.2.10:5062>"
    req = make_register([contact], cseq=7, expires="300")
    first = env.register(req)
    assert first.status == 200
    # the same REGISTER again (e.g. after the reply cache forgot it): 200, and nothing changes
    again = env.register(make_register([contact], cseq=7, expires="300"), now=T0 + 10)
    assert again.status == 200
    assert env.bindings(now=T0 + 10) == {"sip:alice@192.0.2.10:5062": T0 + 300}
    assert contacts_of(again)["sip:alice@192.0.2.10:5062"]["expires"] == "290"


def test_different_call_id_replaces_even_with_lower_cseq(env: Env) -> None:
    contact = "<sip:alice@192.0.2.10:5062>"
    env.register(make_register([contact], call_id="boot-1", cseq=50, expires="300"))
    # the UA rebooted: new Call-ID, CSeq restarts at 1 (RFC 3261 10.3 step 7 compares CSeq only within a Call-ID)
    resp = env.register(make_register([contact], call_id="boot-2", cseq=1, expires="600"), now=T0 + 5)
    assert resp.status == 200
    [b] = env.location.lookup("alice", T0 + 5)
    assert (b.call_id, b.cseq, b.expires_at) == ("boot-2", 1, T0 + 5 + 600)


def test_equivalent_contact_uri_is_the_same_binding(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062;transport=udp>"], cseq=1))
    env.register(make_register(["<sip:alice@192.0.2.10:5062;TRANSPORT=UDP>"], cseq=2), now=T0 + 1)
    assert len(env.location.lookup("alice", T0 + 1)) == 1


# ---------------------------------------------------------------------- removal
def test_expires_zero_removes_only_that_contact(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>", "<sip:alice@192.0.2.11:5060>"], cseq=1))
    resp = env.register(make_register(["<sip:alice@192.0.2.10:5062>;expires=0"], cseq=2), now=T0 + 1)
    assert resp.status == 200
    assert set(env.bindings(now=T0 + 1)) == {"sip:alice@192.0.2.11:5060"}
    assert set(contacts_of(resp)) == {"sip:alice@192.0.2.11:5060"}


def test_expires_header_zero_removes_listed_contact(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>"], cseq=1))
    resp = env.register(make_register(["<sip:alice@192.0.2.10:5062>"], cseq=2, expires="0"), now=T0 + 1)
    assert resp.status == 200
    assert env.bindings(now=T0 + 1) == {}
    assert resp.header("contact") is None


def test_star_with_expires_zero_removes_all(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>", "<sip:alice@192.0.2.11:5060>"], cseq=1))
    env.register(make_register(["<sip:bob@192.0.2.12>"], user="bob", call_id="bob-1"))
    resp = env.register(make_register(["*"], cseq=2, expires="0"), now=T0 + 1)
    assert resp.status == 200
    assert env.bindings(now=T0 + 1) == {}
    assert resp.header("contact") is None
    assert set(env.bindings("bob", now=T0 + 1)) == {"sip:bob@192.0.2.12"}  # other AORs untouched


@pytest.mark.parametrize(
    "contacts, expires",
    [
        (["*"], None),  # no Expires header
        (["*"], "60"),  # Expires not zero
        (["*", "<sip:alice@192.0.2.10>"], "0"),  # not alone
        (["*, <sip:alice@192.0.2.10>"], "0"),  # not alone, in one header
    ],
)
def test_star_misuse_is_400(env: Env, contacts: list[str], expires: str | None) -> None:
    env.register(make_register(["<sip:alice@192.0.2.11:5060>"], cseq=1))
    with pytest.raises(SipParseError) as info:
        env.register(make_register(contacts, cseq=2, expires=expires), now=T0 + 1)
    assert info.value.status == 400
    assert set(env.bindings(now=T0 + 1)) == {"sip:alice@192.0.2.11:5060"}


# ---------------------------------------------------------------------- queries and listing
def test_query_without_contact_lists_bindings_and_changes_nothing(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>;expires=300"], cseq=1))
    before = env.bindings()
    resp = env.register(make_register(None, call_id="query", cseq=1), now=T0 + 100)
    assert resp.status == 200
    assert contacts_of(resp) == {"sip:alice@192.0.2.10:5062": {"expires": "200"}}
    assert env.bindings(now=T0 + 100) == before


def test_query_for_unknown_aor_is_empty_200(env: Env) -> None:
    resp = env.register(make_register(None, user="nobody"))
    assert resp.status == 200
    assert resp.header("contact") is None


def test_several_contacts_with_q_values_are_ordered(env: Env) -> None:
    resp = env.register(make_register([
        "<sip:alice@192.0.2.1>;q=0.1",
        "<sip:alice@192.0.2.2>;q=0.9, <sip:alice@192.0.2.3>",
        "<sip:alice@192.0.2.4>;q=0.5",
    ], expires="600"))
    assert resp.status == 200
    order = [b.contact for b in env.location.lookup("alice", T0)]
    assert order == ["sip:alice@192.0.2.3", "sip:alice@192.0.2.2", "sip:alice@192.0.2.4", "sip:alice@192.0.2.1"]
    listed = contacts_of(resp)
    assert listed["sip:alice@192.0.2.1"] == {"expires": "600", "q": "0.1"}
    assert listed["sip:alice@192.0.2.3"] == {"expires": "600"}
    assert [parse_name_addr(v).uri_text for v in resp.header_values("contact")] == order


def test_bad_q_value_is_400(env: Env) -> None:
    with pytest.raises(SipParseError):
        env.register(make_register(["<sip:alice@192.0.2.1>;q=1.5"]))
    assert env.bindings() == {}


def test_200_lists_every_binding_with_remaining_expiry(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.1>;expires=100"], call_id="phone-a"))
    env.register(make_register(["<sip:alice@192.0.2.2>;expires=1000"], call_id="phone-b"), now=T0 + 40)
    resp = env.register(make_register(["<sip:alice@192.0.2.3>;expires=500"], call_id="phone-c"), now=T0 + 70)
    assert contacts_of(resp) == {
        "sip:alice@192.0.2.1": {"expires": "30"},
        "sip:alice@192.0.2.2": {"expires": "970"},
        "sip:alice@192.0.2.3": {"expires": "500"},
    }


# ---------------------------------------------------------------------- source, NAT, expiry
def test_source_and_transport_are_stored(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.10:5062>"]), source=("192.0.2.10", 5062), transport="udp")
    [b] = env.location.lookup("alice", T0)
    assert b.source == ("192.0.2.10", 5062)
    assert b.transport == "udp"
    assert b.received is None  # reachable as written
    assert (b.call_id, b.cseq) == ("reg-1", 1)


def test_received_is_set_when_contact_ip_differs_from_source(env: Env) -> None:
    # a UA behind NAT: it registers its private address, the packet comes from the NAT's public one
    env.register(make_register(["<sip:alice@10.0.0.5:5060>"], via_host="10.0.0.5:5060;rport"),
                 source=("203.0.113.7", 40001))
    [b] = env.location.lookup("alice", T0)
    assert b.source == ("203.0.113.7", 40001)
    assert b.received == "sip:203.0.113.7:40001"


def test_binding_expires_on_time(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.1>;expires=60", "<sip:alice@192.0.2.2>;expires=120"]))
    assert env.location.expire(T0 + 59.999) == []
    assert set(env.bindings(now=T0 + 59.999)) == {"sip:alice@192.0.2.1", "sip:alice@192.0.2.2"}
    gone = env.location.expire(T0 + 60)
    assert [b.contact for b in gone] == ["sip:alice@192.0.2.1"]
    assert set(env.bindings(now=T0 + 60)) == {"sip:alice@192.0.2.2"}
    assert [b.contact for b in env.location.expire(T0 + 121)] == ["sip:alice@192.0.2.2"]
    assert env.location.count() == 0


def test_lapsed_binding_is_hidden_before_reaping(env: Env) -> None:
    env.register(make_register(["<sip:alice@192.0.2.1>;expires=60"]))
    resp = env.register(make_register(None, call_id="q"), now=T0 + 61)
    assert resp.header("contact") is None


def test_too_many_contacts_refused(env: Env) -> None:
    small = Env(RegistrarPolicy(max_contacts=2))
    resp = small.register(make_register([f"<sip:alice@192.0.2.{i}>" for i in range(1, 4)]))
    assert resp.status == 403
    assert small.bindings() == {}


def test_to_without_user_is_400(env: Env) -> None:
    req = parse_message(
        b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
        b"From: <sip:example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n"
        b"Content-Length: 0\r\n\r\n")
    assert isinstance(req, Request)
    with pytest.raises(SipParseError):
        env.register(req)
