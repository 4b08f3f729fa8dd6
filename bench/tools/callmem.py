#!/usr/bin/env python3
"""Memory per tracked call: what the stateful proxy's call tracker holds for each answered call (issue 22).

    callmem.py [--n 20000]

Feeds a :class:`leansip.server.calls.CallTracker` (compiled, as the server runs it) N answered calls built the
way the proxy sees them (a parsed INVITE with realistic From/To/Call-ID, its 180 and 200), drops the messages, and
counts with tracemalloc the bytes still allocated per call: the Call object, the strings it keeps (Call-ID, tags,
From/To values, Request-URI, the legs' addresses), its dict entry and its deadline-queue entry. Deterministic (no
server, no sockets, no RSS noise). Last line: key=value summary.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leansip._build import describe  # noqa: E402
from leansip.server.calls import CallTracker  # noqa: E402
from leansip.sip.message import Request, Response, parse_message  # noqa: E402


def _messages(i: int) -> tuple[Request, Response, Response]:
    call_id = f"{i:08d}-4f1c2a9e7b3d@192.0.2.10"
    inv = (f"INVITE sip:bob@example.com SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{i:08d}x;rport\r\n"
           "Max-Forwards: 70\r\n"
           f'From: "Alice" <sip:alice{i % 1000}@example.com>;tag={i:08d}a1\r\n'
           "To: <sip:bob@example.com>\r\n"
           f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.10:5062>\r\n"
           "Content-Length: 0\r\n\r\n")
    req = parse_message(inv.encode())
    assert isinstance(req, Request)
    out = []
    for status in (180, 200):
        text = (f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{i:08d}x;rport\r\n"
                f'From: "Alice" <sip:alice{i % 1000}@example.com>;tag={i:08d}a1\r\n'
                f"To: <sip:bob@example.com>;tag={i:08d}b2\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                "Session-Expires: 1800;refresher=uac\r\nContent-Length: 0\r\n\r\n")
        resp = parse_message(text.encode())
        assert isinstance(resp, Response)
        out.append(resp)
    return req, out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    tracker = CallTracker(max_calls=a.n + 100, record=False)
    for i in range(100):  # warm the parse caches and the tracker's own structures outside the count
        inv, ring, ok = _messages(10_000_000 + i)
        call = tracker.start(inv, ("192.0.2.10", 5062), "udp", 1000.0)
        assert call is not None
        tracker.answered(call, ok, ("192.0.2.21", 5062), "udp", 1001.0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(a.n):
        inv, ring, ok = _messages(i)
        call = tracker.start(inv, ("192.0.2.10", 5062), "udp", 1000.0 + i / 1000)
        assert call is not None
        tracker.progress(call, 180, ("192.0.2.21", 5062), "udp", 1000.1 + i / 1000)
        tracker.answered(call, ok, ("192.0.2.21", 5062), "udp", 1001.0 + i / 1000)
    del inv, ring, ok, call
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(tracker) == a.n + 100
    print(f"n={a.n} core={describe().split(' (')[0].replace(' ', '-')} bytes_per_call={(after - before) / a.n:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
