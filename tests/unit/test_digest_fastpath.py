"""The regex fast path of parse_digest must agree with the character-level parser on every input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leansip.sip.digest import DigestError, _parse_digest, parse_digest

TOKEN = st.text(alphabet="abcXYZ019-._~!%*+`'|^#$&", min_size=1, max_size=8)
QUOTED = st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FF), max_size=10).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
WS = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def digest_values(draw: st.DrawFn) -> str:
    pairs = []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(st.sampled_from(["username", "realm", "nonce", "uri", "response", "qop", "nc"]) | TOKEN)
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
