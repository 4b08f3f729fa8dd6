"""HTTP/SIP Digest authentication, sans-I/O (RFC 3261 sec. 22, RFC 2617, RFC 7616, RFC 8760).

This module works on header *values* (the text after ``Authorization:``, ``WWW-Authenticate:`` ...)
so it does not depend on the message parser, and it never reads the clock: every time-dependent
call takes ``now`` (seconds, float, any epoch as long as it is the same one for ``challenge`` and
``verify`` and non-negative).

Theory of operation
-------------------
Server side (registrar, proxy)::

    auth = DigestAuthenticator(secret, realm="example.com")
    # request without credentials -> 401/407 with one header per value:
    values = auth.challenge(now)
    # request with credentials:
    result = auth.verify(value, "REGISTER", lookup, now, request_uri=str(req.uri))
    if result.kind is AuthKind.OK: ...             # result.username owns the AOR? else 403
    elif result.kind is AuthKind.STALE: values = auth.challenge(now, stale=True)
    else: ...                                      # FAIL: re-challenge, count it in ratelimit

Nonces are stateless: ``base64url(ts || random || alg || MAC(secret; realm, ts, random, alg))``, the MAC a
keyed BLAKE2s (:class:`_NonceMac`), so a flood of unauthenticated requests costs no memory. Only nonces that *authenticated
successfully* enter the bounded nonce-count table used for replay protection.

Client side (phone, tests): :func:`choose_challenge` then :func:`build_authorization`.

Layout: this module is the client side and the public home of every name below; the work is done in
:mod:`leansip.sip.digest_hash` (algorithms, H(A1), the response: shared by both sides),
:mod:`leansip.sip.digest_parse` (header values parsed and formatted) and :mod:`leansip.sip.digest_auth` (the
server's authenticator and nonces, the user store adapter).

Errors: :class:`DigestError` for anything malformed in a peer's value (reply 400, or treat as an
authentication failure); :class:`ValueError` for our own bad arguments.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Final

from leansip.sip.digest_auth import (
    AuthKind,
    AuthResult,
    DigestAuthenticator,
    Ha1Lookup,
    NonceCounter,
    NonceUse,
    UserCredentials,
    users_lookup,
)
from leansip.sip.digest_hash import (
    _ALGORITHM_TABLE,
    ALGORITHMS,
    DigestError,
    _base_algorithm,
    canonical_algorithm,
    compute_ha1,
    compute_response,
)
from leansip.sip.digest_parse import (
    DigestParams,
    _format_nc,
    format_challenge,
    format_credentials,
    parse_digest,
    quote_string,
)

__all__ = [
    "ALGORITHMS",
    "AuthKind",
    "AuthResult",
    "DigestAuthenticator",
    "DigestError",
    "DigestParams",
    "Ha1Lookup",
    "NonceCounter",
    "NonceUse",
    "UserCredentials",
    "build_authorization",
    "canonical_algorithm",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "format_challenge",
    "format_credentials",
    "parse_digest",
    "quote_string",
    "users_lookup",
]

# Client preference, strongest first (RFC 8760 sec. 2.4: use the most preferred one we support).
_CLIENT_PREFERENCE: Final = ("SHA-512-256", "SHA-512-256-sess", "SHA-256", "SHA-256-sess", "MD5", "MD5-sess")


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def choose_challenge(values: Iterable[str]) -> str:
    """Pick the challenge value to answer: SHA-512-256, then SHA-256, then MD5 (RFC 8760 sec. 2.4).

    Values that do not parse, are not Digest, or use an algorithm we lack are skipped, as RFC
    7616 sec. 3.3 says for unknown algorithms. Among equal algorithms the first one wins.
    Raises :class:`DigestError` if nothing is usable.
    """
    best: tuple[int, str] | None = None
    for value in values:
        try:
            params = parse_digest(value)
            algorithm = canonical_algorithm(params.algorithm)
        except DigestError:
            continue
        if params.realm is None or params.nonce is None:
            continue
        rank = _CLIENT_PREFERENCE.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, value)
    if best is None:
        raise DigestError("no usable Digest challenge")
    return best[1]


def build_authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    body: bytes = b"",
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """Answer one challenge value with an Authorization / Proxy-Authorization value.

    Uses the challenge's algorithm (MD5 if absent), qop=auth when offered, else auth-int when
    that is the only one offered (hashing ``body``), else the RFC 2069 form. ``nc`` is the
    caller's count of requests sent with this nonce; ``cnonce`` defaults to a fresh random one.
    Raises :class:`DigestError` if the challenge is malformed or unusable.
    """
    params = parse_digest(challenge_value)
    if params.realm is None or params.nonce is None:
        raise DigestError("challenge lacks realm or nonce")
    algorithm = canonical_algorithm(params.algorithm)
    options = params.qop_options
    qop: str | None
    if not options:
        qop = None
    elif "auth" in options:
        qop = "auth"
    elif "auth-int" in options:
        qop = "auth-int"
    else:
        raise DigestError(f"no supported qop in {params.qop!r}")
    sess = _ALGORITHM_TABLE[algorithm][1]
    if cnonce is None and (qop is not None or sess):
        cnonce = secrets.token_hex(16)
    nc_text = _format_nc(nc) if qop is not None else None
    ha1 = compute_ha1(username, params.realm, password, _base_algorithm(algorithm))
    response = compute_response(
        ha1, method, uri, params.nonce, algorithm=algorithm, qop=qop, nc=nc_text, cnonce=cnonce, body=body
    )
    return format_credentials(
        username=username,
        realm=params.realm,
        nonce=params.nonce,
        uri=uri,
        response=response,
        # Echo the algorithm only if the server named it; RFC 2069-era servers do not know it.
        algorithm=params.algorithm if params.algorithm is not None else None,
        cnonce=cnonce if (qop is not None or sess) else None,
        opaque=params.opaque,
        qop=qop,
        nc=nc_text,
    )
