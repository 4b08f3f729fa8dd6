"""Header names and the header line: the vocabulary every SIP message shares (RFC 3261 sections 7.3, 20).

The compact forms (``v`` -> ``via``) and the spelling leansip writes (``Call-ID``, ``CSeq``), which headers
are comma lists and which may appear only once, the numbering of the headers the server's straight path reads
(``KIND_*``: a parsed message indexes the first line of each), and :class:`Header`, one line as received.

Why a module of its own: the message model (:mod:`leansip.sip.message_model`) and the parser
(:mod:`leansip.sip.message_parse`) both read these tables, and neither should hold the other to get them.
Users import these names from :mod:`leansip.sip.message`, their public home.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "COMPACT_FORMS",
    "KIND_NAMES",
    "LIST_HEADERS",
    "SINGLE_HEADERS",
    "Header",
    "canonical_name",
    "display_name",
]

# RFC 3261 7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: Final = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "a": "accept-contact",
    "b": "referred-by",
    "d": "request-disposition",
    "j": "reject-contact",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
}

_SPECIAL_DISPLAY: Final = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers whose values are comma-separated lists (RFC 3261 7.3.1). Others (From, To, Call-ID,
# WWW-Authenticate, Date ...) may contain commas that are not separators.
LIST_HEADERS: Final = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "allow-events",
        "path",
        "service-route",
        "alert-info",
        "call-info",
        "error-info",
        "warning",
    }
)

# Headers that may appear at most once (RFC 3261 20; RFC 4475 3.3.9 "multi01" must get 400).
SINGLE_HEADERS: Final = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})

_WS: Final = " \t"

# The headers the server's straight path reads, numbered: a parsed message indexes the first line of each (and
# notes which appear more than once), so reading one is a list read instead of a scan of every line, an absent
# one is known at once, and validation needs no counting pass. Any other name is found by the scan.
KIND_VIA: Final = 0
KIND_FROM: Final = 1
KIND_TO: Final = 2
KIND_CALL_ID: Final = 3
KIND_CSEQ: Final = 4
KIND_MAX_FORWARDS: Final = 5
KIND_CONTACT: Final = 6
KIND_EXPIRES: Final = 7
KIND_CONTENT_LENGTH: Final = 8
KIND_ROUTE: Final = 9
KIND_RECORD_ROUTE: Final = 10
KIND_REQUIRE: Final = 11
KIND_PROXY_REQUIRE: Final = 12
KIND_PATH: Final = 13
KIND_USER_AGENT: Final = 14
KIND_NAMES: Final = ("via", "from", "to", "call-id", "cseq", "max-forwards", "contact", "expires", "content-length",
                     "route", "record-route", "require", "proxy-require", "path", "user-agent")
_KIND_COUNT: Final = len(KIND_NAMES)
#: canonical name -> kind, for the parser's first sight of a spelling
_KINDS: Final[dict[str, int]] = {name: kind for kind, name in enumerate(KIND_NAMES)}


def canonical_name(name: str) -> str:
    """Lower-case long form of a header name (``V`` -> ``via``)."""
    lname = name.lower()
    return COMPACT_FORMS.get(lname, lname)


def _header_key(name: str) -> str:
    """:func:`canonical_name` for the names code asks :meth:`Message.header` for, remembered: they are a few
    literals, and a dict hit on one costs a fraction of the ``lower()`` call it saves."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = canonical_name(name)
        if len(_KEY_CACHE) < 1024 and len(name) <= _NAME_KEY_MAX:
            _KEY_CACHE[name] = key
    return key


#: header names longer than this are not remembered by the name caches (the longest registered name is 29)
_NAME_KEY_MAX: Final = 64


_KEY_CACHE: Final[dict[str, str]] = {}


def display_name(name: str) -> str:
    """The conventional spelling of a canonical header name, for headers leansip writes itself."""
    spelled = _DISPLAY_CACHE.get(name)
    if spelled is None:
        spelled = _SPECIAL_DISPLAY.get(name)
        if spelled is None:
            spelled = "-".join(part.capitalize() for part in name.split("-"))
        if len(_DISPLAY_CACHE) < 1024 and len(name) <= _NAME_KEY_MAX:  # the names leansip edits are few
            _DISPLAY_CACHE[name] = spelled
    return spelled


_DISPLAY_CACHE: Final[dict[str, str]] = {}


class Header:
    """One header line: canonical name, unfolded value, and the original line (``None`` once edited)."""

    __slots__ = ("name", "value", "raw")

    def __init__(self, name: str, value: str, raw: str | None = None) -> None:
        self.name = name
        self.value = value
        self.raw = raw

    def line(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"{display_name(self.name)}: {self.value}"

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.value!r})"
