"""The polling loop of ``serve --bare`` on real sockets, in-process: every datagram is answered whether it came
alone or in a burst, the transaction timers fire on time while it polls and while it sleeps, the event loop
keeps its turns (streams, admin, housekeeping run there), and a spin limit puts it to sleep and the next
datagram wakes it with nothing lost."""

from __future__ import annotations

import asyncio
import math
import socket
import time

from leansip.io.bareloop import BareLoop
from leansip.io.udpserver import TimerGrid, UdpServerSocket, open_udp_server
from leansip.sip.send import Send


class _Core:
    """What the shell calls on the core: an echo for datagrams, and timers at deadlines the test gives."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []
        self.fired: list[tuple[float, float]] = []  # (deadline, when it fired)

    def receive(self, data: bytes, source: tuple[str, int], transport: str, now: float,
                conn_id: str | None) -> list[Send]:
        if data.startswith(b"timer "):  # a datagram that sets a timer, as a request starts a transaction
            self.deadlines.append(now + float(data[6:]))
            self.deadlines.sort()
        return [Send(b"re:" + data, source)]

    def next_deadline(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None

    def handle_timers(self, now: float) -> list[Send]:
        while self.deadlines and self.deadlines[0] <= now:
            self.fired.append((self.deadlines.pop(0), now))
        return []


class _Commits:
    """A committer as the loop sees it (:class:`leansip.io.bareloop.Poller`): ``work`` steps to do, then a
    sync under way for as long as the test says."""

    def __init__(self) -> None:
        self.active = False
        self.flushing = False
        self.work = 0
        self.polls = 0

    def poll(self) -> bool:
        self.polls += 1
        if self.work:
            self.work -= 1
            return True
        return False


class _Server:
    """A UDP socket served by a BareLoop, with the Runtime's timer wiring (fire: fired(), the core, re-arm)."""

    def __init__(self, spin: float, commit: _Commits | None = None) -> None:
        self.spin = spin
        self.commit = commit
        self.core = _Core()
        self.udp: UdpServerSocket | None = None
        self.bare: BareLoop | None = None

    async def __aenter__(self) -> _Server:
        core = self.core
        self.timers = TimerGrid(core, self._fire, 0.002)
        self.udp = await open_udp_server("127.0.0.1", 0, core.receive, self._dispatch)
        self.udp.timers = self.timers
        self.bare = BareLoop([self.udp], self.timers, self.spin, commit=self.commit)
        self.bare.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.bare is not None and self.udp is not None
        self.bare.close()
        self.udp.close()

    def _dispatch(self, out: list[Send]) -> None:
        assert self.udp is not None
        for item in out:
            self.udp.sendto(item.data, item.dest)
        self.timers.arm()

    def _fire(self) -> None:
        self.timers.fired()
        self._dispatch(self.core.handle_timers(time.time()))


