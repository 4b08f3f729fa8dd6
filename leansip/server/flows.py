"""Flows: the connections clients opened to us, and how requests find their way back over them.

A browser phone (SIP over WebSocket, RFC 7118) or a TCP/TLS client behind a NAT can only be reached over the
connection it opened itself: its Contact (``sip:k3x9@a8df.invalid;transport=ws``) names no address anyone can
connect to. RFC 5626 calls such a connection a *flow*. This module is the server's knowledge of flows, kept
apart from routing so the proxies only ask it small questions:

* which flows are open: the I/O shell reports each connection it opens or loses (:meth:`Flows.opened`,
  :meth:`Flows.closed`), so the core can answer 430 Flow Failed at once for a flow that is gone instead of
  handing the stream layer a message it cannot deliver (or trying DNS on a ``.invalid`` name);
* *flow tokens* (RFC 5626 5.2, RFC 7118 5): the proxy puts one as the user part of the Record-Route entry it
  inserts facing such a client, ``<sip:TOKEN@proxy;transport=ws;lr>``. Every in-dialog request of that dialog
  comes back with that Route; the token names the connection to send it out on, so both directions of a call
  between two browsers work although neither has an address. A token is the connection id and a MAC of it
  under the server's secret: a peer cannot forge one that steers requests into another client's connection;
* which contacts were registered over which flow, so a request whose Request-URI is such a contact (an
  in-dialog request without our Record-Route) goes over that connection, and so the bindings that can only
  be reached over a flow die with it (:func:`drop_flow_bindings`, as Kamailio's ``handle_lost_tcp``) instead of
  being forked to until they expire.

Bounded: entries exist only for open connections (capped by the stream layer's ``max_connections``), with at
most :data:`MAX_CONTACTS_PER_FLOW` registered contacts remembered per connection.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import TYPE_CHECKING, Final

from leansip.sip.errors import SipParseError
from leansip.sip.uri import SipURI, parse_uri

if TYPE_CHECKING:  # pragma: no cover
    from leansip.server.location import Binding, LocationService

#: transports whose clients reach us over a connection they opened (flows); UDP and SCTP are not tracked
FLOW_TRANSPORTS: Final = frozenset({"tcp", "tls", "ws", "wss"})
#: transports whose clients can be reached over their own connection only (RFC 7118 5: a browser accepts none)
WS_TRANSPORTS: Final = frozenset({"ws", "wss"})
#: registered contacts remembered per connection; past it a contact is simply not indexed (it still expires)
MAX_CONTACTS_PER_FLOW: Final = 64
#: bytes of MAC in a token: 48 bits, checked in constant time, against guessing another client's connection
_MAC_BYTES: Final = 6
FLOW_FAILED: Final = 430  # RFC 5626 11.5


class Flows:
    """Open connections, the contacts registered over each, and the flow tokens naming them."""

    def __init__(self, secret: bytes) -> None:
        self._mac = hashlib.blake2s(key=hashlib.sha256(secret).digest(), digest_size=_MAC_BYTES)
        #: conn_id -> (transport, peer address) of every open connection the shell told us about
        self.open: dict[str, tuple[str, tuple[str, int]]] = {}
        #: conn_id -> {contact: aor} registered over it (what may have to go when it closes)
        self._bound: dict[str, dict[str, str]] = {}
        #: contact_flow_key(contact) -> conn_id it was last registered over
        self._contacts: dict[str, str] = {}

    # ------------------------------------------------------------------ connections
    def opened(self, conn_id: str, transport: str, peer: tuple[str, int]) -> None:
        self.open[conn_id] = (transport.lower(), peer)

    def closed(self, conn_id: str) -> list[tuple[str, str]]:
        """Forget a connection; returns the (aor, contact) pairs registered over it."""
        self.open.pop(conn_id, None)
        bound = self._bound.pop(conn_id, None)
        if not bound:
            return []
        contacts = self._contacts
        out: list[tuple[str, str]] = []
        for contact, aor in bound.items():
            try:
                uri = parse_uri(contact)
                key = contact_flow_key(uri) if isinstance(uri, SipURI) else ""
            except SipParseError:
                key = ""
            if contacts.get(key) == conn_id:
                del contacts[key]
            out.append((aor, contact))
        return out

    def is_open(self, conn_id: str) -> bool:
        return conn_id in self.open

    def address(self, conn_id: str) -> tuple[str, tuple[str, int]] | None:
        """(transport, peer) of an open connection, None when it is gone."""
        return self.open.get(conn_id)

    # ------------------------------------------------------------------ registrations
    def bound(self, conn_id: str, aor: str, contact: str, uri: SipURI) -> None:
        """``contact`` of ``aor`` was registered over ``conn_id`` (only called for flow transports)."""
        if conn_id not in self.open:
            return  # a connection the shell never reported (or already closed): nothing will close it here
        per = self._bound.setdefault(conn_id, {})
        if contact not in per and len(per) >= MAX_CONTACTS_PER_FLOW:
            return
        per[contact] = aor
        self._contacts[contact_flow_key(uri)] = conn_id

    def contact_flow(self, uri: SipURI) -> str | None:
        """The open connection ``uri`` was registered over, if it is a contact registered over one."""
        if not self._contacts:
            return None
        conn_id = self._contacts.get(contact_flow_key(uri))
        return conn_id if conn_id is not None and conn_id in self.open else None

    # ------------------------------------------------------------------ tokens
    def token(self, conn_id: str) -> str:
        """The flow token of a connection: base64url of a MAC and the connection id (RFC 5626 5.2)."""
        raw = conn_id.encode("latin-1")
        mac = self._mac.copy()
        mac.update(raw)
        return base64.urlsafe_b64encode(mac.digest() + raw).rstrip(b"=").decode("ascii")

    def conn_of(self, token: str) -> str | None:
        """The connection id a token names, or None when it is not a token of ours (bad MAC, not base64)."""
        if len(token) < 10 or len(token) > 400:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        body = raw[_MAC_BYTES:]
        mac = self._mac.copy()
        mac.update(body)
        if not body or not hmac.compare_digest(mac.digest(), raw[:_MAC_BYTES]):
            return None
        return body.decode("latin-1")


def contact_flow_key(uri: SipURI) -> str:
    """What identifies a contact registered over a flow: user, host and port (its parameters vary between the
    REGISTER and the dialog's Contact, e.g. ``;ob``)."""
    port = uri.port
    return f"{uri.user or ''}@{uri.host.lower()}:{'' if port is None else str(port)}"


def only_over_flow(b: Binding) -> bool:
    """Can ``b`` be reached only over the connection it registered from? WebSocket clients always (RFC 7118 5);
    RFC 5626 outbound clients (``reg-id``); clients behind a NAT (``received``); and ``.invalid`` contacts.
    A TCP/TLS contact with a reachable address of its own stays: the stream layer opens a new connection."""
    if b.transport in WS_TRANSPORTS or b.reg_id is not None or b.received is not None:
        return True
    try:
        uri = parse_uri(b.contact)
    except SipParseError:
        return True
    return not isinstance(uri, SipURI) or is_invalid_host(uri.host)


def is_invalid_host(host: str) -> bool:
    """A ``.invalid`` host (RFC 6761 6.4: never resolves), as browser phones put in their Contact and Via."""
    if not host or host[-1] not in "dD":  # the usual host is decided without a lower-cased copy
        return False
    return host.lower().endswith(".invalid")


def drop_flow_bindings(flows: Flows, location: LocationService, conn_id: str) -> list[Binding]:
    """A connection closed: remove the bindings registered over it that nothing else can reach (Kamailio's
    ``handle_lost_tcp``). A binding refreshed since over another connection is left alone."""
    dropped: list[Binding] = []
    for aor, contact in flows.closed(conn_id):
        b = location.get(aor, contact)
        if b is not None and b.conn_id == conn_id and only_over_flow(b):
            location.remove(aor, contact)
            dropped.append(b)
    return dropped
