"""The Redis location store against a real redis-server: each node serves from its own replica, changes travel
through Redis (leansip/io/redislink.py), and an outage loses nothing.

In-process tests run two nodes (two stores, two links) on one event loop; the last test runs two ``leansip
serve`` processes with SIPp: register on node A, call through node B, then kill redis-server during a REGISTER
load and start it again, empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from leansip.io.redislink import RedisLink
from leansip.server.location import Binding, LocationService
from leansip.server.registrar import contact_key
from leansip.server.stores.redis import RedisKeys, RedisStore
from tests.conftest import free_tcp_port, free_udp_port, require_program
from tests.integration.helpers import ServerProcess
from tests.integration.sipp_kit import SippServer, run_sipp, scenario

pytestmark = pytest.mark.external

redis = pytest.importorskip("redis")

NOW = time.time()
SIPP_REGISTER = Path(__file__).resolve().parents[2] / "bench" / "sipp" / "register.xml"


class RedisServer:
    """A redis-server on a free port, without persistence: killed, it comes back empty."""

    def __init__(self, workdir: Path) -> None:
        self.exe = require_program("redis-server")
        self.port = free_tcp_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = workdir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:  # until it accepts connections
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def mk(aor: str, contact: str, *, at: float = NOW, exp: float = NOW + 600) -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=exp, registered_at=at, call_id="c", cseq=1,
                   source=("192.0.2.1", 5060), path=["<sip:edge;lr>"])


class Node:
    """One node's store, location service and link, on the running loop."""

    def __init__(self, url: str, name: str, **link: float) -> None:
        self.store = RedisStore(url, node=name)
        self.loc = LocationService(self.store, key=contact_key)
        self.link = RedisLink(self.store, **link)
        self.link.start()

    def contacts(self) -> dict[str, list[str]]:
        return {aor: [b.contact for b in self.loc.lookup(aor, time.time())] for aor in self.loc.aors()}


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Wait (polling the loop's state) until ``cond()``; returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


def in_redis(server: RedisServer) -> dict[str, str]:
    client = server.client()
    try:
        return {k.decode(): json.loads(v)["contact"] for k, v in client.hgetall(RedisKeys().bindings).items()}
    finally:
        client.close()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


def test_nodes_see_each_others_changes(redis_server: RedisServer) -> None:
    async def scenario_() -> None:
        a, b = Node(redis_server.url, "a"), Node(redis_server.url, "b")
        await until(lambda: a.link.connected and b.link.connected, "both nodes connected")
        a.loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW))
        b.loc.put(mk("alice", "sip:alice@10.0.0.2", at=NOW + 1))
        want = {"alice": ["sip:alice@10.0.0.2", "sip:alice@10.0.0.1"]}
        await until(lambda: a.contacts() == want and b.contacts() == want, "each node sees both contacts")
        got = b.loc.get("alice", "sip:alice@10.0.0.1")
        assert got is not None and got.path == ["<sip:edge;lr>"] and got.source == ("192.0.2.1", 5060)
        # a refresh through B of A's binding, then a remove through A, then Contact: * through B
        b.loc.put(mk("alice", "sip:alice@10.0.0.1", at=NOW + 2, exp=NOW + 900))
        await until(lambda: [x.expires_at for x in a.loc.lookup("alice", NOW)] == [NOW + 900, NOW + 600],
                    "A sees B's refresh")
        assert a.loc.remove("alice", "sip:alice@10.0.0.2") is not None
        await until(lambda: b.contacts() == {"alice": ["sip:alice@10.0.0.1"]}, "B sees A's remove")
        # a delete that reaches Redis after a newer registration of the same contact leaves that one in place
        a.loc.put(mk("dave", "sip:dave@h", at=NOW))
        await until(lambda: "dave" in b.contacts(), "dave in Redis and on B")
        client = redis_server.client()
        newer = json.dumps({"aor": "dave", "contact": "sip:dave@h", "expires_at": NOW + 600, "registered_at": NOW + 9})
        client.hset(RedisKeys().bindings, "dave\nsip:dave@h", newer)  # another node's newer REGISTER, first
        a.loc.remove("dave", "sip:dave@h")  # deletes the version A had
        await until(lambda: "dave" not in b.contacts(), "B sees A's delete (published by the same script call)")
        assert "dave\nsip:dave@h" in in_redis(redis_server)
        client.hdel(RedisKeys().bindings, "dave\nsip:dave@h")
        client.close()
        b.loc.remove_all("alice")
        await until(lambda: a.contacts() == {} and in_redis(redis_server) == {}, "the remove-all everywhere")
        assert a.link.outages == 0 and a.link.state()["connected"] is True
        # the nodes that listen: a node that leaves says so; one that vanished is dropped by the next batch
        client = redis_server.client()
        assert client.smembers(RedisKeys().nodes) == {b"a", b"b"}
        await b.link.close()
        client.sadd(RedisKeys().nodes, "vanished")
        a.loc.put(mk("carol", "sip:carol@10.0.0.3"))
        await until(lambda: client.smembers(RedisKeys().nodes) == {b"a"}, "the node set cleaned up")
        client.close()
        await a.link.close()

    run(scenario_)


