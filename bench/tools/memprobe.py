#!/usr/bin/env python3
"""Hold N live INVITE transactions in a stateful proxy and report its RSS before/while (leansip bench).

    memprobe.py --target 127.0.0.1:PORT --pid SERVER_PID --n 5000 --rate 1000 --port 47110

Registers --callee with a Contact pointing at a UDP socket of ours that never answers (a black hole), then sends N
INVITEs (distinct Call-IDs and branches) through the proxy at --rate/s.  Every INVITE creates a server and a client
transaction in the proxy; with no final response they stay live until Timer B/C (RFC 3261 17.1.1.2, >= 32 s with
the default T1), far longer than this probe runs.  RSS (VmRSS of /proc/PID/status) is read before and 1 s after the
last INVITE.  Last line: key=value summary.  UDP on 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--port", type=int, default=47110)
    ap.add_argument("--callee", default="callee-mem")
    a = ap.parse_args()
    host, port_s = a.target.split(":")
    assert host == "127.0.0.1", "loopback only"
    dst = (host, int(port_s))

    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    uac.bind((host, a.port))
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the callee: receives, never answers
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    hole.bind((host, a.port + 1))

    def drain(until: float) -> int:
        """Read (and drop) what arrives on both sockets until `until`; returns the number of datagrams."""
        got = 0
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return got
            r, _, _ = select.select([uac, hole], [], [], left)
            for s in r:
                s.recv(65535)
                got += 1

    reg = (f"REGISTER sip:{host}:{dst[1]} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{a.port};branch=z9hG4bKmemreg\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:{a.callee}@{host}>;tag=memreg\r\nTo: <sip:{a.callee}@{host}>\r\n"
           f"Call-ID: memprobe-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:{a.callee}@{host}:{a.port + 1}>\r\n"
           "Expires: 3600\r\nContent-Length: 0\r\n\r\n")
    uac.sendto(reg.encode(), dst)
    r, _, _ = select.select([uac], [], [], 3)
    if not r or b" 200 " not in uac.recv(65535).split(b"\r\n", 1)[0]:
        print("fail=callee_registration")
        return 1

    drain(time.monotonic() + 1.0)
    before = rss_kib(a.pid)
    sdp = (f"v=0\r\no=mem 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           "m=audio 9 RTP/AVP 0\r\n")
    t0 = time.monotonic()
    for i in range(a.n):
        slot = t0 + i / a.rate
        while time.monotonic() < slot:
            drain(slot)
        inv = (f"INVITE sip:{a.callee}@{host}:{dst[1]} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {host}:{a.port};branch=z9hG4bKmem{i:08d}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:caller@{host}>;tag=m{i}\r\nTo: <sip:{a.callee}@{host}>\r\n"
               f"Call-ID: memprobe-{i}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{host}:{a.port}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
        uac.sendto(inv.encode(), dst)
    sent_s = time.monotonic() - t0
    drain(time.monotonic() + 1.0)
    live = rss_kib(a.pid)
    if live == 0:
        print("fail=server_gone")
        return 1
    per = (live - before) * 1024 / max(a.n, 1)
    print(f"n={a.n} send_secs={sent_s:.1f} rss_before_kib={before} rss_live_kib={live} "
          f"bytes_per_live_txn={per:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
