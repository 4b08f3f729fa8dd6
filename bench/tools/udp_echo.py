"""The floor under any Python SIP server on this machine: a UDP "echo" that answers each request with its own
text under a ``SIP/2.0 200 OK`` status line (enough for SIPp's register scenario), and does nothing else.

Run it pinned like the servers and measure it with the harness, e.g.::

    taskset -c 1 .venv/bin/python bench/tools/udp_echo.py uvloop 39070 &
    TARGET=127.0.0.1:39070 SERVER_PID=$! FIXED_ONLY=1 FIXED_RATE=1000 bash bench/harness.sh register

``uvloop`` reads like leansip's UDP shell (non-blocking socket drained from an event-loop reader callback);
``uvloop-once`` reads one datagram per wake-up (no failing ``recvfrom`` raising BlockingIOError at the end);
``blocking`` is a plain blocking ``recvfrom`` loop; ``thread`` runs that loop in a thread beside an idle event
loop (a receive thread for the UDP socket, weighed against the reader callback: no gain on this host). What it
costs per REGISTER is what the kernel, the interpreter and the event loop take before any SIP work (see
bench/analysis.md).
"""

from __future__ import annotations

import socket
import sys


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "uvloop"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 39070
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def answer(data: bytes) -> bytes:
        return b"SIP/2.0 200 OK\r\n" + data[data.find(b"\r\n") + 2:]

    def blocking() -> None:
        while True:
            data, addr = sock.recvfrom(65535)
            sock.sendto(answer(data), addr)

    if mode == "blocking":
        blocking()
    import uvloop

    if mode == "thread":  # the blocking loop in a thread, the event loop idle beside it
        import threading

        threading.Thread(target=blocking, daemon=True).start()
        uvloop.new_event_loop().run_forever()

    loop = uvloop.new_event_loop()
    sock.setblocking(False)

    def readable() -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            sock.sendto(answer(data), addr)

    def readable_once() -> None:  # one datagram per wake-up: no failing recvfrom, epoll says if more wait
        data, addr = sock.recvfrom(65535)
        sock.sendto(answer(data), addr)

    loop.add_reader(sock.fileno(), readable_once if mode == "uvloop-once" else readable)
    loop.run_forever()


if __name__ == "__main__":
    main()
