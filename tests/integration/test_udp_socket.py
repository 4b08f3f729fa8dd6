"""The server's UDP socket on a real socket: every datagram is answered, whether it came alone (one read per
wake-up) or in a burst (the socket drained), and the loop's level-triggered poll picks up what one wake-up left.
"""

from __future__ import annotations

import asyncio
import socket

from leansip.io.udpserver import TimerGrid, UdpServerSocket, open_udp_server
from leansip.sip.send import Send


async def _serve_and_send(bursts: list[int], gap: float) -> tuple[set[bytes], list[int]]:
    """Send ``bursts`` (datagrams per burst, ``gap`` seconds apart) to an echoing server; return the answers and
    the batch size the server chose at each wake-up."""
    batches: list[int] = []
    server: UdpServerSocket | None = None

    def handler(data: bytes, source: tuple[str, int], transport: str, now: float, conn_id: str | None) -> list[Send]:
        return [Send(b"re:" + data, source)]

    def dispatch(out: list[Send]) -> None:
        assert server is not None
        for item in out:
            server.sendto(item.data, item.dest)

    server = await open_udp_server("127.0.0.1", 0, handler, dispatch)
    readable = server._readable

    def counting() -> None:
        batches.append(server.BATCH if server.clock() - server._last_wake < server.BUSY_GAP else 1)
        readable()

    loop = asyncio.get_running_loop()
    loop.remove_reader(server.sock.fileno())
    loop.add_reader(server.sock.fileno(), counting)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    sent = 0
    answers: set[bytes] = set()

    async def collect(until: float) -> None:
        while len(answers) < sent and loop.time() < until:
            try:
                answers.add(client.recv(100))
            except BlockingIOError:
                await asyncio.sleep(0.001)

    try:
        for size in bursts:  # a burst stays well under the default socket buffers (no kernel drops)
            for _ in range(size):
                client.sendto(b"m%d" % sent, server.address)
                sent += 1
            await collect(loop.time() + gap)
        await collect(loop.time() + 5)
        return answers, batches
    finally:
        client.close()
        server.close()


def test_single_datagrams_are_read_one_per_wake_up() -> None:
    answers, batches = asyncio.run(_serve_and_send([1] * 20, 0.005))
    assert answers == {b"re:m%d" % i for i in range(20)}
    assert batches and set(batches) == {1}  # 5 ms apart: never drained, never a failing read


def test_a_burst_is_answered_completely() -> None:
    answers, batches = asyncio.run(_serve_and_send([1, 80, 1, 60, 1, 80], 0.05))
    assert answers == {b"re:m%d" % i for i in range(223)}
    # the bursts came faster than the gap: some wake-ups drained the socket, and what the first wake-up of a
    # burst left was read on the next ones (the poll is level-triggered)
    assert UdpServerSocket.BATCH in batches and len(batches) < 223


def test_small_udp_replies_are_written_directly_and_the_rest_goes_to_dispatch() -> None:
    """The compiled socket writes small UDP datagrams itself and re-arms the timer grid; a stream send or a
    request too large for UDP (RFC 3261 18.1.1) goes to the Runtime's dispatch, with the rest of that output."""

    class Deadlines:
        asked = 0

        def next_deadline(self) -> float | None:  # what TimerGrid.arm asks the core
            Deadlines.asked += 1
            return None

    async def main() -> tuple[list[bytes], list[list[Send]]]:
        dispatched: list[list[Send]] = []
        big = b"x" * 1400
        handled = asyncio.Event()  # set when the socket has handed a datagram over (its replies are written)

        def handler(data: bytes, source: tuple[str, int], transport: str, now: float,
                    conn_id: str | None) -> list[Send]:
            asyncio.get_running_loop().call_soon(handled.set)
            if data == b"big":
                return [Send(b"small", source), Send(big, source)]
            if data == b"tcp":
                return [Send(b"over-tcp", ("127.0.0.1", 9), "tcp")]
            return [Send(b"re:" + data, source)]

        server = await open_udp_server("127.0.0.1", 0, handler, dispatched.append)
        server.timers = TimerGrid(Deadlines(), lambda: None, 0.02)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
        try:
            got = []
            for payload in (b"a", b"big", b"tcp", b"b"):  # one at a time, so the order of what comes out is known
                handled.clear()
                client.sendto(payload, server.address)
                await asyncio.wait_for(handled.wait(), 5)
            client.setblocking(False)
            while True:
                try:
                    got.append(client.recv(2000))
                except BlockingIOError:
                    break
            return got, dispatched
        finally:
            client.close()
            server.close()

    got, dispatched = asyncio.run(main())
    assert got == [b"re:a", b"re:b"]  # the two small replies; the others went to dispatch
    assert [[s.data[:8] for s in out] for out in dispatched] == [[b"small", b"x" * 8], [b"over-tcp"]]
    assert Deadlines.asked == 2  # re-armed after each reply written here (dispatch re-arms for its own)
