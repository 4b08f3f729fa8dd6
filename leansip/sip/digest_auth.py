"""The server side of Digest authentication: MAC-signed stateless nonces, challenges, verification, replay
tracking (RFC 3261 sec. 22, RFC 2617, RFC 7616, RFC 8760), and the user store adapter.

Call :meth:`DigestAuthenticator.challenge` for a 401/407 and :meth:`DigestAuthenticator.verify` for a request
carrying credentials (see :mod:`leansip.sip.digest` for the whole flow). ``verify`` never raises for a peer's
value: it returns an :class:`AuthResult`. Nonces are ``base64url(ts || random || alg || MAC(secret; realm, ts,
random, alg))``, the MAC a keyed BLAKE2s (:class:`_NonceMac`), so a flood of unauthenticated requests costs no
memory; only nonces that authenticated successfully enter the bounded :class:`NonceCounter`. Parsing is
:mod:`leansip.sip.digest_parse`'s, hashing :mod:`leansip.sip.digest_hash`'s; users import these names from
:mod:`leansip.sip.digest`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Final

from leansip.sip.digest_hash import (
    _ALGORITHM_TABLE,
    _HEX_LEN,
    ALGORITHMS,
    DigestError,
    _base_algorithm,
    _utf8,
    canonical_algorithm,
    compute_ha1,
    compute_response,
)
from leansip.sip.digest_parse import _is_nc, format_challenge, parse_digest

__all__ = [
    "AuthKind",
    "AuthResult",
    "DigestAuthenticator",
    "Ha1Lookup",
    "NonceCounter",
    "NonceUse",
    "UserCredentials",
    "users_lookup",
]

#: the algorithm's byte in a nonce: its index in ALGORITHMS
_ALGORITHM_BYTE: Final = {name: bytes([i]) for i, name in enumerate(ALGORITHMS)}
#: bound once: compiled, ``hmac.compare_digest`` is a module attribute lookup at every call
_compare_digest: Final = hmac.compare_digest


# --------------------------------------------------------------------------------------------
# User store adapter
# --------------------------------------------------------------------------------------------

Ha1Lookup = Callable[[str, str, str], "str | None"]
"""(username, realm, base algorithm: "MD5", "SHA-256" or "SHA-512-256") -> stored HA1 hex, or None."""


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """What a user store keeps for one user: a plaintext password, or HA1s, or both.

    HA1 is H(user:realm:password) for one algorithm and one realm, so a stored HA1 only
    answers for exactly that pair; a plaintext password answers for any.
    """

    username: str
    password: str | None = None
    ha1s: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_password(cls, username: str, password: str) -> UserCredentials:
        return cls(username=username, password=password)

    @classmethod
    def from_ha1(cls, username: str, realm: str, ha1_by_algorithm: Mapping[str, str]) -> UserCredentials:
        """HA1-only user, e.g. ``{"MD5": "...", "SHA-256": "..."}`` for one realm."""
        ha1s = {(canonical_algorithm(a), realm): h.lower() for a, h in ha1_by_algorithm.items()}
        for (algorithm, _), h in ha1s.items():
            if algorithm.endswith("-sess"):
                raise ValueError("store the HA1 of the base algorithm, not of -sess")
            hash_name = _ALGORITHM_TABLE[algorithm][0]
            if len(h) != _HEX_LEN[hash_name] or any(c not in "0123456789abcdef" for c in h):
                raise ValueError(f"HA1 for {algorithm} must be {_HEX_LEN[hash_name]} hex digits")
        return cls(username=username, ha1s=MappingProxyType(ha1s))

    def ha1(self, algorithm: str, realm: str) -> str | None:
        """HA1 for (algorithm, realm); -sess variants use their base algorithm's HA1."""
        base = _base_algorithm(canonical_algorithm(algorithm))
        stored = self.ha1s.get((base, realm))
        if stored is not None:
            return stored
        if self.password is not None:
            return compute_ha1(self.username, realm, self.password, base)
        return None


