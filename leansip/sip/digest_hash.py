"""Digest algorithms and hashing (RFC 2617, RFC 7616, RFC 8760): the part both sides compute the same way.

The algorithm table (whose order is bound into our nonces), :func:`canonical_algorithm`, :func:`compute_ha1`
(what a user store may keep) and :func:`compute_response` (what a client sends and a server recomputes), and
:class:`DigestError`, the one error for a peer's bad digest value. The parser and formatter
(:mod:`leansip.sip.digest_parse`), the client side (:mod:`leansip.sip.digest`) and the server's authenticator
(:mod:`leansip.sip.digest_auth`) all build on this module; users import these names from
:mod:`leansip.sip.digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "ALGORITHMS",
    "DigestError",
    "canonical_algorithm",
    "compute_ha1",
    "compute_response",
]


class DigestError(ValueError):
    """A peer's digest header value is malformed or uses something we do not support.

    ``status`` hints at the reply: 400 for syntax; the authenticator never raises it, it turns it
    into a FAIL result instead.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------

# Canonical name -> (hashlib name, is "-sess"). The order is fixed forever: the index is bound
# into our nonces. RFC 7616 sec. 6.1 registers the names; they are case-insensitive.
_ALGORITHM_TABLE: Final[dict[str, tuple[str, bool]]] = {
    "MD5": ("md5", False),
    "MD5-sess": ("md5", True),
    "SHA-256": ("sha256", False),
    "SHA-256-sess": ("sha256", True),
    # RFC 7616 sec. 3.2 / RFC 8760: SHA-512/256, i.e. hashlib's "sha512_256" (not a truncated SHA-512).
    "SHA-512-256": ("sha512_256", False),
    "SHA-512-256-sess": ("sha512_256", True),
}
ALGORITHMS: Final[tuple[str, ...]] = tuple(_ALGORITHM_TABLE)
_BY_UPPER: Final = {name.upper(): name for name in ALGORITHMS}
_HEX_LEN: Final = {"md5": 32, "sha256": 64, "sha512_256": 64}


def canonical_algorithm(name: str | None) -> str:
    """Return the canonical spelling of a digest algorithm; a missing one means MD5 (RFC 2617).

    Raises :class:`DigestError` for an algorithm we do not implement (the caller should then
    ignore that challenge, RFC 7616 sec. 3.3).
    """
    if name is None:
        return "MD5"
    if name in _ALGORITHM_TABLE:  # already canonical (ours, or as clients spell it): no upper-cased copy
        return name
    try:
        return _BY_UPPER[name.upper()]
    except KeyError:
        raise DigestError(f"unsupported algorithm {name!r}") from None


def _base_algorithm(algorithm: str) -> str:
    """The algorithm whose H(user:realm:password) a ``-sess`` variant starts from."""
    return algorithm.removesuffix("-sess")


def _utf8(text: str) -> bytes:
    """UTF-8, passing lone surrogates through: a peer's value decoded with surrogateescape
    must hash (and fail to match) rather than raise."""
    return text.encode("utf-8", "surrogatepass")


def _sha512_256(data: bytes) -> Any:
    return hashlib.new("sha512_256", data)  # no named constructor in hashlib


def _builtin_md5() -> Callable[[bytes], Any]:
    """CPython's own MD5 when it was built in: for the short strings of a digest it takes about half the time of
    OpenSSL's (~300 against ~620 ns a hash here: OpenSSL 3 sets up a context per hash), and verifying a response
    is three hashes. Same function, so the same results; OpenSSL's when the interpreter has no ``_md5``."""
    try:
        import _md5  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - an interpreter built without its own hash modules
        return hashlib.md5
    return _md5.md5  # type: ignore[no-any-return]


#: hashlib's named constructors skip the by-name lookup of ``hashlib.new`` (a quarter of a digest's cost here)
_HASHES: Final[dict[str, Callable[[bytes], Any]]] = {"md5": _builtin_md5(), "sha256": hashlib.sha256,
                                               "sha512_256": _sha512_256}


def _h(hash_name: str, data: str | bytes) -> str:
    if isinstance(data, str):
        data = _utf8(data)
    return str(_HASHES[hash_name](data).hexdigest())


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username ":" realm ":" password), lowercase hex: the value a user store may keep.

    For ``-sess`` algorithms this is the *stored* HA1 (the one of the base algorithm); the
    session key H(HA1:nonce:cnonce) is derived inside :func:`compute_response`, because it
    depends on per-request values. Strings are hashed as UTF-8 (RFC 7616 sec. 4).
    """
    hash_name, _ = _ALGORITHM_TABLE[canonical_algorithm(algorithm)]
    return _h(hash_name, f"{username}:{realm}:{password}")


#: H(A2) of "method:uri" by hash name: a registrar checks the same few (every REGISTER of a domain names the
#: same Request-URI), and a hash is ~3,000 instructions where a lookup is ~300. Bounded in entries (emptied
#: when full) and in key length (a peer's long Request-URIs are hashed, not kept: at most 1024 x 256 bytes).
_HA2_CACHE: Final[dict[str, dict[str, str]]] = {name: {} for name in _HASHES}
_HA2_CACHE_SIZE: Final = 1024
_HA2_KEY_MAX: Final = 256


def _ha2(hash_name: str, a2: str) -> str:
    if len(a2) > _HA2_KEY_MAX:
        return _h(hash_name, a2)
    cache = _HA2_CACHE[hash_name]
    ha2 = cache.get(a2)
    if ha2 is None:
        ha2 = _h(hash_name, a2)
        if len(cache) >= _HA2_CACHE_SIZE:
            cache.clear()
        cache[a2] = ha2
    return ha2


def compute_response(
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value of RFC 2617 sec. 3.2.2.1 / RFC 7616 sec. 3.4.1, lowercase hex.

    ``ha1`` is :func:`compute_ha1`'s result. ``qop`` None is the RFC 2069 form
    H(HA1:nonce:HA2); "auth" and "auth-int" need ``nc`` (8 hex digits) and ``cnonce``;
    "auth-int" hashes ``body`` into A2 (RFC 3261 sec. 22.4: the message body, H("") if empty).
    Raises ValueError for an impossible combination (our bug, not the peer's).
    """
    hash_name, sess = _ALGORITHM_TABLE[canonical_algorithm(algorithm)]
    if sess:
        if cnonce is None:
            raise ValueError("-sess algorithms need a cnonce")
        ha1 = _h(hash_name, f"{ha1}:{nonce}:{cnonce}")
    if qop is None or qop == "auth":
        ha2 = _ha2(hash_name, f"{method}:{uri}")
    elif qop == "auth-int":
        ha2 = _h(hash_name, f"{method}:{uri}:{_h(hash_name, body)}")
    else:
        raise ValueError(f"unknown qop {qop!r}")
    if qop is None:
        return _h(hash_name, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return _h(hash_name, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
