"""Locate the phone's SIP server (RFC 3263 4.2 with SRV, RFC 2782 ordering), without NAPTR.

The phone knows which transport it wants (``--transport`` or a ``sips:`` target), so NAPTR (RFC 3263 4.1),
which only picks a transport, is skipped. What remains is:

* a numeric IP address is used as is, with the given port or the transport's default (5060, 5061 for TLS);
* a name with an explicit port is looked up with A/AAAA only (RFC 3263 4.2: "If the TARGET was not a numeric
  IP address, but a port is present in the URI, the client performs an A or AAAA record lookup");
* otherwise an SRV lookup of ``_sip._udp``, ``_sip._tcp`` or ``_sips._tcp`` gives (host, port) pairs in RFC 2782
  order (lowest priority first, weighted random inside a priority), each resolved to addresses;
* no SRV record: A/AAAA of the name itself on the default port.

:func:`resolve_server` returns the addresses to try in order; the phone uses the first for UDP and tries them in
turn for TCP/TLS until a connection opens. It blocks (dnspython's resolver is synchronous), so the CLI calls it
before the event loop starts. The resolver is injectable (anything with dnspython's
``resolve(qname, rdtype)``), so the tests answer from a table without any network.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Target", "ResolveError", "resolve_server", "srv_name", "order_srv", "parse_host_port", "DEFAULT_PORTS"]

log = logging.getLogger("leansip.ua.resolve")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
_SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


class ResolveError(Exception):
    """The server name has no usable address (NXDOMAIN, no records, resolver failure)."""


class DnsResolver(Protocol):
    """The part of ``dns.resolver.Resolver`` we use."""

    def resolve(self, qname: str, rdtype: str) -> Iterable[Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One address to try: ``host`` is an IP address; ``name`` is the DNS name it came from (for TLS
    certificate checks, RFC 5922 wants the domain the user asked for, not the SRV target)."""

    host: str
    port: int
    transport: str
    name: str


@dataclass(frozen=True, slots=True)
class _Srv:
    priority: int
    weight: int
    port: int
    target: str


def parse_host_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port or None). Raises ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty server")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:  # a bare IPv6 address
        host, port_text = text, None
    else:
        host, port_text = text, None
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, int(port_text)


def srv_name(name: str, transport: str) -> str:
    """The SRV owner name for ``transport`` (RFC 3263 4.1 table): ``_sips._tcp`` for TLS."""
    try:
        return f"{_SRV_PREFIX[transport]}.{name.rstrip('.')}"
    except KeyError:
        raise ValueError(f"no SRV service for transport {transport!r}") from None


def order_srv(records: Sequence[_Srv], rng: random.Random) -> list[_Srv]:
    """RFC 2782 order: ascending priority; inside one priority, repeatedly pick a record with probability
    proportional to its weight (weight-0 records first in the list so they keep a small chance)."""
    out: list[_Srv] = []
    for prio in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def _default_resolver() -> DnsResolver:
    import dns.resolver

    return dns.resolver.Resolver()


def _query(resolver: DnsResolver, qname: str, rdtype: str) -> list[Any]:
    """Records of one type; [] for NXDOMAIN / no answer / failure (the next step of 4.2 then applies)."""
    import dns.exception
    import dns.resolver

    try:
        return list(resolver.resolve(qname, rdtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
            dns.exception.Timeout) as exc:
        log.debug("event=dns_empty qname=%s type=%s reason=%s", qname, rdtype, type(exc).__name__)
        return []


def _addresses(resolver: DnsResolver, name: str) -> list[str]:
    """A then AAAA records of ``name`` (IPv4 first: the phone binds IPv4 by default)."""
    found: list[str] = []
    for rdtype in ("A", "AAAA"):
        for rec in _query(resolver, name, rdtype):
            addr = str(getattr(rec, "address", rec))
            if addr not in found:
                found.append(addr)
    return found


def resolve_server(host: str, port: int | None, transport: str, *, resolver: DnsResolver | None = None,
                   rng: random.Random | None = None) -> list[Target]:
    """Addresses to try for ``host`` (with optional explicit ``port``) over ``transport``, best first.

    Raises :class:`ResolveError` when nothing is found and ValueError for an unknown transport."""
    if transport not in DEFAULT_PORTS:
        raise ValueError(f"unknown transport {transport!r}")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [Target(host=host, port=port or DEFAULT_PORTS[transport], transport=transport, name=host)]
    res = resolver if resolver is not None else _default_resolver()
    name = host.rstrip(".")
    targets: list[Target] = []
    if port is None:
        records = [
            _Srv(int(r.priority), int(r.weight), int(r.port), str(r.target).rstrip("."))
            for r in _query(res, srv_name(name, transport), "SRV")
        ]
        # RFC 2782: a single record with target "." means the service is decidedly not available here
        if len(records) == 1 and records[0].target in ("", "."):
            raise ResolveError(f"{srv_name(name, transport)}: service not offered (SRV target '.')")
        for rec in order_srv(records, rng or random.Random()):
            for addr in _addresses(res, rec.target):
                targets.append(Target(host=addr, port=rec.port, transport=transport, name=name))
        if records:
            if not targets:
                raise ResolveError(f"SRV targets of {name} have no addresses")
            log.info("event=dns_srv name=%s targets=%s", name, " ".join(f"{t.host}:{t.port}" for t in targets))
            return targets
    for addr in _addresses(res, name):
        targets.append(Target(host=addr, port=port or DEFAULT_PORTS[transport], transport=transport, name=name))
    if not targets:
        raise ResolveError(f"{name}: no SRV, A or AAAA records")
    return targets
