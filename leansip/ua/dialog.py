"""SIP dialogs (RFC 3261 section 12), sans-I/O: the state two user agents share for the length of a call.

Theory of operation
-------------------
A dialog is identified by Call-ID, local tag and remote tag (12). It is built once, from the INVITE and the
response that established it:

* as UAC (12.1.2) from the INVITE we sent and the 2xx (or tagged 1xx) we got: the route set is the response's
  Record-Route *reversed*, the remote target is its Contact;
* as UAS (12.1.1) from the INVITE we got: the route set is its Record-Route *in order*, the remote target is
  its Contact.

:meth:`Dialog.request` then builds every later request of the dialog (12.2.1.1): Request-URI = remote target,
Route = route set, next CSeq, From/To with the tags, and tells where to send it (:meth:`Dialog.next_hop`): the
first Route when there is one (loose routing), else the remote target. A strict router (a first Route without
``lr``) gets the RFC 2543 treatment: its URI becomes the Request-URI and the remote target the last Route.

:meth:`Dialog.check_remote_cseq` enforces 12.2.2: a lower CSeq than the last one seen is answered 500.

Nothing here does I/O or reads a clock; random tags/branches come from :mod:`secrets`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from leansip.sip.errors import SipParseError
from leansip.sip.message import Request, Response, build_request
from leansip.sip.transaction import MAGIC_COOKIE
from leansip.sip.uri import NameAddr, SipURI, parse_name_addr, parse_uri

__all__ = [
    "Dialog",
    "DialogError",
    "new_tag",
    "new_branch",
    "new_call_id",
    "uri_destination",
    "dialog_as_uac",
    "dialog_as_uas",
]

MAX_FORWARDS = "70"


class DialogError(ValueError):
    """A message cannot start or continue a dialog (no Contact, no tags): the peer's fault, not ours."""


def new_tag() -> str:
    """A From/To tag: 32 random bits at least (RFC 3261 19.3); we use 64."""
    return secrets.token_hex(8)


def new_branch() -> str:
    """A transaction branch: the magic cookie plus enough randomness to be unique in space and time (8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID (8.1.1.4): random, with our host as the suggested ``@host`` suffix."""
    return f"{secrets.token_hex(12)}@{host}"


def uri_destination(uri_text: str) -> tuple[str, int]:
    """Where a request for this SIP URI goes: ``maddr`` or host, and the port (5060/5061 by default).

    We do no DNS SRV/NAPTR (RFC 3263): host names are left to the transport's resolver. Raises
    :class:`SipParseError` for a non-SIP URI."""
    uri = parse_uri(uri_text)
    if not isinstance(uri, SipURI):
        raise SipParseError(f"cannot route to non-SIP URI {uri_text[:60]!r}")
    host = uri.params.get("maddr") or uri.host
    return host.strip("[]"), uri.effective_port


