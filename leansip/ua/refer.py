"""Call transfer's header values, pure: Refer-To (RFC 3515), Replaces (RFC 3891), message/sipfrag (RFC 3420) and
Subscription-State (RFC 6665), as the user agent writes and reads them.

* Blind transfer: the transferor sends REFER with ``Refer-To: <sip:carol@example.com>``; the transferee calls
  that URI and reports how it went in NOTIFYs whose body is the status line of its INVITE's response
  (``SIP/2.0 100 Trying``, then ``SIP/2.0 200 OK`` or the failure), the last one with
  ``Subscription-State: terminated``.
* Attended transfer: the transferor first talks to the target, then REFERs with the target's URI carrying an
  embedded Replaces header naming that consultation dialog (``?Replaces=callid%3Bto-tag%3Dx%3Bfrom-tag%3Dy``);
  the transferee copies it into its INVITE and the target swaps the consultation call for the new one.

The Replaces tags are as the *recipient* sees its dialog (RFC 3891 3): ``to-tag`` is its local tag,
``from-tag`` the remote one. Every parser raises :class:`ReferError` (answer 400) for what it cannot read.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from leansip.sip.errors import SipParseError
from leansip.sip.uri import SipURI, parse_name_addr, parse_uri

__all__ = [
    "ReferError",
    "ReplacesId",
    "ReferTarget",
    "parse_refer_to",
    "refer_to_value",
    "parse_replaces",
    "sipfrag",
    "parse_sipfrag",
    "subscription_terminated",
    "SIPFRAG",
]

SIPFRAG = "message/sipfrag;version=2.0"


class ReferError(ValueError):
    """A Refer-To, Replaces or sipfrag we cannot read (the peer's fault: 400 Bad Request)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplacesId:
    """The dialog a Replaces header names, as its recipient sees it (RFC 3891 3)."""

    call_id: str
    to_tag: str  # the recipient's local tag
    from_tag: str  # the recipient's remote tag
    early_only: bool = False

    def value(self) -> str:
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}" + (
            ";early-only" if self.early_only else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferTarget:
    """Where a REFER asks us to call: the URI without its embedded headers, and the Replaces among them."""

    uri: str
    replaces: ReplacesId | None = None


def parse_replaces(value: str) -> ReplacesId:
    """``callid;to-tag=a;from-tag=b[;early-only]`` -> :class:`ReplacesId`; :class:`ReferError` if a part is
    missing."""
    parts = [p.strip() for p in value.strip().split(";")]
    call_id = parts[0]
    params: dict[str, str] = {}
    for p in parts[1:]:
        key, _, v = p.partition("=")
        params[key.strip().lower()] = v.strip()
    if not call_id or not params.get("to-tag") or not params.get("from-tag"):
        raise ReferError(f"Replaces needs a Call-ID, to-tag and from-tag: {value[:80]!r}")
    return ReplacesId(call_id=call_id, to_tag=params["to-tag"], from_tag=params["from-tag"],
                      early_only="early-only" in params)


def parse_refer_to(value: str) -> ReferTarget:
    """A Refer-To value (name-addr or bare URI) -> the SIP URI to call and its embedded Replaces (RFC 3515 2.1,
    RFC 3891 6.1). Other embedded headers are dropped: we do not let a REFER set arbitrary headers of our
    INVITE. :class:`ReferError` for a value that is not a sip:/sips: URI."""
    try:
        na = parse_name_addr(value)
    except SipParseError as exc:
        raise ReferError(f"bad Refer-To: {exc.reason}") from None
    text = na.uri_text
    base, _, headers = text.partition("?")
    try:
        uri = parse_uri(base)
    except SipParseError as exc:
        raise ReferError(f"bad Refer-To URI: {exc.reason}") from None
    if not isinstance(uri, SipURI):
        raise ReferError(f"Refer-To is not a SIP URI: {base[:60]!r}")
    replaces: ReplacesId | None = None
    for header in headers.split("&") if headers else []:
        name, _, raw = header.partition("=")
        if name.strip().lower() == "replaces":
            replaces = parse_replaces(unquote(raw))
    return ReferTarget(uri=base, replaces=replaces)


def refer_to_value(uri: str, replaces: ReplacesId | None = None) -> str:
    """The Refer-To header value for ``uri``, with ``replaces`` escaped into it as an embedded header."""
    if replaces is None:
        return f"<{uri}>"
    return f"<{uri}?Replaces={quote(replaces.value(), safe='')}>"


def sipfrag(status: int, reason: str) -> bytes:
    """A message/sipfrag body holding one status line (RFC 3515 2.4.5: at least the status line)."""
    return f"SIP/2.0 {status} {reason}\r\n".encode()


def parse_sipfrag(body: bytes) -> tuple[int, str]:
    """(status, reason) from a sipfrag's first line; :class:`ReferError` if it is not a SIP status line."""
    first = body.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    parts = first.split(" ", 2)
    if len(parts) < 2 or not parts[0].upper().startswith("SIP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ReferError(f"sipfrag without a status line: {first[:60]!r}")
    status = int(parts[1])
    if not 100 <= status <= 699:
        raise ReferError(f"sipfrag status {status} out of range")
    return status, parts[2] if len(parts) > 2 else ""


def subscription_terminated(value: str | None) -> bool:
    """Whether a Subscription-State value says the subscription is over (RFC 6665 4.1.3)."""
    return value is not None and value.split(";", 1)[0].strip().lower() == "terminated"