def users_lookup(users: Mapping[str, UserCredentials]) -> Ha1Lookup:
    """Adapt a username -> UserCredentials mapping to the lookup callback of ``verify``."""

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        user = users.get(username)
        return None if user is None else user.ha1(algorithm, realm)

    return lookup


# --------------------------------------------------------------------------------------------
# Server side
# --------------------------------------------------------------------------------------------


class AuthKind(Enum):
    OK = "ok"
    STALE = "stale"  # correct password, nonce expired or forgotten: re-challenge with stale=TRUE
    FAIL = "fail"  # anything else; deliberately one outcome so users cannot be enumerated


@dataclass(slots=True, kw_only=True)
class AuthResult:
    """Outcome of :meth:`DigestAuthenticator.verify`.

    ``reason`` is for logs only and is excluded from ``==``: two FAILs compare equal whatever
    the cause, which is what a caller may expose. ``username`` is set for OK and STALE only.
    Immutable by convention (not ``frozen``: a frozen dataclass's ``__init__`` runs interpreted and sets each
    field through ``object.__setattr__``, about 7,000 instructions per request under callgrind).
    """

    kind: AuthKind
    username: str | None
    algorithm: str | None
    reason: str = field(compare=False)

    # explicit __init__: mypyc compiles it (a generated dataclass __init__ stays interpreted)
    def __init__(self, *, kind: AuthKind, username: str | None = None, algorithm: str | None = None,
                 reason: str = "") -> None:
        if kind is AuthKind.FAIL and (username is not None or algorithm is not None):
            raise ValueError("FAIL carries no username or algorithm")
        if kind is not AuthKind.FAIL and username is None:
            raise ValueError(f"{kind.name} needs the username")
        self.kind = kind
        self.username = username
        self.algorithm = algorithm
        self.reason = reason

    @property
    def ok(self) -> bool:
        return self.kind is AuthKind.OK


def _fail(reason: str) -> AuthResult:
    return AuthResult(kind=AuthKind.FAIL, reason=reason)


class NonceUse(Enum):
    OK = "ok"
    REPLAY = "replay"
    EVICTED = "evicted"


class NonceCounter:
    """Per nonce, the highest nonce-count accepted: replay protection with bounded memory.

    Entries are keyed by nonce in first-use order and dropped when the nonce expires or, when
    the table is full, oldest first. A nonce that may have been evicted (issued no later than
    the newest evicted one) and is not in the table can no longer be told apart from a replay,
    so it is reported EVICTED and the caller treats it as stale (a fresh nonce is cheap).

    An entry's value is one int: issued and the nonce's lifetime in milliseconds and the count (see
    :func:`_pack`), 44 bytes where a tuple of two floats and an int was 140; the key is the nonce's hash (a
    64-bit int, 36 bytes, where the 50-character nonce is 99: two nonces alive at once share a hash with odds of
    one in 10**9 at 100,000 of them, and the worst that does is a needless 401); the order is a deque of the
    keys beside a plain dict (8 bytes an entry, where an OrderedDict's links are about 60). Every registered
    user's nonce is here for its lifetime: together an entry is 130 bytes instead of 330.
    """

    # nc is at most 0xffffffff; "used without qop" is recorded as above any nc.
    _USED_ONCE = 1 << 32

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: dict[int, int] = {}
        #: the keys of ``_entries`` in first-use order (an entry is only ever removed from the front)
        self._order: deque[int] = deque()
        self._evicted_upto = float("-inf")
        #: expired entries are dropped at most once a second: a look at the oldest entry builds an iterator and
        #: a tuple (~2,000 instructions), more than the rest of a use; a nonce past its expiry is refused as
        #: stale before it gets here, so one kept a second longer changes nothing but memory
        self._purge_at = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def _purge(self, now: float) -> None:
        entries, order = self._entries, self._order
        while order:
            oldest = order[0]
            if _expires(entries[oldest]) > now:
                break
            order.popleft()
            del entries[oldest]

    def use(self, nonce: str, *, issued: float, expires: float, nc: int | None, now: float) -> NonceUse:
        """Record an authenticated use of ``nonce`` with count ``nc`` (None: no qop, once only).

        Call only after the response was verified, so forged requests cannot burn counts.
        ``issued`` and ``expires`` are kept to the millisecond (a nonce's time stamp is in milliseconds).
        """
        if now >= self._purge_at:
            self._purge(now)
            self._purge_at = now + 1.0
        key = hash(nonce)
        packed = self._entries.get(key)
        if packed is None:
            if issued <= self._evicted_upto:
                return NonceUse.EVICTED
            last = 0
        else:
            last = packed & _NC_MASK
        if nc is None:
            if packed is not None:
                return NonceUse.REPLAY
            new_last = self._USED_ONCE
        else:
            if nc <= last:
                return NonceUse.REPLAY
            new_last = nc
        entries = self._entries
        if packed is None:
            self._order.append(key)
        entries[key] = _pack(issued, expires, new_last)
        while len(entries) > self.max_entries:
            old = entries.pop(self._order.popleft())
            self._evicted_upto = max(self._evicted_upto, _issued(old))
        return NonceUse.OK


