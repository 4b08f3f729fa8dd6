"""The registrar: REGISTER processing after RFC 3261 section 10.3 (pure logic over a LocationService).

The server core calls :meth:`Registrar.register` after it has parsed and validated the request, checked
Require and, when authentication is on, authenticated the sender (step 3 of 10.3). This module does the rest:
steps 4 to 8. It never reads the clock: ``now`` is passed in. Storage errors propagate (the core answers 500).

Bindings are keyed by address-of-record. With ``use_domain`` off (the default, as Kamailio's usrloc), the AOR is
the user part alone, so ``alice@127.0.0.1`` and ``alice@localhost`` are the same user of this single-domain
server; with it on, it is ``user@host``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from leansip.server.flows import FLOW_TRANSPORTS, Flows
from leansip.server.location import Binding, LocationService
from leansip.sip.errors import SipParseError
from leansip.sip.message import (
    KIND_CONTACT,
    KIND_EXPIRES,
    KIND_PATH,
    KIND_USER_AGENT,
    Request,
    Response,
    make_response,
)
from leansip.sip.uri import (
    NameAddr,
    SipURI,
    TextBound,
    cache_text,
    digits_value,
    is_digits,
    is_ip_literal,
    parse_name_addr,
    parse_uri,
    unquote,
    uri_key,
)


@dataclass(slots=True)
class RegistrarPolicy:
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 86400
    use_domain: bool = False
    max_contacts: int = 32
    #: bindings the location service may hold: past it a REGISTER that would add one gets 503 (without
    #: authentication anyone may register any AOR, so the count is a peer's to choose)
    max_bindings: int = 1_000_000


def contact_key(contact: str) -> str:
    """Comparison key of a Contact URI (RFC 3261 10.3 step 6 compares with 19.1.4 rules); cached because
    every refresh of a binding asks for the same key several times. A plain dict, not ``functools.lru_cache``:
    compiled, a dict hit is a direct lookup, and the lru wrapper's bookkeeping cost more than a miss here."""
    key = _CONTACT_KEYS.get(contact)
    if key is None:
        try:
            key = uri_key(parse_uri(contact))
        except SipParseError:
            key = contact
        cache_text(_CONTACT_KEYS, _CONTACT_KEYS_BOUND, contact, key)
    return key


_CONTACT_KEYS: Final[dict[str, str]] = {}
#: 16,384 contacts (the benchmark's 10,000 users refresh from it), 2 M characters (128 on average; a key is at
#: most as long as its contact)
_CONTACT_KEYS_BOUND: Final = TextBound(16384, 2 << 20)


def aor_of(uri: SipURI, use_domain: bool) -> str:
    user = uri.user_unescaped or ""
    return f"{user}@{uri.host.lower()}" if use_domain else user


def needs_source_routing(contact: SipURI, source: tuple[str, int]) -> bool:
    """True when the Contact cannot be reached as written and the request must go to the packet source
    (a client behind NAT: RFC 3581 and RFC 5626's "flow" idea). We take it as behind NAT when the contact host
    is an IP literal different from the source IP; a host name is taken as reachable as written."""
    host = contact.host.strip("[]")
    if is_ip_literal(host):
        return host != source[0]
    return False


