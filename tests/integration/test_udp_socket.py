"""The server's UDP socket on a real socket: every datagram is answered, whether it came alone (one read per
wake-up) or in a burst (the socket drained), and the loop's level-triggered poll picks up what one wake-up left.
"""

from __future__ import annotations

import asyncio
import socket

from leansip.io.udpserver import UdpServerSocket, open_udp_server
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
