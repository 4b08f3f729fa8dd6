"""The one error family of the SIP core.

Every problem with a peer's bytes surfaces as :class:`SipParseError`; anything else escaping the core is a bug
in leansip. The error carries a *status hint* (400 Bad Request unless the RFC asks for something else, e.g. 505
for an unsupported SIP version) so the caller can answer without re-deriving why the message was refused, and
it may carry the partially parsed message so a reply can still be addressed to the sender (RFC 3261 8.2 and
16.3: a 400 needs Via, From, To, Call-ID and CSeq from the request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from leansip.sip.message import Message


class SipParseError(ValueError):
    """A message (or a part of one) that does not follow the RFC 3261 grammar.

    ``reason`` says what is wrong in words fit for a log line or a reason phrase; ``status`` is the response
    code the server should send (when a response can be built at all); ``message`` is the part that did parse,
    if the start line and header section were readable.
    """

    def __init__(self, reason: str, status: int = 400, message: Message | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.message = message