def test_a_late_node_loads_the_table_and_redis_is_reaped(redis_server: RedisServer) -> None:
    async def scenario_() -> None:
        a = Node(redis_server.url, "a", reap_every=0.05)
        await until(lambda: a.link.connected, "A connected")
        for i in range(50):
            a.loc.put(mk(f"u{i}", f"sip:u{i}@h"))
        a.loc.put(mk("brief", "sip:brief@h", exp=time.time() + 0.5))
        await until(lambda: len(in_redis(redis_server)) == 51, "A's bindings in Redis")
        late = Node(redis_server.url, "late")
        await until(lambda: late.link.connected, "the late node connected")
        assert set(late.contacts()) >= {f"u{i}" for i in range(50)}  # from the resync
        assert late.contacts()["u7"] == ["sip:u7@h"]
        await until(lambda: len(in_redis(redis_server)) == 50, "the lapsed binding reaped from Redis")
        await a.link.close()
        await late.link.close()

    run(scenario_)


def test_redis_killed_and_restarted_empty_loses_nothing(redis_server: RedisServer) -> None:
    async def scenario_() -> None:
        a, b = Node(redis_server.url, "a"), Node(redis_server.url, "b")
        await until(lambda: a.link.connected and b.link.connected, "both nodes connected")
        for i in range(20):
            (a if i % 2 else b).loc.put(mk(f"u{i}", f"sip:u{i}@h", at=NOW))
        await until(lambda: a.loc.count() == b.loc.count() == 20, "both replicas full")
        redis_server.kill()
        await until(lambda: not a.link.connected and not b.link.connected, "both nodes see the outage")
        # both keep serving and changing their replicas
        for i in range(20, 30):
            a.loc.put(mk(f"u{i}", f"sip:u{i}@h", at=NOW + 1))
        b.loc.put(mk("u3", "sip:u3@h", at=NOW + 1, exp=NOW + 999))  # a refresh of A's binding through B
        assert a.loc.lookup("u5", NOW) and b.loc.lookup("u28", NOW) == []
        assert a.link.state()["pending"] == 10
        await asyncio.get_running_loop().run_in_executor(None, redis_server.start)
        t0 = time.monotonic()
        took = await until(lambda: a.link.connected and b.link.connected and a.contacts() == b.contacts()
                           and a.loc.count() == 30, "both nodes converge after the restart")
        assert len(in_redis(redis_server)) == 30  # refilled from the replicas
        [u3] = a.loc.lookup("u3", NOW)
        assert u3.expires_at == NOW + 999  # the newest version won
        print(f"\nredis restarted empty: both nodes converged {took:.3f} s after it was back "
              f"({time.monotonic() - t0:.3f} s)")
        assert a.link.outages == b.link.outages == 1
        await a.link.close()
        await b.link.close()

    run(scenario_)


def test_a_stalled_redis_blocks_nothing(redis_server: RedisServer) -> None:
    """redis-server stopped (SIGSTOP): the node keeps serving and its loop keeps turning while the link's write
    times out in its own thread; the node notices, queues, and catches up when Redis runs again."""
    assert redis_server.proc is not None
    pid = redis_server.proc.pid

    async def scenario_() -> None:
        a = Node(redis_server.url, "a", socket_timeout=0.3)
        await until(lambda: a.link.connected, "A connected")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        os.kill(pid, signal.SIGSTOP)
        try:
            for i in range(10):
                a.loc.put(mk(f"u{i}", f"sip:u{i}@h"))
            assert a.loc.expire(time.time()) == [] and len(a.loc.lookup("u3", time.time())) == 1  # all local
            start = ticks
            await until(lambda: not a.link.connected, "A sees the stall")
            assert ticks > start  # the loop turned while the write was stuck (a blocked loop would not)
            assert a.loc.count() == 10 and a.link.state()["pending"] == 10
        finally:
            os.kill(pid, signal.SIGCONT)
        await until(lambda: a.link.connected and len(in_redis(redis_server)) == 10, "A catches up")
        assert a.link.outages == 1
        task.cancel()
        await a.link.close()

    run(scenario_)