@dataclass(slots=True)
class Dialog:
    """Dialog state (RFC 3261 12.1). ``route_set`` holds Route values (name-addr text) in sending order."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the From header value of our requests, without tag (a name-addr)
    remote_uri: str  # the To header value of our requests, without tag
    remote_target: str  # a URI, from the peer's Contact
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    is_uac: bool = True

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def matches(self, msg: Request | Response) -> bool:
        """Does ``msg`` belong to this dialog? Requests carry our tag in To, responses in From."""
        try:
            if msg.call_id != self.call_id:
                return False
            if isinstance(msg, Request):
                return msg.to_tag == self.local_tag and msg.from_tag == self.remote_tag
            return msg.from_tag == self.local_tag and msg.to_tag == self.remote_tag
        except SipParseError:
            return False

    def check_remote_cseq(self, req: Request) -> bool:
        """12.2.2: accept a request whose CSeq is higher than the last one (ACK and CANCEL reuse the
        INVITE's number and are not counted). False means: answer 500."""
        num, method = req.cseq
        if method in ("ACK", "CANCEL"):
            return True
        if self.remote_seq is not None and num <= self.remote_seq:
            return False
        self.remote_seq = num
        return True

    def update_target(self, msg: Request | Response) -> None:
        """A target refresh (re-INVITE or its 2xx) may change the remote target (12.2.1.2, 12.2.2)."""
        contacts = msg.contacts
        if contacts:
            self.remote_target = contacts[0].uri_text

    def _routing(self) -> tuple[str, list[str]]:
        """Request-URI and Route values after 12.2.1.1 (loose routing, or the strict-router rewrite)."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0])
        uri = first.uri
        if isinstance(uri, SipURI) and "lr" not in uri.params:
            return first.uri_text, [*self.route_set[1:], f"<{self.remote_target}>"]
        return self.remote_target, list(self.route_set)

    def next_hop(self) -> tuple[str, int]:
        """The address the dialog's requests go to: the first Route if any, else the remote target (8.1.2)."""
        if self.route_set:
            return uri_destination(parse_name_addr(self.route_set[0]).uri_text)
        return uri_destination(self.remote_target)

    def request(
        self,
        method: str,
        via: str,
        *,
        contact: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> Request:
        """A request within the dialog (12.2.1.1). ``via`` is the full Via value (with a fresh branch).

        The local CSeq is incremented unless ``cseq`` is given (an ACK for a 2xx uses the INVITE's number,
        13.2.2.4). ``contact`` is required for target-refresh requests (re-INVITE)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        ruri, routes = self._routing()
        headers: list[tuple[str, str]] = [("Via", via), ("Max-Forwards", MAX_FORWARDS)]
        headers.extend(("Route", r) for r in routes)
        headers += [
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if contact is not None:
            headers.append(("Contact", contact))
        if extra:
            headers.extend(extra)
        return build_request(method, ruri, headers, body, content_type)


def _strip_tag(value: str) -> str:
    # parse_name_addr results are cached and shared: build a new value, never edit the parsed one
    na = parse_name_addr(value)
    params = {k: v for k, v in na.params.items() if k != "tag"}
    return NameAddr(na.display, na.uri_text, params).build()


def dialog_as_uac(invite: Request, response: Response) -> Dialog:
    """The dialog a 2xx (or tagged 1xx) to our INVITE creates (RFC 3261 12.1.2).

    Raises :class:`DialogError` when the response has no To tag or no Contact to send later requests to."""
    remote_tag = response.to_tag
    local_tag = invite.from_tag
    if not remote_tag or not local_tag:
        raise DialogError("response without a To tag cannot create a dialog")
    contacts = response.contacts
    if not contacts:
        raise DialogError("response without a Contact cannot create a dialog")
    routes = list(reversed(response.header_values("record-route")))
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        local_uri=_strip_tag(invite.header("from") or ""),
        remote_uri=_strip_tag(invite.header("to") or ""),
        remote_target=contacts[0].uri_text,
        route_set=routes,
        local_seq=invite.cseq[0],
        remote_seq=None,
        is_uac=True,
    )


def dialog_as_uas(invite: Request, local_tag: str) -> Dialog:
    """The dialog our response to ``invite`` creates (RFC 3261 12.1.1). Raises :class:`DialogError` when the
    INVITE has no From tag or Contact (we could not send it a BYE)."""
    remote_tag = invite.from_tag
    if not remote_tag:
        raise DialogError("INVITE without a From tag")
    contacts = invite.contacts
    if not contacts:
        raise DialogError("INVITE without a Contact")
    return Dialog(
        call_id=invite.call_id,
        local_tag=local_tag,
        remote_tag=remote_tag,
        local_uri=_strip_tag(invite.header("to") or ""),
        remote_uri=_strip_tag(invite.header("from") or ""),
        remote_target=contacts[0].uri_text,
        route_set=list(invite.header_values("record-route")),
        local_seq=secrets.randbelow(2**16) + 1,  # 8.1.1.5: any start below 2**31; small keeps room to grow
        remote_seq=invite.cseq[0],
        is_uac=False,
    )
