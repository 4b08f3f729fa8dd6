"""SRTP with SDES keying (RFC 4568 ``a=crypto``), on top of libsrtp via pylibsrtp.

:class:`CryptoAttribute` parses and formats the value of an ``a=crypto:`` line;
:func:`generate_crypto` makes our own (random 16-byte master key + 14-byte salt,
base64 in ``inline:``). Each direction has its own key: we protect with the key we
offered/answered and unprotect with the peer's, so :class:`SrtpContext` takes both.

Supported suites: AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (RFC 4568 6.2).
Key lifetimes are accepted and left to libsrtp's default (2^48 packets, far above any
call); MKI and multiple keys per line are not supported (:meth:`CryptoAttribute.supported`
says so, and the SDP layer then skips the line).

Errors: :class:`CryptoParseError` for a malformed line, :class:`SrtpError` when a
packet fails authentication or replay checks (drop the packet and count it).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

import pylibsrtp

__all__ = [
    "SUITES",
    "CryptoParseError",
    "SrtpError",
    "CryptoAttribute",
    "generate_crypto",
    "SrtpContext",
    "KEY_SALT_LENGTH",
]

KEY_SALT_LENGTH = 30  # 128-bit master key + 112-bit master salt

# Suite name -> libsrtp profile. For the _32 suite libsrtp still uses an 80-bit SRTCP
# tag, as RFC 4568 6.2 requires.
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}

_LINE = re.compile(r"^(\d{1,9})\s+([A-Za-z0-9_]+)\s+(\S+)((?:\s+\S+)*)\s*$")


class CryptoParseError(ValueError):
    """A malformed ``a=crypto`` attribute value (RFC 4568 9.1 grammar)."""


class SrtpError(ValueError):
    """A packet failed SRTP/SRTCP unprotect (authentication, replay) or protect."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoAttribute:
    """One ``a=crypto`` line: ``<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len] [params]``."""

    tag: int
    suite: str
    key: bytes
    lifetime: str | None = None
    mki: str | None = None
    session_params: tuple[str, ...] = ()
    extra_key_params: int = 0  # further ";inline:" keys, which we do not support

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the text after ``a=crypto:``; raise :class:`CryptoParseError` if malformed."""
        m = _LINE.match(value.strip())
        if not m:
            raise CryptoParseError(f"bad crypto attribute {value!r}")
        tag, suite, key_params, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        params = key_params.split(";")
        first = params[0]
        if not first.startswith("inline:"):
            raise CryptoParseError("crypto key method must be inline")
        fields = first[len("inline:"):].split("|")
        try:
            key = base64.b64decode(fields[0], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CryptoParseError("crypto key is not base64") from exc
        lifetime = mki = None
        for f in fields[1:]:
            if ":" in f:
                mki = f
            elif lifetime is None:
                lifetime = f
            else:
                raise CryptoParseError("crypto key has two lifetimes")
        if suite in SUITES and len(key) != KEY_SALT_LENGTH:
            raise CryptoParseError(f"{suite} needs a {KEY_SALT_LENGTH}-byte key||salt, got {len(key)}")
        return cls(tag=tag, suite=suite, key=key, lifetime=lifetime, mki=mki,
                   session_params=tuple(rest.split()), extra_key_params=len(params) - 1)

    def __str__(self) -> str:
        """The attribute value, ready for ``a=crypto:`` + this."""
        inline = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime:
            inline += "|" + self.lifetime
        if self.mki:
            inline += "|" + self.mki
        return " ".join([str(self.tag), self.suite, inline, *self.session_params])

    @property
    def supported(self) -> bool:
        """True when we can use this line: a known suite, a single key, no MKI, no session params."""
        return (self.suite in SUITES and self.mki is None and not self.extra_key_params
                and not self.session_params)


def generate_crypto(tag: int = 1, suite: str = "AES_CM_128_HMAC_SHA1_80") -> CryptoAttribute:
    """Our own crypto line with a fresh random master key and salt (RFC 4568 6.1)."""
    if suite not in SUITES:
        raise ValueError(f"unsupported suite {suite}")
    return CryptoAttribute(tag=tag, suite=suite, key=os.urandom(KEY_SALT_LENGTH))


class SrtpContext:
    """Protect what we send with ``local`` and unprotect what we receive with ``remote``.

    Both must use the same suite (the one the offer/answer agreed on). One context per
    media stream; libsrtp keeps rollover counters and the replay window inside.
    """

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        if local.suite != remote.suite:
            raise ValueError("local and remote crypto must use the same suite")
        if not (local.supported and remote.supported):
            raise ValueError("crypto attribute not supported (suite, MKI or session parameters)")
        self.suite = local.suite
        profile = SUITES[self.suite]
        self._tx = pylibsrtp.Session(pylibsrtp.Policy(
            key=local.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        self._rx = pylibsrtp.Session(pylibsrtp.Policy(
            key=remote.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile))

    def protect(self, rtp: bytes) -> bytes:
        """RTP -> SRTP (encrypt and append the auth tag)."""
        try:
            return bytes(self._tx.protect(rtp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTP protect failed: {exc}") from exc

    def unprotect(self, srtp: bytes) -> bytes:
        """SRTP -> RTP; raises :class:`SrtpError` on a bad tag or a replayed packet."""
        try:
            return bytes(self._rx.unprotect(srtp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTP unprotect failed: {exc}") from exc

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        """RTCP -> SRTCP."""
        try:
            return bytes(self._tx.protect_rtcp(rtcp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTCP protect failed: {exc}") from exc

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        """SRTCP -> RTCP; raises :class:`SrtpError` on failure."""
        try:
            return bytes(self._rx.unprotect_rtcp(srtcp))
        except pylibsrtp.Error as exc:
            raise SrtpError(f"SRTCP unprotect failed: {exc}") from exc
