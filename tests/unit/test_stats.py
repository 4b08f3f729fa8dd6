"""The core's counters: responses by class, requests by method (bounded), drops by short reason."""

from __future__ import annotations

from leansip.server.stats import Stats


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
    s.dropped("bad Via header here")
    s.dropped("bad Via header there")
    assert s.drops == {"bad Via header": 2}