#: bits of a packed nonce entry: the count (nc or "used once", 33 bits) in the lowest 34, the lifetime in
#: milliseconds in the next 66, the issue time in milliseconds (any sign) above
_NC_BITS: Final = 34
_NC_MASK: Final = (1 << _NC_BITS) - 1
_ISSUED_SHIFT: Final = 100
_TTL_MASK: Final = (1 << (_ISSUED_SHIFT - _NC_BITS)) - 1


def _pack(issued: float, expires: float, last: int) -> int:
    issued_ms = math.floor(issued * 1000)
    ttl_ms = min(max(math.ceil(expires * 1000) - issued_ms, 0), _TTL_MASK)
    return (issued_ms << _ISSUED_SHIFT) | (ttl_ms << _NC_BITS) | last


def _issued(packed: int) -> float:
    return (packed >> _ISSUED_SHIFT) / 1000


def _expires(packed: int) -> float:
    return ((packed >> _ISSUED_SHIFT) + ((packed >> _NC_BITS) & _TTL_MASK)) / 1000


_NONCE_TS: Final = 8
_NONCE_RANDOM: Final = 12
_NONCE_MAC: Final = 16
_NONCE_LEN: Final = _NONCE_TS + _NONCE_RANDOM + 1 + _NONCE_MAC
# Tolerate float rounding of the millisecond timestamp; a nonce further in the future means
# the clock stepped back, and since we signed it we answer STALE rather than FAIL.
_FUTURE_SLACK: Final = 1.0


class _NonceMac:
    """The nonce MAC: keyed BLAKE2s (RFC 7693 section 2.9, a MAC by design), 16 bytes, under one key.

    The keyed state is made once and copied per message: one hash pass per MAC, where HMAC-SHA256 needs two
    (about 460 ns against 1,650 ns here, and a nonce costs two MACs, issue and check)."""

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > 32:  # BLAKE2s takes keys of up to 32 bytes: a longer secret is hashed down first
            key = hashlib.blake2s(key).digest()
        self._keyed = hashlib.blake2s(key=key, digest_size=_NONCE_MAC, person=b"lsnonce2")
        if prefix:  # .digest(msg) is then the MAC of prefix + msg, the prefix hashed once, here
            self._keyed.update(prefix)

    def digest(self, msg: bytes) -> bytes:
        state = self._keyed.copy()
        state.update(msg)
        return bytes(state.digest())


#: random bytes for nonces are read from the OS this many nonces at a time (one getrandom call, ~600 ns, each)
_RANDOM_POOL: Final = 64


#: base64's standard alphabet to the URL-safe one and back (RFC 4648 section 5), for ``bytes.translate``
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE: Final = bytes.maketrans(b"-_", b"+/")


