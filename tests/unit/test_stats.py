"""The core's counters: responses by class, requests by method (bounded), drops by short reason."""

from __future__ import annotations

from leansip.server.stats import MAX_LABEL, Stats, drop_label


def test_counters_by_class_method_and_reason() -> None:
    s = Stats()
    for status in (100, 180, 200, 200, 302, 401, 503, 603, 999):
        s.response(status)
    assert s.responses == {"1xx": 2, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 1, "6xx": 1, "9xx": 1}
    for method in ("REGISTER", "REGISTER", "INVITE"):
        s.request(method)
    assert s.requests == {"REGISTER": 2, "INVITE": 1}
    for i in range(70):  # unknown methods: at most 64 labels, the rest under "other"
        s.request(f"X{i}")
    assert len(s.requests) == 65 and s.requests["other"] == 8
    s.dropped("bad Via host '1.2.3.999'")
    s.dropped('bad Via host "x"')
    s.dropped("ACK for our reply")
    s.dropped("URI with headers or spaces must be in <>: 'sip:a b'")
    assert s.drops == {"bad Via host": 2, "ACK for our reply": 1, "URI with headers or spaces must be in <>": 1}


def test_drop_labels_are_whole_reasons_without_the_peers_text() -> None:
    """Found in /api/stats of a stateless proxy: ``"drops": {"ACK for our": 1}`` (the first three words)."""
    assert drop_label("ACK for our reply") == "ACK for our reply"
    assert drop_label("response Via not ours") == "response Via not ours"
    assert drop_label("bad value for maddr parameter 'x;y'") == "bad value for maddr parameter"
    assert drop_label("'" + "x" * 200) == "unnamed"
    assert len(drop_label("y" * 200)) == MAX_LABEL


def test_drop_labels_stay_bounded_whatever_the_peer_sends() -> None:
    s = Stats()
    for i in range(100):
        s.dropped(f"SIP version {i} not supported")  # the one reason that carries peer text unquoted
    assert len(s.drops) == 65 and s.drops["other"] == 36