# ----------------------------------------------------------------------------------- two leansip processes
def _node(tmp_path: Path, name: str, url: str) -> tuple[ServerProcess, int]:
    admin = free_tcp_port()
    args = ["--mode", "proxy", "--stateful", "--no-auth", "--location", "redis", "--redis-url", url,
            "--db", str(tmp_path / f"{name}.db"), "--admin", f"127.0.0.1:{admin}", "--log-level", "warning"]
    return ServerProcess(args, tmp_path, name=name), admin


def _bindings(admin: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/bindings", timeout=5) as resp:
        return {b["aor"]: b["contact"] for b in json.loads(resp.read())}


def _status(admin: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/status", timeout=5) as resp:
        return dict(json.loads(resp.read())["store"])


def _wait(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_two_nodes_register_on_a_call_through_b_and_survive_a_redis_restart(
        tmp_path: Path, redis_server: RedisServer, record_property: pytest.RecordProperty) -> None:
    require_program("sipp")
    node_a, admin_a = _node(tmp_path, "a", redis_server.url)
    node_b, admin_b = _node(tmp_path, "b", redis_server.url)
    with node_a, node_b:
        _wait(lambda: _status(admin_a)["connected"] and _status(admin_b)["connected"], "both nodes connected")
        with SippServer(scenario("uas-answer.xml", tmp_path), tmp_path, node_a.port) as uas:
            reg = run_sipp(node_a.port, scenario("proxy-register.xml", tmp_path), tmp_path,
                           ["-m", "1", "-s", "callee", "-key", "callee_port", str(uas.port)], name="register",
                           timeout=20)
            assert reg.count("SuccessfulCall") == 1, f"{reg}\n{node_a.output()}"
            _wait(lambda: "callee" in _bindings(admin_b), "node B learns A's registration")
            calls = run_sipp(node_b.port, scenario("uac-proxy.xml", tmp_path), tmp_path,
                             ["-m", "20", "-r", "20", "-s", "callee", "-key", "caller", "alice"], name="calls")
            assert calls.count("SuccessfulCall") == 20 and calls.count("FailedCall") == 0, \
                f"{calls}\n{node_b.output()}"

        # a REGISTER load on node A; redis-server is killed in the middle and started again, empty
        total, rate = 3000, 500
        users = tmp_path / "users.csv"
        users.write_text("SEQUENTIAL\n" + "".join(f"r{i};x\n" for i in range(total)))
        stat = tmp_path / "load.csv"
        load = subprocess.Popen(
            ["sipp", f"127.0.0.1:{node_a.port}", "-sf", str(SIPP_REGISTER), "-inf", str(users), "-m", str(total),
             "-r", str(rate), "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin", "-recv_timeout", "5000",
             "-timeout", "60s", "-trace_stat", "-stf", str(stat), "-fd", "1"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: len(_bindings(admin_b)) > 500, "the load under way, reaching node B")
            redis_server.kill()
            _wait(lambda: not _status(admin_a)["connected"] and not _status(admin_b)["connected"],
                  "both nodes see the outage")
            time.sleep(1.0)  # the load goes on against a node whose Redis is gone
            assert _status(admin_a)["pending"] > 0  # queued, not failed
            during = set(_bindings(admin_a)) - set(_bindings(admin_b))
            assert during  # registered on A during the outage: B cannot know them yet
            redis_server.start()
            took = _wait(lambda: _status(admin_a)["connected"] and _status(admin_b)["connected"]
                         and during <= set(_bindings(admin_b)), "B learns what A registered during the outage")
            load.wait(timeout=60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        rows = stat.read_text().splitlines()
        header, last = rows[0].split(";"), rows[-1].split(";")
        ok = int(last[header.index("SuccessfulCall(C)")])
        failed = int(last[header.index("FailedCall(C)")])
        assert (ok, failed) == (total, 0), node_a.output()
        _wait(lambda: _bindings(admin_a) == _bindings(admin_b) and len(_bindings(admin_a)) == total + 1,
              "every registration on both nodes")
        assert len(in_redis(redis_server)) == total + 1  # Redis refilled
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_a}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        for line in ("leansip_redis_connected 1.0", "leansip_redis_outages_total 1.0", "leansip_location_queue 0.0"):
            assert line in metrics.splitlines(), metrics
        record_property("converged_after_restart_s", round(took, 3))
        print(f"\nredis killed under {rate} REGISTER/s and restarted empty: {ok} ok, {failed} failed; nodes in step "
              f"{took:.2f} s after the restart")
    for node in (node_a, node_b):
        log = node.stderr_path.read_text(errors="replace")
        assert log.count("event=redis_unavailable") == 1, log[-3000:]  # the outage is logged once
        assert "Traceback" not in log, log[-3000:]
