"""What the user agent core reports: the events of registrations and calls (RFC 3261, RFC 3515 transfer).

Every entry point of :class:`~leansip.ua.useragent.UserAgent` returns a list of *outputs*
(:data:`Output`): :class:`~leansip.sip.send.Send` items for the transport and these events for the
application, in the order they happened. They are frozen values; every call event carries its call's Call-ID.
Each checks its own fields on construction (a status outside 100-699, a DTMF digit that is not one), so a bug
shows where the event is made, not where it is read.

Why a module of its own: applications (the phone, the CLI, tests) read these values and need nothing of the
machinery that makes them. Users import them from :mod:`leansip.ua` (or :mod:`leansip.ua.useragent`).
"""

from __future__ import annotations

from dataclasses import dataclass

from leansip.sip.send import Send

__all__ = [
    "UaEvent",
    "Registered",
    "RegistrationFailed",
    "Unregistered",
    "IncomingCall",
    "Ringing",
    "CallEstablished",
    "OfferReceived",
    "CallUpdated",
    "CallUpdateFailed",
    "CallEnded",
    "OptionsResult",
    "DtmfReceived",
    "TransferRequested",
    "TransferProgress",
    "Output",
]


def _check_status(status: int | None) -> None:
    if status is not None and not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    """The registrar accepted our binding for ``expires`` seconds (a refresh is already scheduled)."""

    expires: int

    def __post_init__(self) -> None:
        if self.expires <= 0:
            raise ValueError("Registered needs a positive expiry")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """REGISTER failed: ``status`` is the final response (408 for a timeout, 401/407 for bad credentials)."""

    status: int
    reason: str

    def __post_init__(self) -> None:
        _check_status(self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    """Our binding was removed (REGISTER with expires=0 answered 2xx)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingCall:
    """An INVITE arrived and we sent 180 Ringing: call :meth:`UserAgent.answer` or :meth:`UserAgent.reject`.
    ``replaces`` is the call this one takes the place of (an attended transfer's INVITE with Replaces, RFC 3891):
    answer it at once; the old call is hung up when the new one is confirmed."""

    call_id: str
    caller: str
    remote_sdp: bytes
    replaces: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ringing:
    """A provisional response above 100 to our INVITE (180 Ringing, 183 Session Progress)."""

    call_id: str
    status: int

    def __post_init__(self) -> None:
        if not 101 <= self.status <= 199:
            raise ValueError("Ringing is for 101-199")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEstablished:
    """The call is up (UAC: 2xx received and ACKed; UAS: our 2xx was ACKed). ``remote_sdp`` is the peer's
    offer (UAS) or answer (UAC)."""

    call_id: str
    remote_sdp: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferReceived:
    """A re-INVITE arrived with a new offer (hold, resume, new address): answer it with
    :meth:`UserAgent.answer` (or refuse with :meth:`UserAgent.reject`, e.g. 488)."""

    call_id: str
    remote_sdp: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUpdated:
    """A re-INVITE completed: ``remote_sdp`` is the peer's current description."""

    call_id: str
    remote_sdp: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUpdateFailed:
    """Our re-INVITE was refused; the call continues with the old session (RFC 3261 14.1)."""

    call_id: str
    status: int

    def __post_init__(self) -> None:
        _check_status(self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """The call is over. ``reason``: rejected, cancelled, timeout, local hangup, remote hangup, no ACK,
    replaced, failed. ``status`` is the SIP status that ended it, when there was one."""

    call_id: str
    reason: str
    status: int | None = None

    def __post_init__(self) -> None:
        _check_status(self.status)
        if not self.reason:
            raise ValueError("CallEnded needs a reason")


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfReceived:
    """The peer sent a digit: ``via`` is ``rfc4733`` (an RTP telephone-event, reported by the phone's media) or
    ``info`` (a SIP INFO with application/dtmf-relay or application/dtmf)."""

    call_id: str
    digit: str
    duration_ms: int = 0
    via: str = "rfc4733"

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#ABCD":
            raise ValueError(f"not a DTMF digit: {self.digit!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRequested:
    """The peer asked us to transfer (a REFER, already answered 202 with a first NOTIFY "100 Trying"): call
    ``target`` with :meth:`UserAgent.invite` ``(..., transfer_of=call_id)`` -- its progress is reported to the
    transferor for us -- or refuse with :meth:`UserAgent.decline_transfer`. ``replaces`` is set for an attended
    transfer (the INVITE carries it)."""

    call_id: str
    target: str
    referred_by: str | None = None
    replaces: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferProgress:
    """How our transfer (REFER) goes: ``status`` is the REFER's own answer (202, or a refusal) or the status the
    transferee reported in a NOTIFY (100, 180, 200, 486 ...). ``final``: nothing more will come; the transfer
    succeeded when the final status is 2xx (then hang up our call with the transferee, RFC 5589)."""

    call_id: str
    status: int
    reason: str = ""
    final: bool = False

    def __post_init__(self) -> None:
        _check_status(self.status)

    @property
    def succeeded(self) -> bool:
        return self.final and 200 <= self.status < 300


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionsResult:
    """Final response (or 408) to our OPTIONS: a keep-alive or capability probe."""

    status: int
    allow: str | None = None


UaEvent = (
    Registered
    | RegistrationFailed
    | Unregistered
    | IncomingCall
    | Ringing
    | CallEstablished
    | OfferReceived
    | CallUpdated
    | CallUpdateFailed
    | CallEnded
    | OptionsResult
    | DtmfReceived
    | TransferRequested
    | TransferProgress
)
Output = Send | UaEvent
