"""RedisStore against a real redis-server: two nodes share one location table."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from leansip.server.location import Binding, LocationService

pytestmark = pytest.mark.external

redis = pytest.importorskip("redis")


def _require_redis_server() -> str:
    """Path of redis-server; skip (or fail under LEANSIP_REQUIRE_EXTERNAL=1) if missing."""
    try:
        from tests.conftest import require_program  # shared helper, when present
    except ImportError:
        path = shutil.which("redis-server")
        if path is None:
            if os.environ.get("LEANSIP_REQUIRE_EXTERNAL") == "1":
                pytest.fail("redis-server not found and LEANSIP_REQUIRE_EXTERNAL=1")
            pytest.skip("redis-server not installed")
        return path
    return require_program("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    exe = _require_redis_server()
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:  # wait for the real server to accept connections (integration test)
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture()
def nodes(
    redis_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[LocationService, LocationService]]:
    from leansip.server.stores.redis import RedisStore

    prefix = f"t{abs(hash(request.node.nodeid))}:"
    a = LocationService(RedisStore(redis_url, prefix=prefix))
    b = LocationService(RedisStore(redis_url, prefix=prefix))
    yield a, b
    redis.Redis.from_url(redis_url).flushdb()
    a.close()
    b.close()


def _b(aor: str, contact: str, exp: float, q: float = 1.0, at: float = 0.0) -> Binding:
    return Binding(
        aor=aor,
        contact=contact,
        q=q,
        expires_at=exp,
        call_id="cid",
        cseq=1,
        source=("192.0.2.1", 5060),
        transport="udp",
        registered_at=at,
        path=["<sip:edge;lr>"],
        instance='"<urn:uuid:1>"',
        reg_id=1,
    )


def test_nodes_see_each_other(nodes: tuple[LocationService, LocationService]) -> None:
    a, b = nodes
    a.put(_b("alice@example.com", "sip:alice@10.0.0.1", 100.0, q=0.5))
    b.put(_b("alice@Example.COM", "sip:alice@10.0.0.2", 100.0, q=0.9))
    for node in (a, b):
        got = node.lookup("alice@example.com", now=10.0)
        assert [x.contact for x in got] == ["sip:alice@10.0.0.2", "sip:alice@10.0.0.1"]
    got = b.get("alice@example.com", "<sip:alice@10.0.0.1>")
    assert got is not None and got.path == ["<sip:edge;lr>"] and got.source == ("192.0.2.1", 5060)
    assert got.reg_id == 1 and got.instance == '"<urn:uuid:1>"'
    assert a.count() == 2 and b.aors() == ["alice@example.com"]


def test_refresh_remove_and_remove_all(nodes: tuple[LocationService, LocationService]) -> None:
    a, b = nodes
    a.put(_b("bob@x", "sip:bob@h1", 50.0))
    b.put(_b("bob@x", "sip:bob@h1", 500.0))  # refresh through the other node
    assert a.count() == 1
    assert a.expire(now=100.0) == []  # the refresh moved its expiry
    assert [x.expires_at for x in a.lookup("bob@x", 100.0)] == [500.0]
    removed = a.remove("bob@x", "sip:bob@h1")
    assert removed is not None and removed.expires_at == 500.0
    assert b.lookup("bob@x", 0.0) == [] and b.count() == 0
    assert a.remove("bob@x", "sip:bob@h1") is None
    a.put(_b("bob@x", "sip:bob@h1", 50.0))
    a.put(_b("bob@x", "sip:bob@h2", 60.0))
    assert sorted(x.contact for x in b.remove_all("bob@x")) == ["sip:bob@h1", "sip:bob@h2"]
    assert a.count() == 0 and a.aors() == []


def test_expire_is_reported_once_across_nodes(nodes: tuple[LocationService, LocationService]) -> None:
    a, b = nodes
    for i in range(30):
        a.put(_b(f"u{i}@x", f"sip:u{i}@h", 10.0 + i))
    assert a.lookup("u5@x", now=20.0) == []  # lapsed but not reaped: hidden
    first = a.expire(now=19.5)
    second = b.expire(now=19.5)
    assert sorted(x.aor for x in first) == sorted(f"u{i}@x" for i in range(10))
    assert second == []
    assert b.count() == 20
    assert len(b.all_bindings(now=19.5)) == 20


def test_expire_runs_in_batches(
    nodes: tuple[LocationService, LocationService], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leansip.server.stores import redis as redis_store

    monkeypatch.setattr(redis_store, "EXPIRE_BATCH", 4)
    a, _ = nodes
    for i in range(10):
        a.put(_b("many@x", f"sip:m{i}@h", 5.0))
    a.put(_b("many@x", "sip:keep@h", 50.0))
    assert len(a.expire(now=5.0)) == 10
    assert [x.contact for x in a.lookup("many@x", 6.0)] == ["sip:keep@h"]
