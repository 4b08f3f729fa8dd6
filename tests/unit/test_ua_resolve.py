"""RFC 3263 server location with a fake resolver (no network): SRV order, A/AAAA fallback, explicit ports."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import dns.resolver
import pytest

from leansip.ua.resolve import (
    ResolveError,
    Target,
    _Srv,
    order_srv,
    parse_host_port,
    resolve_server,
    srv_name,
)


@dataclass
class SrvRec:
    priority: int
    weight: int
    port: int
    target: str


@dataclass
class ARec:
    address: str


class FakeResolver:
    """Answers from a table keyed by (name, type); anything else is NXDOMAIN. Records every query."""

    def __init__(self, table: dict[tuple[str, str], list[Any]]) -> None:
        self.table = table
        self.queries: list[tuple[str, str]] = []

    def resolve(self, qname: str, rdtype: str) -> list[Any]:
        self.queries.append((qname, rdtype))
        if (qname, rdtype) not in self.table:
            raise dns.resolver.NXDOMAIN()
        answer = self.table[(qname, rdtype)]
        if not answer:
            raise dns.resolver.NoAnswer()
        return answer


def test_numeric_ip_is_used_as_is_without_queries() -> None:
    fake = FakeResolver({})
    assert resolve_server("192.0.2.5", None, "udp", resolver=fake) == [
        Target(host="192.0.2.5", port=5060, transport="udp", name="192.0.2.5")]
    assert resolve_server("192.0.2.5", None, "tls", resolver=fake)[0].port == 5061
    assert resolve_server("[2001:db8::1]", 5080, "tcp", resolver=fake)[0].host == "2001:db8::1"
    assert fake.queries == []


@pytest.mark.parametrize(("transport", "service"), [("udp", "_sip._udp"), ("tcp", "_sip._tcp"),
                                                    ("tls", "_sips._tcp")])
def test_srv_name_by_transport(transport: str, service: str) -> None:
    assert srv_name("example.com.", transport) == f"{service}.example.com"


def test_srv_priority_order_then_addresses_of_each_target() -> None:
    fake = FakeResolver({
        ("_sips._tcp.example.com", "SRV"): [SrvRec(20, 0, 5071, "backup.example.com."),
                                           SrvRec(10, 0, 5061, "main.example.com.")],
        ("main.example.com", "A"): [ARec("192.0.2.1")],
        ("main.example.com", "AAAA"): [ARec("2001:db8::1")],
        ("backup.example.com", "A"): [ARec("192.0.2.2")],
    })
    targets = resolve_server("example.com", None, "tls", resolver=fake, rng=random.Random(1))
    assert [(t.host, t.port) for t in targets] == [("192.0.2.1", 5061), ("2001:db8::1", 5061),
                                                   ("192.0.2.2", 5071)]
    assert all(t.name == "example.com" and t.transport == "tls" for t in targets)
    assert fake.queries[0] == ("_sips._tcp.example.com", "SRV")


def test_no_srv_falls_back_to_a_on_default_port() -> None:
    fake = FakeResolver({("sip.example.org", "A"): [ARec("198.51.100.9")]})
    targets = resolve_server("sip.example.org", None, "udp", resolver=fake)
    assert [(t.host, t.port) for t in targets] == [("198.51.100.9", 5060)]
    assert ("_sip._udp.sip.example.org", "SRV") in fake.queries


def test_explicit_port_skips_srv() -> None:
    fake = FakeResolver({
        ("_sip._tcp.example.com", "SRV"): [SrvRec(10, 0, 9999, "other.example.com.")],
        ("example.com", "A"): [ARec("192.0.2.50")],
    })
    targets = resolve_server("example.com", 5080, "tcp", resolver=fake)
    assert [(t.host, t.port) for t in targets] == [("192.0.2.50", 5080)]
    assert all(rdtype != "SRV" for _name, rdtype in fake.queries)


def test_srv_target_dot_means_not_offered() -> None:
    fake = FakeResolver({("_sip._udp.example.com", "SRV"): [SrvRec(0, 0, 0, ".")],
                         ("example.com", "A"): [ARec("192.0.2.50")]})
    with pytest.raises(ResolveError, match="not offered"):
        resolve_server("example.com", None, "udp", resolver=fake)


def test_nothing_found_raises() -> None:
    with pytest.raises(ResolveError):
        resolve_server("nowhere.invalid", None, "udp", resolver=FakeResolver({}))


def test_weighted_order_inside_one_priority_follows_weights() -> None:
    records = [_Srv(10, 90, 1, "heavy"), _Srv(10, 10, 2, "light"), _Srv(5, 0, 3, "first")]
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(2000):
        order = order_srv(records, rng)
        assert order[0].target == "first"  # lower priority value always first
        assert sorted(r.target for r in order) == ["first", "heavy", "light"]
        firsts[order[1].target] += 1
    # weight 90 vs 10: "heavy" leads its priority about 90% of the time (RFC 2782)
    assert 0.85 < firsts["heavy"] / 2000 < 0.95, firsts


def test_zero_weights_still_all_returned() -> None:
    records = [_Srv(1, 0, 1, "a"), _Srv(1, 0, 2, "b")]
    assert {r.target for r in order_srv(records, random.Random(3))} == {"a", "b"}


@pytest.mark.parametrize(("text", "expected"), [
    ("example.com", ("example.com", None)),
    ("example.com:5080", ("example.com", 5080)),
    ("127.0.0.1:5070", ("127.0.0.1", 5070)),
    ("[::1]:5080", ("::1", 5080)),
    ("[::1]", ("::1", None)),
    ("::1", ("::1", None)),
])
def test_parse_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "host:0", "host:99999", "host:x", "[::1", ":5060"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)
