"""The string-operation fast path of parse_digest must agree with the character-level parser on every input."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.digest_hash import DigestError
from leansip.sip.digest_parse import _fast_digest, _parse_digest, parse_digest

TOKEN = st.text(alphabet="abcXYZ019-._~!%*+`'|^#$&", min_size=1, max_size=8)
QUOTED = st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FF) | st.sampled_from(',="'),
                 max_size=10).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
WS = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def digest_values(draw: st.DrawFn) -> str:
    pairs = []
    for _ in range(draw(st.integers(1, 6))):
        # the names the fast path recognises in place, near misses of the same first character and length, others
        name = draw(st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc", "algorithm",
                                     "cnonce", "opaque", "userhash", "Nonce", "nOnce", "ncx", "n", "nc-", "urI",
                                     "responsE", "qoq"]) | TOKEN)
        value = draw(TOKEN | QUOTED)
        pairs.append(f"{draw(WS)}{name}{draw(WS)}={draw(WS)}{value}{draw(WS)}")
    sep = draw(st.sampled_from([",", ", ", ",,"]))
    return draw(WS) + draw(st.sampled_from(["Digest", "digest", "DIGEST"])) + " " + sep.join(pairs)


def _outcome(parse: object, value: str) -> object:
    try:
        return dict(parse(value).params)  # type: ignore[operator]
    except DigestError:
        return "error"


@settings(max_examples=400)
@given(digest_values())
def test_fast_path_agrees_with_the_full_parser(value: str) -> None:
    assert _outcome(parse_digest, value) == _outcome(_parse_digest, value)


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_fast_path_agrees_on_arbitrary_text(tail: str) -> None:
    value = "Digest " + tail
    assert _outcome(parse_digest, value) == _outcome(_parse_digest, value)


@settings(max_examples=300)
@given(digest_values(), st.sampled_from(["", ",", " x", '"', "=", "\\", "\r\n"]), st.integers(0, 200))
def test_fast_path_agrees_after_a_cut_or_an_insert(value: str, insert: str, at: int) -> None:
    value = value[:at] + insert + value[at:]
    assert _outcome(parse_digest, value) == _outcome(_parse_digest, value)


def test_what_clients_send_takes_the_fast_path() -> None:
    """Not vacuous: the usual credentials (a comma inside a quoted value too) are split by the fast path."""
    value = ('Digest username="alice", realm="example.com", nonce="AbC-12_x", uri="sip:example.com;a=b,c", '
             'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001')
    fast = _fast_digest(value)
    assert fast is not None and fast["uri"] == "sip:example.com;a=b,c" and fast["nc"] == "00000001"
    assert dict(parse_digest(value).params) == dict(_parse_digest(value).params) == fast


def test_the_fast_path_gate_sends_escapes_controls_and_non_ascii_to_the_full_parser() -> None:
    """What the gate lets through never holds a backslash, a control character other than HTAB, or a non-ASCII
    character, and the results agree either way."""
    from leansip.sip.digest_parse import _plain

    ordinary = 'Digest username="bob", realm="a.example", nonce="x", uri="sip:a", response="0", qop=auth'
    assert _plain(ordinary) and _plain(ordinary.replace("bob", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"))
    for odd in ("\\", "\r", "\n", "\x00", "\x1f", "\x7f", "\x80", "\xe9", "\u20ac"):
        value = ordinary.replace("bob", f"b{odd}b")
        assert not _plain(value), repr(odd)
        assert _outcome(parse_digest, value) == _outcome(_parse_digest, value)
    tabbed = ordinary.replace(" ", "\t")
    assert _plain(tabbed) and _outcome(parse_digest, tabbed) == _outcome(_parse_digest, tabbed)


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=40))
def test_the_gate_is_the_character_class_it_stands_for(text: str) -> None:
    from leansip.sip.digest_parse import _plain

    assert _plain(text) == all((0x20 <= ord(c) <= 0x7E or c == "\t") and c != "\\" for c in text)


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_base64url_helpers_match_the_base64_module(data: bytes) -> None:
    import base64

    from leansip.sip.digest_auth import _b64, _unb64

    text = _b64(data)
    assert text == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert _unb64(text) == data == base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@settings(max_examples=1000)
@given(st.integers(34, 37).flatmap(lambda size: st.one_of(
    st.binary(min_size=size, max_size=size).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()),
    st.text(alphabet="ABQgwz09-_+/=!. \n", min_size=46, max_size=50))),
    st.integers(0, 49), st.sampled_from("AQgwBRhxEIcosk48+/=-_ !"))
def test_the_canonical_check_is_encoding_again_and_comparing(text: str, at: int, char: str) -> None:
    from leansip.sip.digest_auth import _b64, _canonical_b64, _unb64

    for candidate in (text, text[:at] + char + text[at + 1:]):
        try:
            raw = _unb64(candidate)
        except ValueError:
            continue  # not decodable: refused before the canonical check
        if len(raw) != len(candidate) * 6 // 8:
            continue  # refused by the length check before it (_open_nonce)
        assert _canonical_b64(candidate) == (_b64(raw) == candidate), candidate


def test_a_respelt_nonce_is_refused() -> None:
    from leansip.sip.digest_auth import DigestAuthenticator

    auth = DigestAuthenticator(b"0123456789abcdef-secret", "example.com")
    nonce = auth.make_nonce(1000.0, "MD5")
    assert auth._open_nonce(nonce, "example.com") is not None
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelt = [nonce[:-1] + alphabet[alphabet.index(nonce[-1]) + 1]]
    respelt += [nonce.replace("-", "+").replace("_", "/")] if ("-" in nonce or "_" in nonce) else []
    for other in respelt:
        assert auth._open_nonce(other, "example.com") is None, other


def test_params_are_read_only_and_the_properties_read_them() -> None:
    import pytest

    params = parse_digest('Digest username="u", nonce="n", nc=00000001, qop=auth')
    assert (params.username, params.nonce, params.nc, params.qop, params.realm) == ("u", "n", "00000001", "auth", None)
    with pytest.raises(TypeError):
        params.params["username"] = "mallory"  # type: ignore[index]


def test_the_shape_table_refuses_two_names_of_one_shape() -> None:
    """A name is recognised by its first character and length; one added later must not shadow another."""
    import pytest

    from leansip.sip.digest_parse import _USUAL_PARAMS, _known_param, _params_by_shape

    with pytest.raises(ValueError, match="userhash"):
        _params_by_shape(("username", "userhash"))
    for name in _USUAL_PARAMS:
        text = f"Digest x=1, {name}=v"
        start = text.index(name)
        assert _known_param(text, start, start + len(name)) == name
        assert _known_param(text.replace(name, name.upper()), start, start + len(name)) is None
        assert _known_param(text, start, start + len(name) - 1) is None


def test_the_ha2_cache_gives_the_hash_and_stays_bounded() -> None:
    from leansip.sip.digest_hash import _HA2_CACHE, _HA2_CACHE_SIZE, _h, _ha2

    for i in range(_HA2_CACHE_SIZE + 10):
        a2 = f"REGISTER:sip:host{i}.example"
        assert _ha2("md5", a2) == _h("md5", a2) == _ha2("md5", a2)
        assert len(_HA2_CACHE["md5"]) <= _HA2_CACHE_SIZE
    assert _ha2("sha256", "INVITE:sip:a") == _h("sha256", "INVITE:sip:a")  # one cache per hash
    long_a2 = "REGISTER:sip:" + "x" * 300
    assert _ha2("md5", long_a2) == _h("md5", long_a2) and long_a2 not in _HA2_CACHE["md5"]  # not kept