def _b64(data: bytes) -> str:
    """Unpadded base64url. binascii directly: ``base64.urlsafe_b64encode`` is two interpreted frames around it."""
    # positional arguments only (a keyword is parsed by name, ~1,000 instructions); the padding and the newline
    # are sliced off (deleting them in the translate pass costs CPython a 256-entry table fill per call)
    return binascii.b2a_base64(data).translate(_TO_URLSAFE)[:(len(data) * 4 + 2) // 3].decode("ascii")


def _unb64(text: str) -> bytes:
    """Decode unpadded base64url; ValueError (UnicodeEncodeError, binascii.Error) for what cannot be decoded.

    Lenient as ``base64.urlsafe_b64decode`` is (characters outside the alphabet are skipped): a caller that needs
    the canonical form encodes the result again and compares."""
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))


#: the characters a base64url text may end with, by its length modulo 4: those whose unused low bits are zero
_B64URL_LAST: Final = {0: "", 2: "AQgw", 3: "AEIMQUYcgkosw048"}


def _canonical_b64(text: str) -> bool:
    """Is ``text``, which :func:`_unb64` decoded to ``len(text) * 6 // 8`` bytes, the one unpadded base64url
    spelling of them?

    Decoding is lenient: it takes ``+`` and ``/`` for ``-`` and ``_``, ignores the unused low bits of the last
    character, and skips characters outside the alphabet (which the length precondition rules out: each one
    skipped leaves fewer bytes). So a nonce could be spelt several ways and each spelling be counted as a fresh
    nonce. This is the test of encoding again and comparing (a property test holds it to that), at two
    ``memchr`` scans instead of an encoding."""
    if "+" in text or "/" in text:
        return False
    last = _B64URL_LAST.get(len(text) % 4)
    return last is not None and (not last or text[-1] in last)


#: entries kept per realm (or realm and algorithm) by the authenticator's small caches: the stand-in HA1s,
#: the nonce MAC states and the opaque values; past it, values are computed and not kept
_PER_REALM_MAX: Final = 64
#: nonces this authenticator issued last, remembered with what their MAC check would prove (see _open_nonce)
_ISSUED_MAX: Final = 4096
#: times below this (seconds) have their milliseconds within the nonce's 8 bytes for sure
_MAX_NOW: Final = 1.8e16


