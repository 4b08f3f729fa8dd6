"""``leansip serve`` on IPv6 listeners, a concrete one (``[::1]``) and a wildcard (``[::]``): the start-up line
shows the address in brackets, and requests for the server itself are answered by it, whether they name its
address with the port or without (before: ``OPTIONS sip:[::1]:P`` got 482 Loop Detected, the server forwarding
to itself, and ``OPTIONS sip:[::1]`` no answer at all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import free_udp_port
from tests.integration.helpers import BANNER, ServerProcess, send_recv, sip_request, status_of


@pytest.mark.parametrize("listen", ["::1", "::"], ids=["loopback", "wildcard"])
def test_ipv6_listener_answers_for_itself(tmp_path: Path, listen: str) -> None:
    port = free_udp_port("::1")
    with ServerProcess(["--no-auth", "--location", "memory", "--db", str(tmp_path / "l.db")], tmp_path,
                       host=listen, port=port) as srv:
        assert f"{BANNER} udp:[{listen}]:{port}" in srv.output()
        for ruri in (f"sip:[::1]:{port}", "sip:[::1]", f"sip:[0:0:0:0:0:0:0:1]:{port}"):
            replies = send_recv(port, sip_request("OPTIONS", ruri, user="alice"), host="::1")
            assert [status_of(r) for r in replies] == [200], (ruri, replies, srv.output())
        # and a REGISTER over IPv6 is stored with its IPv6 source
        replies = send_recv(port, sip_request("REGISTER", f"sip:[::1]:{port}", user="alice",
                                              contacts=("<sip:alice@[::1]:5999>",), expires=60), host="::1")
        assert [status_of(r) for r in replies] == [200], replies
        assert b"<sip:alice@[::1]:5999>;expires=" in replies[0]
