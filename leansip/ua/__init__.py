"""leansip's SIP user agent, and its public asyncio API for voice applications.

Everything an application needs is importable from here; these names are the stable API (the modules behind them
may move). Start with :class:`Phone` (``await Phone.start(PhoneOptions(...))``), make calls with
:meth:`Phone.call` / :meth:`Phone.dial`, take them with :meth:`Phone.next_call`, and act on a :class:`PhoneCall`
(answer, play, record, DTMF, transfer, hang up). Events (the ``*Event`` names below) come from
:meth:`Phone.events` / :meth:`PhoneCall.events`. See the README's "Voice applications" section for two complete
programs (examples/auto_attendant.py, examples/dialer.py).
"""

from leansip.media.audiofile import AudioFileError
from leansip.ua.phone import (
    CallFailed,
    MediaFailed,
    Phone,
    PhoneCall,
    PhoneError,
    PhoneEvent,
    PhoneOptions,
    RegistrationError,
)
from leansip.ua.useragent import (
    CallEnded,
    CallEstablished,
    CallUpdated,
    CallUpdateFailed,
    DtmfReceived,
    IncomingCall,
    Registered,
    RegistrationFailed,
    Ringing,
    TransferProgress,
    TransferRequested,
    Unregistered,
)

__all__ = [
    "Phone",
    "PhoneOptions",
    "PhoneCall",
    "PhoneEvent",
    "PhoneError",
    "CallFailed",
    "RegistrationError",
    "AudioFileError",
    "MediaFailed",
    "Registered",
    "RegistrationFailed",
    "Unregistered",
    "IncomingCall",
    "Ringing",
    "CallEstablished",
    "CallUpdated",
    "CallUpdateFailed",
    "CallEnded",
    "DtmfReceived",
    "TransferRequested",
    "TransferProgress",
]