class DigestAuthenticator:
    """Issues challenges with stateless MAC-signed nonces and verifies credentials.

    ``secret`` keys the nonce MAC; share it between processes that must accept each other's
    nonces, rotate it to invalidate them. ``algorithms`` is the server's preference order; one
    challenge is offered per algorithm (RFC 8760 sec. 2.4). Call :meth:`challenge` for a 401/407
    and :meth:`verify` for a request carrying credentials.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        nonce_ttl: float = 300,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        *,
        qop: Iterable[str] = ("auth",),
        allow_no_qop: bool = True,
        max_tracked_nonces: int = 100_000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("secret must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        self.realm = realm
        self.nonce_ttl = float(nonce_ttl)
        self.algorithms = tuple(canonical_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("need at least one algorithm")
        self.qop = tuple(qop)
        if any(q not in ("auth", "auth-int") for q in self.qop):
            raise ValueError("qop must be auth and/or auth-int")
        self.allow_no_qop = allow_no_qop
        self.nonces = NonceCounter(max_tracked_nonces)
        self._secret = secret
        self._realm_macs: dict[str, _NonceMac] = {}
        self._opaque: dict[str, str] = {}
        #: (realm, algorithm, stale) -> the challenge's text before and after the nonce
        self._templates: dict[tuple[str, str, bool], tuple[str, str]] = {}
        self._random_bytes = random_bytes
        #: os.urandom is read in batches (what it returns is the same kind of randomness, a syscall less per nonce);
        #: an injected random_bytes (tests) is called once per nonce, as asked
        self._pool = b""
        self._pool_at = 0
        self._pooled = random_bytes is os.urandom
        #: nonce -> (issue time, algorithm, realm) of the last _ISSUED_MAX nonces made here, in a ring: the answer
        #: to a challenge comes back within moments and is opened by a lookup; an older nonce, or one another
        #: node issued under the same secret, is opened by its MAC as before
        self._issued: dict[str, tuple[float, str, str]] = {}
        self._issued_ring: list[str] = [""] * _ISSUED_MAX
        self._issued_at = 0
        # A per-secret stand-in password: an unknown user's response is checked against an HA1 made from it, so
        # unknown and known users take the same path (the store answers a known user's HA1 from memory, see
        # UserStore.ha1_lookup; the stand-in's HA1 is made once per realm and algorithm, not per request).
        self._dummy_password = hmac.new(secret, b"leansip-dummy-user", hashlib.sha256).hexdigest()
        self._dummy_ha1: dict[tuple[str, str], str] = {}

    def _stand_in_ha1(self, realm: str, algorithm: str) -> str:
        """The HA1 an unknown user's response is checked against (so it costs what a known user's does)."""
        key = (realm, algorithm)
        ha1 = self._dummy_ha1.get(key)
        if ha1 is None:
            ha1 = compute_ha1("leansip-dummy-user", realm, self._dummy_password, algorithm)
            if len(self._dummy_ha1) < _PER_REALM_MAX:
                self._dummy_ha1[key] = ha1
        return ha1

    # -- nonces ---------------------------------------------------------------------------

    def _nonce_mac(self, realm: str, body: bytes) -> bytes:
        """MAC over ``leansip-nonce-v2 NUL realm NUL body``; the keyed state after the realm's prefix is kept
        per realm (ours, and any a caller names, up to _PER_REALM_MAX), so a nonce costs one copy, one update,
        one digest."""
        mac = self._realm_macs.get(realm)
        if mac is None:
            mac = _NonceMac(self._secret, b"leansip-nonce-v2\x00" + _utf8(realm) + b"\x00")
            if len(self._realm_macs) < _PER_REALM_MAX:
                self._realm_macs[realm] = mac
        return mac.digest(body)

    def make_nonce(self, now: float, algorithm: str, realm: str | None = None) -> str:
        """A fresh nonce bound to ``now``, ``algorithm`` and ``realm`` (default: ours)."""
        ts = int(now * 1000 + 0.5)  # compiled, a native conversion (round() is a builtin looked up and called)
        # the float first: compiled, a compare with 1 << 64 (past the unboxed range) is a generic call
        if ts < 0 or (now >= _MAX_NOW and ts >= 1 << 64):
            raise ValueError("now must be a non-negative time")
        if self._pooled:
            at = self._pool_at
            if at + _NONCE_RANDOM > len(self._pool):
                self._pool = os.urandom(_NONCE_RANDOM * _RANDOM_POOL)
                at = 0
            rnd = self._pool[at:at + _NONCE_RANDOM]
            self._pool_at = at + _NONCE_RANDOM
        else:
            rnd = self._random_bytes(_NONCE_RANDOM)
        if len(rnd) != _NONCE_RANDOM:
            raise ValueError("random_bytes returned the wrong length")
        algorithm = canonical_algorithm(algorithm)
        realm = realm or self.realm
        body = ts.to_bytes(_NONCE_TS, "big") + rnd + _ALGORITHM_BYTE[algorithm]
        nonce = _b64(body + self._nonce_mac(realm, body))
        self._remember(nonce, ts / 1000, algorithm, realm)
        return nonce

    def forget_issued(self) -> None:
        """Drop the remembered nonces: they still open, by their MAC (a memory test empties this bounded table
        between rounds, as it does the parse caches)."""
        self._issued.clear()
        self._issued_ring = [""] * _ISSUED_MAX
        self._issued_at = 0

    def issued_count(self) -> int:
        """How many issued nonces are remembered (at most 4,096)."""
        return len(self._issued)

    def _remember(self, nonce: str, issued: float, algorithm: str, realm: str) -> None:
        """Keep a nonce just made with what opening it would give, in place of the oldest one kept."""
        at = self._issued_at
        ring = self._issued_ring
        oldest = ring[at]
        if oldest:
            self._issued.pop(oldest, None)
        ring[at] = nonce
        self._issued[nonce] = (issued, algorithm, realm)
        self._issued_at = at + 1 if at + 1 < _ISSUED_MAX else 0

    def _open_nonce(self, nonce: str, realm: str) -> tuple[float, str] | None:
        """(issue time, algorithm) of a nonce we signed for ``realm``, else None."""
        kept = self._issued.get(nonce)
        if kept is not None and kept[2] == realm:
            return kept[0], kept[1]  # made here moments ago: what the checks below would find, without them
        if len(nonce) != (_NONCE_LEN * 4 + 2) // 3:
            return None
        try:
            raw = _unb64(nonce)
        except ValueError:
            return None
        if len(raw) != _NONCE_LEN or not _canonical_b64(nonce):
            return None
        body, mac = raw[:-_NONCE_MAC], raw[-_NONCE_MAC:]
        if not _compare_digest(mac, self._nonce_mac(realm, body)):
            return None
        alg_index = body[-1]
        if alg_index >= len(ALGORITHMS):
            return None
        return int.from_bytes(body[:_NONCE_TS], "big") / 1000, ALGORITHMS[alg_index]

    def opaque(self, realm: str | None = None) -> str:
        """Constant per secret and realm: clients echo it; it carries no state."""
        realm = realm or self.realm
        cached = self._opaque.get(realm)
        if cached is None:
            msg = b"leansip-opaque\x00" + _utf8(realm)
            cached = _b64(hmac.digest(self._secret, msg, "sha256")[:16])
            if len(self._opaque) < _PER_REALM_MAX:
                self._opaque[realm] = cached
        return cached

    # -- challenge ------------------------------------------------------------------------

    def challenge(self, now: float, stale: bool = False, realm: str | None = None) -> list[str]:
        """Header values for a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate).

        One value per configured algorithm, in preference order (SHA-256 first by default),
        each with its own nonce bound to that algorithm. ``stale=True`` after a STALE result,
        so the client retries without asking the user again (RFC 2617 sec. 3.2.1).
        """
        realm = realm or self.realm
        return [self._challenge_text(realm, algorithm, stale, self.make_nonce(now, algorithm, realm))
                for algorithm in self.algorithms]

    def _challenge_text(self, realm: str, algorithm: str, stale: bool, nonce: str) -> str:
        """:func:`format_challenge`'s text, formatted once per realm/algorithm/stale: only the nonce changes."""
        key = (realm, algorithm, stale)
        template = self._templates.get(key)
        if template is None:
            text = format_challenge(realm=realm, nonce="-", algorithm=algorithm, qop=self.qop,
                                    opaque=self.opaque(realm), stale=stale)
            # the last ', nonce="-"' is ours: only opaque (base64), stale, algorithm and qop tokens follow it
            cut = text.rindex(', nonce="-"') + len(', nonce="')
            template = (text[:cut], text[cut + 1:])
            if len(self._templates) < 64:
                self._templates[key] = template
        return template[0] + nonce + template[1]  # our nonce is base64url: nothing in it needs quoting

    # -- verify ---------------------------------------------------------------------------

    def verify(
        self,
        credentials_value: str,
        method: str,
        users_ha1_lookup: Ha1Lookup,
        now: float,
        expected_realm: str | None = None,
        *,
        request_uri: str,
        body: bytes = b"",
    ) -> AuthResult:
        """Check an Authorization / Proxy-Authorization value for a request.

        ``method`` and ``request_uri`` come from the request line; ``body`` is needed only for
        qop=auth-int. ``users_ha1_lookup(username, realm, algorithm)`` returns the stored HA1
        for the base algorithm ("MD5", "SHA-256" or "SHA-512-256") or None. ``expected_realm`` defaults to ours.
        Never raises for peer input: returns OK (check ``username`` owns the AOR, else 403),
        STALE (re-challenge with stale=True) or FAIL (re-challenge; count it for rate limiting).
        """
        realm = expected_realm or self.realm
        try:
            params = parse_digest(credentials_value)
        except DigestError as exc:
            return _fail(f"malformed: {exc.reason}")
        username, nonce, uri, response = params.username, params.nonce, params.uri, params.response
        if username is None or nonce is None or uri is None or response is None or params.realm is None:
            return _fail("missing username, realm, nonce, uri or response")
        if params.realm != realm:
            return _fail(f"wrong realm {params.realm!r}")
        try:
            algorithm = canonical_algorithm(params.algorithm)
        except DigestError as exc:
            return _fail(exc.reason)
        if algorithm not in self.algorithms:
            return _fail(f"algorithm {algorithm} not offered")
        opened = self._open_nonce(nonce, realm)
        if opened is None:
            return _fail("nonce not ours or tampered")
        issued, nonce_algorithm = opened
        if nonce_algorithm != algorithm:
            return _fail(f"nonce issued for {nonce_algorithm}, used with {algorithm}")
        # RFC 3261 sec. 22.4 / RFC 2617 sec. 3.2.2.5: the uri must be the Request-URI.
        if uri.strip() != request_uri.strip():
            return _fail("uri does not match the Request-URI")
        # opaque is no secret (every challenge shows it): a plain compare, no constant-time one
        if params.opaque is not None and params.opaque != self.opaque(realm):
            return _fail("opaque mismatch")
        qop = params.qop
        nc_value: int | None = None
        if qop is None:
            if not self.allow_no_qop:
                return _fail("qop required")
            # RFC 2617 sec. 3.2.2: no nc/cnonce without qop (except the cnonce -sess needs).
            if params.nc is not None or (params.cnonce is not None and not algorithm.endswith("-sess")):
                return _fail("nc/cnonce without qop")
        else:
            qop = qop.lower()
            if qop not in self.qop:
                return _fail(f"qop {qop!r} not offered")
            nc = params.nc
            if nc is None or params.cnonce is None or not _is_nc(nc):
                return _fail("qop needs nc (8 hex digits) and cnonce")
            nc_value = int(nc, 16)
        if algorithm.endswith("-sess") and params.cnonce is None:
            return _fail("-sess needs cnonce")

        base = _base_algorithm(algorithm)
        hash_name = _ALGORITHM_TABLE[algorithm][0]
        stored = users_ha1_lookup(username, realm, base)
        known = stored is not None
        ha1 = self._stand_in_ha1(realm, base)
        if stored is not None:
            stored = stored.lower()
            if len(stored) == _HEX_LEN[hash_name]:
                ha1 = stored
            else:
                known = False  # a broken store entry authenticates nobody
        expected = compute_response(
            ha1,
            method,
            uri,
            nonce,
            algorithm=algorithm,
            qop=qop,
            nc=params.nc,
            cnonce=params.cnonce,
            body=body,
        )
        matches = _compare_digest(expected.encode("ascii"), _utf8(response.lower()))
        if not known:
            return _fail(
                "unknown user (or no HA1 for this algorithm/realm)" if stored is None else "bad stored HA1"
            )
        if not matches:
            return _fail("wrong response")

        # The client knows the password: from here on, problems with the nonce are STALE.
        age = now - issued
        if age > self.nonce_ttl or age < -_FUTURE_SLACK:
            return AuthResult(
                kind=AuthKind.STALE, username=username, algorithm=algorithm, reason="nonce expired"
            )
        use = self.nonces.use(nonce, issued=issued, expires=issued + self.nonce_ttl, nc=nc_value, now=now)
        if use is NonceUse.REPLAY:
            return _fail("replayed nonce count")
        if use is NonceUse.EVICTED:
            return AuthResult(
                kind=AuthKind.STALE, username=username, algorithm=algorithm, reason="nonce evicted from table"
            )
        return AuthResult(kind=AuthKind.OK, username=username, algorithm=algorithm, reason="ok")
