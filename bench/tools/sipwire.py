#!/usr/bin/env python3
"""REGISTER -> 200 OK latency per Call-ID from a loopback capture (kernel timestamps, microseconds), for SIPp
runs, whose own RTT clock steps by 4 ms:

  dumpcap -q -i lo -f "udp port PORT" -w cap.pcap &   # during the SIPp run
  sipwire.py cap.pcap PORT   -> "n=.. p50_us=.. p90_us=.. p99_us=.. max_us=.. unanswered=.."
"""
import subprocess
import sys


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main(pcap: str, port: str) -> None:
    out = subprocess.run(["tshark", "-r", pcap, "-d", f"udp.port=={port},sip", "-T", "fields",
                          "-e", "frame.time_epoch", "-e", "sip.Call-ID", "-e", "sip.Method", "-e", "sip.Status-Code"],
                         capture_output=True, text=True, check=True).stdout
    sent: dict[str, float] = {}
    lat: list[float] = []
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) < 4 or not f[1]:
            continue
        t, cid, method, code = float(f[0]), f[1], f[2], f[3]
        if method == "REGISTER":
            sent.setdefault(cid, t)  # the first send: a retransmission's answer counts from it
        elif code == "200" and cid in sent:
            lat.append((t - sent.pop(cid)) * 1e6)
    lat.sort()
    print(f"n={len(lat)} p50_us={pct(lat, 50):.0f} p90_us={pct(lat, 90):.0f} p99_us={pct(lat, 99):.0f} "
          f"max_us={lat[-1]:.0f} unanswered={len(sent)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
