"""``serve --cpu N`` pins only the serving thread (the polling loop's with ``--bare``): every other thread of the
server runs off CPU N (threads a library started while the listeners opened, the durable store's writer), so a
helper never waits for a core that a loop that never sleeps holds (bench/analysis.md)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.integration.helpers import SERVING, ServerProcess
from tests.integration.test_transports import register_bytes


def _masks(pid: int) -> dict[int, set[int]]:
    """Every thread of ``pid`` -> the CPUs it may run on."""
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("serving", ["loop", "bare"])
def test_cpu_pins_the_serving_thread_and_no_helper(tmp_path: Path, serving: str) -> None:
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two CPUs to tell the pinned thread from the others")
    cpu = max(allowed)
    args = ["--no-auth", "--mode", "registrar", "--location", "sqlite", "--db", str(tmp_path / "loc.db"),
            "--admin", "127.0.0.1:0", "--cpu", str(cpu), *SERVING[serving]]
    with ServerProcess(args, tmp_path) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert server.proc is not None
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        # a durable REGISTER: its 200 OK waits for the commit (a writer thread without --bare)
        sock.sendto(register_bytes("pinned", "udp", sock.getsockname()[1], "pin1"), ("127.0.0.1", server.port))
        assert sock.recv(65536).startswith(b"SIP/2.0 200 ")
        masks = _masks(server.proc.pid)
    serving_thread = masks.pop(server.proc.pid)  # the main thread: the event loop's, and the polling loop's
    assert serving_thread == {cpu}
    assert masks, "no helper thread to look at"  # libuv's lookup pool at least
    on_cpu = {tid: mask for tid, mask in masks.items() if cpu in mask}
    assert not on_cpu, (on_cpu, masks)
    assert all(mask == allowed - {cpu} for mask in masks.values()), masks
