"""SDP parse/serialize (RFC 4566) and offer/answer (RFC 3264, RFC 4568 crypto)."""

import random

import pytest

from leansip.media.srtp import CryptoAttribute, SrtpContext, generate_crypto
from leansip.sip.errors import SipParseError
from leansip.ua.sdp import (
    LocalSession,
    MediaConfig,
    NegotiatedMedia,
    Origin,
    SdpError,
    SdpNegotiationError,
    answer_offer,
    parse_sdp,
    process_answer,
    reverse_direction,
)


def crlf(text: str) -> str:
    return "\r\n".join(line.strip() for line in text.strip().splitlines()) + "\r\n"


# RFC 4566 section 5 example.
RFC4566_EXAMPLE = crlf("""
    v=0
    o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
    s=SDP Seminar
    i=A Seminar on the session description protocol
    u=http://www.example.com/seminars/sdp.pdf
    e=j.doe@example.com (Jane Doe)
    c=IN IP4 224.2.17.12/127
    t=2873397496 2873404696
    a=recvonly
    m=audio 49170 RTP/AVP 0
    m=video 51372 RTP/AVP 99
    a=rtpmap:99 h263-1998/90000
""")

# RFC 3264 section 10.1 (audio + two video streams; Bob rejects the first video).
RFC3264_10_1_OFFER = crlf("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.anywhere.com
    s=
    c=IN IP4 host.anywhere.com
    t=0 0
    m=audio 49170 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
    m=video 51372 RTP/AVP 31
    a=rtpmap:31 H261/90000
    m=video 53000 RTP/AVP 32
    a=rtpmap:32 MPV/90000
""")
RFC3264_10_1_ANSWER = crlf("""
    v=0
    o=bob 2890844730 2890844730 IN IP4 host.example.com
    s=
    c=IN IP4 host.example.com
    t=0 0
    m=audio 49920 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
    m=video 0 RTP/AVP 31
    m=video 53000 RTP/AVP 32
    a=rtpmap:32 MPV/90000
""")
# RFC 3264 section 10.2 (several codecs, one including a dynamic type).
RFC3264_10_2_OFFER = crlf("""
    v=0
    o=alice 2890844526 2890844526 IN IP4 host.anywhere.com
    s=
    c=IN IP4 host.anywhere.com
    t=0 0
    m=audio 49170 RTP/AVP 0 8 97
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    a=rtpmap:97 iLBC/8000
    m=video 51372 RTP/AVP 31 32
    a=rtpmap:31 H261/90000
    a=rtpmap:32 MPV/90000
""")
RFC3264_10_2_ANSWER = crlf("""
    v=0
    o=bob 2890844730 2890844730 IN IP4 host.example.com
    s=
    c=IN IP4 host.example.com
    t=0 0
    m=audio 49172 RTP/AVP 0 8
    a=rtpmap:0 PCMU/8000
    a=rtpmap:8 PCMA/8000
    m=video 0 RTP/AVP 31
    a=rtpmap:31 H261/90000
""")

ALL_EXAMPLES = [RFC4566_EXAMPLE, RFC3264_10_1_OFFER, RFC3264_10_1_ANSWER, RFC3264_10_2_OFFER, RFC3264_10_2_ANSWER]

ME = MediaConfig(address="192.0.2.10", port=40000)
ORIGIN = Origin(username="me", session_id="1", session_version=1, address="192.0.2.10")


@pytest.mark.parametrize("text", ALL_EXAMPLES)
def test_round_trip(text: str) -> None:
    assert parse_sdp(text).serialize() == text
    assert parse_sdp(text.encode()).serialize() == text


def test_rfc4566_example_fields() -> None:
    sd = parse_sdp(RFC4566_EXAMPLE)
    assert sd.origin.username == "jdoe" and sd.origin.session_version == 2890842807
    assert sd.origin.address == "10.47.16.5"
    assert sd.session_name == "SDP Seminar"
    assert sd.connection is not None and sd.connection.host == "224.2.17.12"
    assert sd.connection.address == "224.2.17.12/127"
    assert sd.times == [("2873397496 2873404696", [])]
    assert sd.direction == "recvonly"
    audio, video = sd.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 49170, "RTP/AVP", ["0"])
    assert audio.rtpmaps[0].encoding == "PCMU"  # static type, no rtpmap line
    assert sd.media_direction(audio) == "recvonly"  # inherited from session level
    assert video.rtpmaps[99].encoding == "h263-1998" and video.rtpmaps[99].clock_rate == 90000


def test_lf_only_is_accepted() -> None:
    assert parse_sdp(RFC4566_EXAMPLE.replace("\r\n", "\n")).serialize() == RFC4566_EXAMPLE


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SDP must start with v=0"),
        ("v=1\r\n", "SDP must start with v=0"),
        ("v=0\r\ns=x\r\nt=0 0\r\n", "SDP needs o= and s= lines"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\n", "SDP needs a t= line"),
        ("v=0\r\no=a 1 IN IP4 h\r\ns=x\r\nt=0 0\r\n", "bad o= line 'a 1 IN IP4 h'"),
        ("v=0\r\no=a 1 x IN IP4 h\r\ns=x\r\nt=0 0\r\n", "bad session version in o= line 'a 1 x IN IP4 h'"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nm=audio\r\n", "bad m= line 'audio'"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n", "bad port in m= line 'audio x RTP/AVP 0'"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\nc=IN IP4 h\r\n",
         "port out of range in m= line 'audio 70000 RTP/AVP 0'"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
         "no c= line for an active media stream"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nx=1\r\n", "unknown SDP line type 'x'"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nt=0 0\r\n",
         "SDP line type 't' not allowed in a media section"),
        ("v=0\r\no=a 1 1 IN IP4 h\r\ns=x\r\nc=IN IP4\r\nt=0 0\r\n", "bad c= line 'IN IP4'"),
        ("v=0\r\nbogus\r\n", "bad SDP line 'bogus'"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    assert str(info.value) == message and info.value.status == 400
    assert isinstance(info.value, SipParseError)


def test_offer_contents() -> None:
    ls = LocalSession(address="192.0.2.10", session_id=555)
    offer = ls.offer(ME)
    text = offer.serialize()
    assert "m=audio 40000 RTP/AVP 0 8 101\r\n" in text
    for line in ("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
                 "a=fmtp:101 0-16", "a=ptime:20", "a=sendrecv", "c=IN IP4 192.0.2.10",
                 "o=leansip 555 555 IN IP4 192.0.2.10"):
        assert line + "\r\n" in text
    assert "crypto" not in text
    assert parse_sdp(text).serialize() == text


@pytest.mark.parametrize(("policy", "proto"), [("optional", "RTP/AVP"), ("mandatory", "RTP/SAVP")])
def test_offer_with_crypto(policy: str, proto: str) -> None:
    cfg = MediaConfig(address="192.0.2.10", port=40000, srtp=policy)  # type: ignore[arg-type]
    offer = parse_sdp(LocalSession(address="192.0.2.10").offer(cfg).serialize())
    m = offer.media[0]
    assert m.proto == proto
    assert [(c.tag, c.suite) for c in m.crypto] == [(1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_32")]


def test_version_increments_on_reoffer_and_keys_are_kept() -> None:
    ls = LocalSession(address="192.0.2.10", session_id=100)
    cfg = MediaConfig(address="192.0.2.10", port=40000, srtp="mandatory")
    first = ls.offer(cfg)
    hold = ls.offer(MediaConfig(address="192.0.2.10", port=40000, srtp="mandatory", direction="sendonly"))
    refresh = ls.offer(cfg, changed=False)
    assert [first.origin.session_version, hold.origin.session_version, refresh.origin.session_version] == [100, 101, 101]
    assert first.origin.session_id == hold.origin.session_id == "100"
    assert hold.media[0].direction == "sendonly"
    assert hold.media[0].crypto == first.media[0].crypto  # no re-keying on hold
    rekeyed = ls.offer(cfg, rekey=True)
    assert rekeyed.origin.session_version == 102 and rekeyed.media[0].crypto != first.media[0].crypto


def test_rfc3264_10_1_answer() -> None:
    offer = parse_sdp(RFC3264_10_1_OFFER)
    answer, media = answer_offer(offer, ME, ORIGIN)
    assert [m.media for m in answer.media] == ["audio", "video", "video"]  # same m= count
    assert answer.media[0].port == 40000 and answer.media[0].formats == ["0"]
    assert [m.port for m in answer.media[1:]] == [0, 0]  # we do no video
    assert media.codec == "PCMU" and media.payload_type == 0
    assert media.remote_address == "host.anywhere.com" and media.remote_port == 49170
    assert media.remote_rtcp_port == 49171 and media.direction == "sendrecv" and not media.secure
    # and the answer itself is valid SDP that parses back
    assert parse_sdp(answer.serialize()).serialize() == answer.serialize()


def test_rfc3264_10_2_first_common_codec_and_caller_side() -> None:
    offer = parse_sdp(RFC3264_10_2_OFFER)
    answer, media = answer_offer(offer, MediaConfig(address="192.0.2.10", port=40000, codecs=("PCMA",)), ORIGIN)
    assert media.codec == "PCMA" and media.payload_type == 8
    assert answer.media[0].formats == ["8"] and answer.media[1].port == 0
    assert media.dtmf_payload_type is None  # not offered
    # The offerer's view of the RFC's own answer: PCMU first in the answer wins.
    caller = process_answer(offer, parse_sdp(RFC3264_10_2_ANSWER), ME)
    assert caller.codec == "PCMU" and caller.remote_address == "host.example.com" and caller.remote_port == 49172


def test_dynamic_payload_types_matched_by_name() -> None:
    offer = parse_sdp(crlf("""
        v=0
        o=x 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 5004 RTP/AVP 96 120 8
        a=rtpmap:96 opus/48000/2
        a=rtpmap:120 telephone-event/8000
        a=fmtp:120 0-15
        a=ptime:30
    """))
    answer, media = answer_offer(offer, ME, ORIGIN)
    assert media.codec == "PCMA" and media.dtmf_payload_type == 120 and media.ptime == 30
    text = answer.serialize()
    assert "m=audio 40000 RTP/AVP 8 120\r\n" in text and "a=fmtp:120 0-15\r\n" in text


@pytest.mark.parametrize(
    ("offered", "mine", "answered", "ours"),
    [
        ("sendrecv", "sendrecv", "sendrecv", "sendrecv"),
        ("sendonly", "sendrecv", "recvonly", "recvonly"),  # peer holds us
        ("recvonly", "sendrecv", "sendonly", "sendonly"),
        ("inactive", "sendrecv", "inactive", "inactive"),
        ("sendrecv", "sendonly", "sendonly", "sendonly"),  # we hold the peer in our answer
        ("sendonly", "sendonly", "inactive", "inactive"),
    ],
)
def test_direction_mirroring(offered: str, mine: str, answered: str, ours: str) -> None:
    offer = parse_sdp(RFC3264_10_1_OFFER.replace("m=audio 49170 RTP/AVP 0\r\n",
                                                 f"m=audio 49170 RTP/AVP 0\r\na={offered}\r\n"))
    cfg = MediaConfig(address="192.0.2.10", port=40000, direction=mine)  # type: ignore[arg-type]
    answer, media = answer_offer(offer, cfg, ORIGIN)
    assert answer.media[0].direction == answered
    assert media.direction == ours
    assert media.remote_hold == (offered in ("sendonly", "inactive"))
    assert reverse_direction(reverse_direction(offered)) == offered


def test_session_level_direction_and_old_style_hold() -> None:
    offer = parse_sdp(RFC3264_10_1_OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n"))
    _, media = answer_offer(offer, ME, ORIGIN)
    assert media.direction == "recvonly"
    hold = parse_sdp(RFC3264_10_1_OFFER.replace("c=IN IP4 host.anywhere.com", "c=IN IP4 0.0.0.0"))
    answer, media = answer_offer(hold, ME, ORIGIN)
    assert media.remote_hold and not media.sending and media.receiving
    assert answer.media[0].direction == "recvonly"


def test_no_common_codec_is_488() -> None:
    offer = parse_sdp(RFC3264_10_2_OFFER.replace("m=audio 49170 RTP/AVP 0 8 97", "m=audio 49170 RTP/AVP 97"))
    with pytest.raises(SdpNegotiationError) as info:
        answer_offer(offer, ME, ORIGIN)
    assert info.value.status == 488 and "no common codec" in str(info.value)
    video_only = parse_sdp(crlf("""
        v=0
        o=x 1 1 IN IP4 h
        s=-
        c=IN IP4 h
        t=0 0
        m=video 5000 RTP/AVP 31
    """))
    with pytest.raises(SdpNegotiationError):
        answer_offer(video_only, ME, ORIGIN)


def _offer_with_crypto(proto: str, lines: list[str]) -> str:
    extra = "".join(f"a=crypto:{ln}\r\n" for ln in lines)
    return RFC3264_10_1_OFFER.replace("m=audio 49170 RTP/AVP 0\r\n", f"m=audio 49170 {proto} 0\r\n{extra}")


KEY = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"


@pytest.mark.parametrize(
    ("proto", "lines", "policy", "outcome"),
    [
        ("RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}"], "mandatory", (1, "AES_CM_128_HMAC_SHA1_80")),
        ("RTP/SAVP", [f"1 F8_128_HMAC_SHA1_80 {KEY}", f"2 AES_CM_128_HMAC_SHA1_32 {KEY}"], "optional",
         (2, "AES_CM_128_HMAC_SHA1_32")),
        ("RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}"], "off", 488),
        ("RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}|2^20|1:4"], "mandatory", 488),  # MKI unsupported
        ("RTP/SAVP", [], "optional", 488),
        ("RTP/AVP", [], "mandatory", 488),
        ("RTP/AVP", [], "optional", None),
        ("RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}"], "optional", (1, "AES_CM_128_HMAC_SHA1_80")),
        ("RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}"], "off", None),  # best effort declined
    ],
)
def test_srtp_policy(proto: str, lines: list[str], policy: str, outcome: object) -> None:
    offer = parse_sdp(_offer_with_crypto(proto, lines))
    cfg = MediaConfig(address="192.0.2.10", port=40000, srtp=policy)  # type: ignore[arg-type]
    if outcome == 488:
        with pytest.raises(SdpNegotiationError) as info:
            answer_offer(offer, cfg, ORIGIN)
        assert info.value.status == 488
        return
    answer, media = answer_offer(offer, cfg, ORIGIN)
    m = parse_sdp(answer.serialize()).media[0]
    assert m.proto == proto
    if outcome is None:
        assert not media.secure and m.crypto == []
    else:
        assert media.secure and [(c.tag, c.suite) for c in m.crypto] == [outcome]
        assert media.remote_crypto is not None and media.remote_crypto.key == CryptoAttribute.parse(
            lines[-1] if outcome[0] == 2 else lines[0]).key
        assert media.local_crypto is not None and media.local_crypto.key != media.remote_crypto.key


def _caller_callee(cfg_a: MediaConfig, cfg_b: MediaConfig) -> tuple[NegotiatedMedia, NegotiatedMedia]:
    alice, bob = LocalSession(address=cfg_a.address, rng=random.Random(1)), LocalSession(address=cfg_b.address)
    offer = alice.offer(cfg_a)
    answer, bob_media = bob.answer(parse_sdp(offer.serialize()), cfg_b)
    alice_media = process_answer(offer, parse_sdp(answer.serialize()), cfg_a)
    return alice_media, bob_media


def test_full_exchange_with_srtp_gives_working_contexts() -> None:
    a_cfg = MediaConfig(address="192.0.2.1", port=4000, srtp="mandatory")
    b_cfg = MediaConfig(address="192.0.2.2", port=5000, srtp="optional", codecs=("PCMA", "PCMU"))
    a, b = _caller_callee(a_cfg, b_cfg)
    assert a.codec == b.codec == "PCMU"  # first in the offer's order that bob supports
    assert a.dtmf_payload_type == b.dtmf_payload_type == 101
    assert (a.remote_address, a.remote_port, b.remote_address, b.remote_port) == ("192.0.2.2", 5000, "192.0.2.1", 4000)
    assert a.secure and b.secure
    assert a.local_crypto == b.remote_crypto and a.remote_crypto == b.local_crypto
    assert a.local_crypto is not None and b.local_crypto is not None
    assert a.remote_crypto is not None and b.remote_crypto is not None
    ctx_a = SrtpContext(a.local_crypto, a.remote_crypto)
    ctx_b = SrtpContext(b.local_crypto, b.remote_crypto)
    rtp = bytes.fromhex("80000001000000a000001234") + b"\xff" * 160
    assert ctx_b.unprotect(ctx_a.protect(rtp)) == rtp


def test_hold_via_reoffer_and_answer() -> None:
    a_hold = MediaConfig(address="192.0.2.1", port=4000, direction="sendonly")
    b_cfg = MediaConfig(address="192.0.2.2", port=5000)
    a, b = _caller_callee(a_hold, b_cfg)
    assert a.direction == "sendonly" and b.direction == "recvonly" and b.remote_hold


def test_answer_version_and_488_leaves_version() -> None:
    bob = LocalSession(address="192.0.2.2", session_id=7)
    good = parse_sdp(RFC3264_10_1_OFFER)
    ans1, _ = bob.answer(good, ME)
    bad = parse_sdp(RFC3264_10_1_OFFER.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000", "RTP/AVP 97\r\na=rtpmap:97 x/8000"))
    with pytest.raises(SdpNegotiationError):
        bob.answer(bad, ME)
    ans2, _ = bob.answer(good, ME)
    assert (ans1.origin.session_version, ans2.origin.session_version) == (7, 8)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace("m=audio 5000", "m=audio 0"), "audio stream rejected by the answer"),
        (lambda s: s.replace("RTP/SAVP 0", "RTP/SAVP 18").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000"),
         "answer has no codec from our offer"),
        (lambda s: s.replace("RTP/SAVP", "RTP/AVP"), "answer changed transport RTP/SAVP -> RTP/AVP"),
        (lambda s: "".join(ln + "\r\n" for ln in s.split("\r\n") if ln and not ln.startswith("a=crypto")),
         "SRTP required but the answer has no crypto"),
        (lambda s: s.replace("a=crypto:1 AES_CM_128_HMAC_SHA1_80", "a=crypto:9 AES_CM_128_HMAC_SHA1_80"),
         "answer crypto does not match any offered tag/suite"),
        (lambda s: s + "m=video 0 RTP/AVP 31\r\n", "answer has a different number of m= lines"),
    ],
)
def test_bad_answers(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    cfg = MediaConfig(address="192.0.2.1", port=4000, srtp="mandatory", suites=("AES_CM_128_HMAC_SHA1_80",))
    offer = LocalSession(address="192.0.2.1").offer(cfg)
    answer, _ = answer_offer(parse_sdp(offer.serialize()),
                             MediaConfig(address="192.0.2.2", port=5000, srtp="mandatory"), ORIGIN)
    with pytest.raises(SdpNegotiationError) as info:
        process_answer(offer, parse_sdp(mutate(answer.serialize())), cfg)
    assert str(info.value) == message and info.value.status == 488


def test_answer_direction_seen_from_offerer() -> None:
    offer = LocalSession(address="192.0.2.1").offer(ME)
    ans = parse_sdp(RFC3264_10_1_ANSWER.replace("m=video 0 RTP/AVP 31\r\nm=video 53000 RTP/AVP 32\r\n"
                                                "a=rtpmap:32 MPV/90000\r\n", "a=recvonly\r\n"))
    media = process_answer(offer, ans, ME)
    assert media.direction == "sendonly" and media.remote_hold is False and media.receiving is False


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MediaConfig(address="h", port=1, codecs=("G729",))
    with pytest.raises(ValueError):
        MediaConfig(address="h", port=1, srtp="always")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MediaConfig(address="h", port=1, suites=("F8_128_HMAC_SHA1_80",))
    assert MediaConfig(address="2001:db8::1", port=1).addrtype == "IP6"
    assert generate_crypto().supported
