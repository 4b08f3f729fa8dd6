"""Counters of the server core, cheap enough to be always on (plain ints and dicts, no locks: one thread).

The admin view and the Prometheus exporter read these; the core only increments them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

_CLASSES: Final = tuple(f"{k}xx" for k in range(10))


#: longest drop label kept: a reason names what was wrong, the peer's text after it is cut
MAX_LABEL: Final = 60


def drop_label(reason: str) -> str:
    """The label a drop reason is counted under: the reason without the peer's text it quotes (``bad Via host
    '1.2.3.999'`` is counted as ``bad Via host``), so labels name causes, whole, and stay few."""
    cut = len(reason)
    for quote in ("'", '"'):
        at = reason.find(quote)
        if 0 <= at < cut:
            cut = at
    label = reason[:cut].rstrip(" :")[:MAX_LABEL]
    return label or "unnamed"


@dataclass(slots=True)
class Stats:
    requests: dict[str, int] = field(default_factory=dict)
    #: responses by class (index 1 = 1xx ... 9), a list: an increment is an index, where a dict by class name
    #: cost a hashed lookup and a store per response; ``responses`` gives the dict
    by_class: list[int] = field(default_factory=lambda: [0] * 10)
    drops: dict[str, int] = field(default_factory=dict)  # by short reason
    retransmissions: int = 0
    auth_failures: int = 0
    blocked: int = 0
    delayed: int = 0
    expired_bindings: int = 0
    #: bindings removed because the connection they were reachable over closed (RFC 5626 flows)
    lost_bindings: int = 0
    forwarded_requests: int = 0
    forwarded_responses: int = 0
    #: exceptions raised by a route script's handlers (each answered 500 or let the response pass)
    script_errors: int = 0

    def request(self, method: str) -> None:
        requests = self.requests
        if method in requests:
            requests[method] = requests[method] + 1  # compiled: `d[k] += 1` is a generic in-place add
        elif len(requests) < 64 and len(method) <= MAX_LABEL:
            requests[method] = 1  # unknown methods are unbounded in number and length: cap the label set
        else:
            requests["other"] = requests.get("other", 0) + 1

    def response(self, status: int) -> None:
        k = status // 100
        if 0 <= k <= 9:
            self.by_class[k] += 1

    @property
    def responses(self) -> dict[str, int]:
        """Responses by class name ("1xx" .. "6xx"), the classes seen only."""
        return {_CLASSES[k]: n for k, n in enumerate(self.by_class) if n}

    def dropped(self, reason: str) -> None:
        """Count a message dropped without a reply, by :func:`drop_label` of its reason."""
        drops = self.drops
        if reason in drops:  # our own fixed reasons ("ACK for our reply") are their own label
            drops[reason] = drops[reason] + 1
            return
        label = drop_label(reason)
        if label in drops:
            drops[label] = drops[label] + 1
        elif len(drops) < 64:
            drops[label] = 1
        else:
            drops["other"] = drops.get("other", 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "drops": dict(self.drops),
            "retransmissions": self.retransmissions,
            "auth_failures": self.auth_failures,
            "blocked": self.blocked,
            "delayed": self.delayed,
            "expired_bindings": self.expired_bindings,
            "lost_bindings": self.lost_bindings,
            "forwarded_requests": self.forwarded_requests,
            "forwarded_responses": self.forwarded_responses,
            "script_errors": self.script_errors,
        }