class RegistrarError(Exception):
    """Processing stopped with a response (e.g. 400, 423, 500); ``response`` is ready to send."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class Registrar:
    """Binds contacts to addresses-of-record. One instance per server."""

    def __init__(self, location: LocationService, policy: RegistrarPolicy | None = None,
                 flows: Flows | None = None) -> None:
        self.location = location
        self.policy = policy or RegistrarPolicy()
        #: told which contacts were registered over which connection (bindings die with their connection)
        self.flows = flows

    def aor_for(self, req: Request) -> str:
        """The AOR of a REGISTER (from To, RFC 3261 10.3 step 5), or 400 when To is not a SIP URI."""
        uri = req.to.uri
        if not isinstance(uri, SipURI) or uri.user is None:
            raise SipParseError("To of a REGISTER must be a sip: or sips: URI with a user part", message=req)
        return aor_of(uri, self.policy.use_domain)

    def register(
        self,
        req: Request,
        source: tuple[str, int],
        transport: str,
        now: float,
        *,
        to_tag: str,
        conn_id: str | None = None,
    ) -> Response:
        """Apply a REGISTER and build the 200 OK listing the current bindings, or an error response.

        Raises :class:`SipParseError` for a malformed Contact/Expires (the core answers 400).
        """
        policy = self.policy
        aor = self.aor_for(req)
        header_expires = req.first_value(KIND_EXPIRES)
        default = policy.default_expires
        if header_expires is not None:
            default = _expires_value(header_expires, req)
        call_id = req.call_id
        cseq = req.cseq[0]
        raw_contacts = req.values_of(KIND_CONTACT)

        if any(c.strip() == "*" for c in raw_contacts):
            # RFC 3261 10.3 step 6: '*' only alone and only with Expires: 0
            if len(raw_contacts) != 1 or header_expires is None or default != 0:
                raise SipParseError("Contact: * needs to be alone and with Expires: 0", message=req)
            for b in self.location.lookup(aor, now):
                if b.call_id == call_id and cseq <= b.cseq:
                    return self._fail(req, 500, "Out of order CSeq", to_tag)
            self.location.remove_all(aor)
            return self._ok(req, aor, now, to_tag)

        if not raw_contacts:
            return self._ok(req, aor, now, to_tag)  # a query: list the bindings (step 6, no Contact)
        if len(raw_contacts) > policy.max_contacts:
            return self._fail(req, 403, "Too many contacts", to_tag)

        # informational, kept for the admin view with every binding: its first 256 characters, one string for
        # all the bindings of the same phone model (the same few values come from thousands of phones)
        user_agent = _shared(req.first_value(KIND_USER_AGENT) or "")
        added = 0
        path = req.values_of(KIND_PATH)
        planned: list[tuple[NameAddr, int, float]] = []
        # the values split above, parsed once (what req.contacts would split and parse again)
        for contact in [parse_name_addr(v) for v in raw_contacts]:
            uri = contact.uri  # raises SipParseError on a bad URI
            params = contact.params
            expires = default
            if "expires" in params:
                expires = _expires_value(params["expires"] or "", req)
            if 0 < expires < policy.min_expires:
                return self._interval_too_brief(req, to_tag)
            expires = min(expires, policy.max_expires)
            q = 1.0
            if params.get("q") is not None:
                q = _q_value(params["q"] or "", req)
            existing = self.location.get(aor, str(uri))
            if existing is not None and existing.call_id == call_id:
                if cseq < existing.cseq:
                    return self._fail(req, 500, "Out of order CSeq", to_tag)
                if cseq == existing.cseq:
                    # the same REGISTER again (a retransmission the reply cache no longer holds, or one that
                    # came over another connection): answer as before and change nothing
                    return self._ok(req, aor, now, to_tag)
            if existing is None and expires:
                added += 1
            planned.append((contact, expires, q))
        if added and self.location.count() + added > policy.max_bindings:
            return make_response(req, 503, "Too many bindings", to_tag=to_tag, headers=[("Retry-After", "60")])

        for contact, expires, q in planned:
            uri_text = contact.uri_text
            if expires == 0:
                self.location.remove(aor, uri_text)
                continue
            uri = contact.uri
            received = None
            if isinstance(uri, SipURI) and needs_source_routing(uri, source):
                received = f"sip:{source[0]}:{source[1]}"
            reg_id_text = contact.params.get("reg-id")
            reg_id = int(reg_id_text) if reg_id_text and is_digits(reg_id_text) and len(reg_id_text) < 10 else None
            instance_text = contact.params.get("+sip.instance")
            instance = unquote(instance_text) if instance_text else None
            if instance is not None and reg_id is not None:
                self._replace_flow(aor, uri_text, instance, reg_id, now)
            self.location.put(
                Binding(
                    aor=aor,
                    contact=uri_text,
                    q=q,
                    expires_at=now + expires,
                    call_id=call_id,
                    cseq=cseq,
                    source=(_shared(source[0]), source[1]),  # one host string for its bindings
                    transport=transport,
                    user_agent=user_agent,
                    registered_at=now,
                    instance=instance,
                    reg_id=reg_id,
                    path=list(path) if path else None,
                    received=received,
                    conn_id=conn_id,
                )
            )
            flows = self.flows
            if flows is not None and conn_id is not None and transport in FLOW_TRANSPORTS and isinstance(uri, SipURI):
                flows.bound(conn_id, aor, uri_text, uri)
        return self._ok(req, aor, now, to_tag)

    def _replace_flow(self, aor: str, contact: str, instance: str, reg_id: int, now: float) -> None:
        """RFC 5626 6: a REGISTER with the ``+sip.instance`` and ``reg-id`` of a stored binding replaces that
        binding even when its Contact URI differs (a browser phone reconnecting: a new random contact, a new
        connection, the same device and flow)."""
        key = self.location.key(contact)
        for b in self.location.lookup(aor, now):
            if b.instance == instance and b.reg_id == reg_id and self.location.key(b.contact) != key:
                self.location.remove(aor, b.contact)

    # ------------------------------------------------------------------ responses
    def _ok(self, req: Request, aor: str, now: float, to_tag: str) -> Response:
        contacts = []
        for b in self.location.lookup(aor, now):
            q = "" if b.q == 1.0 else f";q={b.q:g}"
            contacts.append(("Contact", f"<{b.contact}>;expires={b.expires_in(now)}{q}"))
        return make_response(req, 200, to_tag=to_tag, headers=contacts)

    def _fail(self, req: Request, status: int, reason: str, to_tag: str) -> Response:
        return make_response(req, status, reason, to_tag=to_tag)

    def _interval_too_brief(self, req: Request, to_tag: str) -> Response:
        return make_response(req, 423, to_tag=to_tag, headers=[("Min-Expires", str(self.policy.min_expires))])


_USER_AGENT_MAX: Final = 256
_SHARED_TEXT: Final[dict[str, str]] = {}
#: 4,096 values of at most 256 characters: User-Agents and source hosts (the same few for many bindings)
_SHARED_BOUND: Final = TextBound(4096, 1 << 20)


def _shared(text: str) -> str:
    """``text`` (cut to :data:`_USER_AGENT_MAX`) as the one string already kept for it, if any (bounded)."""
    text = text[:_USER_AGENT_MAX]
    known = _SHARED_TEXT.get(text)
    if known is not None:
        return known
    cache_text(_SHARED_TEXT, _SHARED_BOUND, text, text)
    return text


def _expires_value(text: str, req: Request) -> int:
    text = text.strip()
    # ASCII digits only: str.isdigit() also takes '\xb2' (a latin-1 byte of the peer's), which int() refuses
    if not is_digits(text):
        raise SipParseError(f"bad expires value {text[:20]!r}", message=req)
    # RFC 3261 20.19: values above 2**32-1 are treated as 2**32-1; the registrar clamps to max anyway
    return min(digits_value(text[:11], 11), 2**32 - 1)


def _q_value(text: str, req: Request) -> float:
    try:
        q = float(text)
    except ValueError:
        raise SipParseError(f"bad q value {text[:20]!r}", message=req) from None
    if not 0.0 <= q <= 1.0:
        raise SipParseError(f"q value out of range {text[:20]!r}", message=req)
    return q