class _Client:
    def __init__(self, server: _Server) -> None:
        assert server.udp is not None
        self.dest = server.udp.address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.answers: set[bytes] = set()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.dest)

    async def collect(self, expected: set[bytes], timeout: float = 5.0) -> set[bytes]:
        """Answers until every expected one came (or the timeout), giving the event loop its turns."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not expected <= self.answers and loop.time() < until:
            try:
                self.answers.add(self.sock.recv(200))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        return self.answers

    def close(self) -> None:
        self.sock.close()


async def _bursts(server: _Server, client: _Client, bursts: tuple[int, ...], prefix: bytes,
                  asleep_first: bool = False) -> int:
    """Send the bursts, each after the answers to the one before came (and, with ``asleep_first``, after the
    loop went to sleep); return how many datagrams were sent."""
    sent = 0
    for burst in bursts:
        if asleep_first:
            await _until(lambda: server.bare is not None and server.bare.asleep)
        for _ in range(burst):
            client.send(prefix + b"%d" % sent)
            sent += 1
        await client.collect({b"re:" + prefix + b"%d" % i for i in range(sent)})
    return sent


async def _until(condition: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not condition() and loop.time() < until:  # type: ignore[operator]
        await asyncio.sleep(0.001)


def test_alone_and_in_bursts_every_datagram_is_answered() -> None:
    async def main() -> tuple[set[bytes], BareLoop]:
        async with _Server(math.inf) as server:
            client = _Client(server)
            # bursts well under the socket buffers: no kernel drops
            assert await _bursts(server, client, (1, 1, 100, 1, 150, 1), b"m") == 254
            client.close()
            assert server.bare is not None
            return client.answers, server.bare

    answers, bare = asyncio.run(main())
    assert answers == {b"re:m%d" % i for i in range(254)}
    assert bare.datagrams == 254 and bare.sleeps == 0 and not bare.asleep  # spin = inf: never slept
    assert bare.turns > 0  # the event loop had its turns (the client's own sleeps ran in them)
    snap = bare.snapshot()
    assert snap["mode"] == "bare" and snap["spin"] == "inf" and snap["datagrams"] == 254
    assert 0.0 < float(snap["busy_fraction"]) <= 1.0 and float(snap["busy_seconds"]) > 0.0


def test_the_event_loop_keeps_its_turns_while_the_loop_polls() -> None:
    """Streams, the admin endpoint and the housekeeping are event-loop work: it runs beside a loop that never
    sleeps, and call_later timers fire."""
    async def main() -> tuple[int, float]:
        async with _Server(math.inf) as server:
            loop = asyncio.get_running_loop()
            ticks = 0
            fired = loop.create_future()
            loop.call_later(0.02, fired.set_result, loop.time())
            for _ in range(20):  # a task sleeping in small steps, as housekeeping and flushers do
                await asyncio.sleep(0.001)
                ticks += 1
            at = await asyncio.wait_for(fired, 5)
            assert server.bare is not None and server.bare.running
            return ticks, at

    ticks, _at = asyncio.run(main())
    assert ticks == 20


def test_timers_fire_while_polling_and_while_asleep() -> None:
    """A timer set while the loop polls fires from the poll; with a spin limit the loop sleeps and hands the
    grid back to the event loop's timer, which fires it; none fires early."""
    async def main() -> tuple[_Core, BareLoop]:
        async with _Server(0.005) as server:  # sleeps after 5 ms without work
            client = _Client(server)
            client.send(b"timer 0.003")  # fires while the loop still spins
            client.send(b"timer 0.05")  # fires after the loop went to sleep
            await client.collect({b"re:timer 0.003", b"re:timer 0.05"})
            await _until(lambda: len(server.core.fired) == 2)
            client.close()
            assert server.bare is not None
            return server.core, server.bare

    core, bare = asyncio.run(main())
    assert len(core.fired) == 2 and not core.deadlines
    assert all(when >= deadline for deadline, when in core.fired)
    assert bare.sleeps >= 1


def test_a_datagram_wakes_the_sleeping_loop_and_nothing_is_lost() -> None:
    """With a spin limit the loop sleeps between bursts; each burst wakes it (the event loop's watch of the
    socket is level-triggered, so a datagram that came between the last poll and the watch is not missed)."""
    async def main() -> tuple[set[bytes], BareLoop]:
        async with _Server(0.0) as server:  # sleeps as soon as a pass finds nothing
            client = _Client(server)
            assert await _bursts(server, client, (1, 30, 1, 1, 50), b"w", asleep_first=True) == 83
            client.close()
            assert server.bare is not None
            return client.answers, server.bare

    answers, bare = asyncio.run(main())
    assert answers == {b"re:w%d" % i for i in range(83)}
    assert bare.sleeps >= 5 and bare.datagrams == 83


def test_closed_loop_stops_polling() -> None:
    async def main() -> BareLoop:
        async with _Server(math.inf) as server:
            await asyncio.sleep(0.005)
            assert server.bare is not None
            bare = server.bare
        passes = bare.passes
        await asyncio.sleep(0.01)  # a run already scheduled returns at once
        assert bare.passes == passes
        return bare

    bare = asyncio.run(main())
    assert bare.closed and not bare.running


def test_a_commit_under_way_keeps_the_loop_awake_and_wake_soon_wakes_it() -> None:
    """With a spin limit of 0: the loop sleeps while its committer has nothing to do; work that comes from the
    event loop's side (``wake_soon``: a change queued by a TCP REGISTER, a retry timer) wakes it; while the
    committer is active (a batch due, a sync running) it polls and does not sleep, yielding the core on idle
    passes while a sync runs; once the committer is done it sleeps again."""
    async def main() -> tuple[_Commits, BareLoop, list[int]]:
        commits = _Commits()
        async with _Server(0.0, commits) as server:
            bare = server.bare
            assert bare is not None
            await _until(lambda: bare.asleep)
            seen = [commits.polls]
            commits.active, commits.flushing, commits.work = True, True, 3
            bare.wake_soon()
            await _until(lambda: commits.polls > 200)
            assert not bare.asleep and bare.yields > 0  # awake all along: a sync runs
            seen.append(bare.sleeps)
            commits.active = commits.flushing = False  # the sync returned, nothing due
            await _until(lambda: bare.asleep)
            seen.append(bare.sleeps)
            bare.wake_soon()  # asleep, nothing to do: wakes, finds nothing, sleeps again
            await _until(lambda: bare.sleeps > seen[2])
            return commits, bare, seen

    commits, bare, seen = asyncio.run(main())
    assert seen[0] == 0  # not polled while it was not active
    assert commits.work == 0 and seen[2] == seen[1] + 1 and bare.asleep
