"""G.711 against the values of the standard's tables, plus the fast frame paths."""

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leansip.media import g711


def _ulaw_expected(code: int) -> int:
    # G.711 Table 2a: code bits are inverted; segment s, step q decodes to
    # ((2q + 33) << s) - 33 on the 14-bit scale (0..8031), and we work on 16 bits (x4).
    inv = ~code & 0xFF
    s, q = (inv >> 4) & 7, inv & 0x0F
    mag = (((2 * q + 33) << s) - 33) * 4
    return -mag if inv & 0x80 else mag


def _alaw_expected(code: int) -> int:
    # G.711 Table 1a: even bits inverted (0x55); segment 0 decodes to 2q+1, segment s>0
    # to (2q+33) << (s-1), on the 12-bit+sign scale, x8 for 16 bits. Sign bit 1 = positive.
    a = code ^ 0x55
    s, q = (a >> 4) & 7, a & 0x0F
    mag = (2 * q + 1) * 8 if s == 0 else ((2 * q + 33) << (s - 1)) * 8
    return mag if a & 0x80 else -mag


@pytest.mark.parametrize("code", range(256))
def test_ulaw_decode_matches_table(code: int) -> None:
    assert g711.ulaw_to_linear(code) == _ulaw_expected(code)


@pytest.mark.parametrize("code", range(256))
def test_alaw_decode_matches_table(code: int) -> None:
    assert g711.alaw_to_linear(code) == _alaw_expected(code)


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (0x00, -32124), (0x80, 32124),  # µ-law extremes
        (0xFF, 0), (0x7F, 0),  # µ-law positive and negative zero
        (0xEF, 132),  # first step of segment 1: ((2*0+33) << 1) - 33 = 33, x4
        (0xF0, 120), (0x70, -120),  # top of segment 0
    ],
)
def test_ulaw_known_codes(code: int, value: int) -> None:
    assert g711.ulaw_to_linear(code) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xC5, 264), (0xDA, 248)],
)
def test_alaw_known_codes(code: int, value: int) -> None:
    assert g711.alaw_to_linear(code) == value


def test_zero_encodes_to_standard_idle_codes() -> None:
    assert g711.linear_to_ulaw(0) == 0xFF
    assert g711.linear_to_alaw(0) == 0xD5
    assert g711.PCMU.silence == 0xFF and g711.PCMA.silence == 0xD5


def test_ulaw_round_trip_all_codes_except_negative_zero() -> None:
    bad = [c for c in range(256) if g711.linear_to_ulaw(g711.ulaw_to_linear(c)) != c]
    assert bad == [0x7F]  # -0 decodes to 0, which encodes as +0 (0xFF)


def test_alaw_round_trip_all_codes() -> None:
    assert all(g711.linear_to_alaw(g711.alaw_to_linear(c)) == c for c in range(256))


def test_extremes_saturate() -> None:
    assert g711.linear_to_ulaw(32767) == 0x80
    assert g711.linear_to_ulaw(-32768) == 0x00
    assert g711.linear_to_alaw(32767) == 0xAA
    assert g711.linear_to_alaw(-32768) == 0x2A


def test_out_of_range_rejected() -> None:
    with pytest.raises(ValueError):
        g711.linear_to_ulaw(40000)
    with pytest.raises(ValueError):
        g711.alaw_to_linear(256)


@given(st.integers(-32768, 32767))
def test_quantisation_error_is_bounded(x: int) -> None:
    # Error never exceeds half the largest step (µ-law top step 1024, A-law 1024) and
    # is relatively small for loud samples.
    for enc, dec in ((g711.linear_to_ulaw, g711.ulaw_to_linear), (g711.linear_to_alaw, g711.alaw_to_linear)):
        y = dec(enc(x))
        assert abs(y - x) <= 1024
        if abs(x) > 1000:
            assert abs(y - x) <= abs(x) * 0.07


@given(st.integers(-32768, 32766))
def test_encoding_is_monotonic(x: int) -> None:
    for dec, enc in ((g711.ulaw_to_linear, g711.linear_to_ulaw), (g711.alaw_to_linear, g711.linear_to_alaw)):
        assert dec(enc(x)) <= dec(enc(x + 1))


def test_frame_paths_match_scalar_reference() -> None:
    samples = array("h", [(i * 409) % 65536 - 32768 for i in range(160)])
    assert g711.ulaw_encode(samples) == bytes(g711.linear_to_ulaw(s) for s in samples)
    assert g711.alaw_encode(samples) == bytes(g711.linear_to_alaw(s) for s in samples)
    assert g711.ulaw_encode(samples.tobytes()) == g711.ulaw_encode(samples)
    payload = bytes(range(256))
    assert list(g711.ulaw_decode(payload)) == [g711.ulaw_to_linear(c) for c in payload]
    assert list(g711.alaw_decode(payload)) == [g711.alaw_to_linear(c) for c in payload]
    assert g711.ulaw_decode(payload).typecode == "h"


def test_frame_rejects_odd_bytes_and_wrong_array() -> None:
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(TypeError):
        g711.alaw_encode(array("i", [1, 2]))


def test_codec_lookup() -> None:
    assert g711.codec_for_payload_type(0) is g711.PCMU
    assert g711.codec_for_payload_type(8) is g711.PCMA
    assert g711.codec_for_payload_type(18) is None
    assert g711.codec_for_name("pcma") is g711.PCMA
    assert g711.silence_payload(g711.PCMU, 4) == b"\xff" * 4
