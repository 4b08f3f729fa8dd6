"""SDES crypto lines (RFC 4568) and SRTP/SRTCP round trips through libsrtp."""

import base64

import pytest

from leansip.media.rtcp import RtcpReceiverReport, parse_compound, serialize_compound
from leansip.media.rtp import RtpPacket, RtpSender
from leansip.media.srtp import CryptoAttribute, CryptoParseError, SrtpContext, SrtpError, generate_crypto

# RFC 4568 section 4 example line.
RFC4568_LINE = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"


def test_parse_rfc4568_example() -> None:
    c = CryptoAttribute.parse(RFC4568_LINE)
    assert c.tag == 1 and c.suite == "AES_CM_128_HMAC_SHA1_80"
    assert c.key == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR") and len(c.key) == 30
    assert c.lifetime == "2^20" and c.mki == "1:32"
    assert not c.supported  # MKI is not supported by our libsrtp binding
    assert str(c) == RFC4568_LINE


@pytest.mark.parametrize(
    "line",
    [
        "AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "1 AES_CM_128_HMAC_SHA1_80 key:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!notbase64",
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA",  # too short for the suite
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|2^30",
    ],
)
def test_malformed(line: str) -> None:
    with pytest.raises(CryptoParseError):
        CryptoAttribute.parse(line)


def test_unknown_suite_parses_but_is_unsupported() -> None:
    c = CryptoAttribute.parse("2 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm")
    assert c.suite == "F8_128_HMAC_SHA1_80" and not c.supported
    s = CryptoAttribute.parse("3 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR "
                              "UNENCRYPTED_SRTP")
    assert s.session_params == ("UNENCRYPTED_SRTP",) and not s.supported


def test_generate() -> None:
    a, b = generate_crypto(), generate_crypto(2, "AES_CM_128_HMAC_SHA1_32")
    assert len(a.key) == 30 and a.key != b.key and a.supported and b.tag == 2
    assert CryptoAttribute.parse(str(a)) == a
    with pytest.raises(ValueError):
        generate_crypto(1, "NOPE")


def _pair(suite: str) -> tuple[SrtpContext, SrtpContext]:
    alice_key, bob_key = generate_crypto(1, suite), generate_crypto(1, suite)
    # Each side learns the other's key from the SDP text, as over the wire.
    alice = SrtpContext(alice_key, CryptoAttribute.parse(str(bob_key)))
    bob = SrtpContext(bob_key, CryptoAttribute.parse(str(alice_key)))
    return alice, bob


@pytest.mark.parametrize(("suite", "tag_len"), [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)])
def test_rtp_round_trip_and_tamper(suite: str, tag_len: int) -> None:
    alice, bob = _pair(suite)
    sender = RtpSender(0, ssrc=0x1234)
    for i in range(3):
        plain = sender.packet(bytes([i]) * 160).serialize()
        protected = alice.protect(plain)
        assert len(protected) == len(plain) + tag_len
        assert protected[12:172] != plain[12:172]  # payload encrypted, header in clear
        assert protected[:12] == plain[:12]
        assert bob.unprotect(protected) == plain
    # tampering fails authentication
    plain = sender.packet(b"\x55" * 160).serialize()
    protected = bytearray(alice.protect(plain))
    protected[20] ^= 0x01
    with pytest.raises(SrtpError):
        bob.unprotect(bytes(protected))
    # the wrong direction (own key) does not authenticate either
    with pytest.raises(SrtpError):
        alice.unprotect(alice.protect(sender.packet(b"\x00" * 160).serialize()))


def test_replay_rejected() -> None:
    alice, bob = _pair("AES_CM_128_HMAC_SHA1_80")
    p = alice.protect(RtpPacket(payload_type=0, sequence_number=5, timestamp=0, ssrc=9, payload=b"x" * 20).serialize())
    bob.unprotect(p)
    with pytest.raises(SrtpError):
        bob.unprotect(p)


def test_rtcp_round_trip_and_tamper() -> None:
    alice, bob = _pair("AES_CM_128_HMAC_SHA1_32")
    rr = serialize_compound([RtcpReceiverReport(ssrc=0x1234)])
    protected = alice.protect_rtcp(rr)
    assert protected != rr and len(protected) == len(rr) + 4 + 10  # E|index + 80-bit tag even for _32
    assert parse_compound(bob.unprotect_rtcp(protected)) == [RtcpReceiverReport(ssrc=0x1234)]
    bad = bytearray(alice.protect_rtcp(rr))
    bad[-1] ^= 0xFF
    with pytest.raises(SrtpError):
        bob.unprotect_rtcp(bytes(bad))


def test_context_requires_same_supported_suite() -> None:
    with pytest.raises(ValueError):
        SrtpContext(generate_crypto(1, "AES_CM_128_HMAC_SHA1_80"), generate_crypto(1, "AES_CM_128_HMAC_SHA1_32"))
    with pytest.raises(ValueError):
        SrtpContext(CryptoAttribute.parse(RFC4568_LINE), CryptoAttribute.parse(RFC4568_LINE))
