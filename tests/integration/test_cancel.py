"""CANCEL through the stateful proxy with real SIPp peers (RFC 3261 9.2, 16.10).

The callee (uas-ring.xml) answers 180 and never 200; the caller (uac-cancel.xml) sends CANCEL after the 180.
leansip answers the CANCEL 200 itself, CANCELs the ringing branch, ACKs the callee's 487 hop by hop and relays
the 487 to the caller, who ACKs it at the proxy.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import require_program
from tests.integration.helpers import ServerProcess
from tests.integration.sipp_kit import SippServer, run_sipp, scenario

CALLS = 20


def test_cancel_after_180_gets_200_and_487(tmp_path: Path) -> None:
    require_program("sipp")
    users = tmp_path / "users.txt"
    users.write_text("alice:alice\ncallee:callee\n")
    args = ["--mode", "proxy", "--stateful", "--location", "memory", "--db", str(tmp_path / "leansip.db"),
            "--realm", "leansip", "--users", str(users)]
    with ServerProcess(args, workdir=tmp_path) as srv:
        with SippServer(scenario("uas-ring.xml", tmp_path), tmp_path, srv.port) as uas:
            reg = run_sipp(srv.port, scenario("proxy-register.xml", tmp_path), tmp_path,
                           ["-m", "1", "-s", "callee", "-key", "callee_port", str(uas.port)], name="register",
                           timeout=20)
            assert reg.returncode == 0 and reg.count("SuccessfulCall") == 1, reg
            result = run_sipp(srv.port, scenario("uac-cancel.xml", tmp_path), tmp_path,
                              ["-m", str(CALLS), "-r", "20", "-s", "callee", "-key", "caller", "alice"],
                              name="uac-cancel")
            # every call: 180 relayed, CANCEL answered 200, 487 relayed (the scenario requires each in turn)
            assert result.count("SuccessfulCall") == CALLS, f"{result}\n{srv.output()}"
            assert result.count("FailedCall") == 0 and result.returncode == 0, result
            # the callee saw one CANCEL per call from the proxy, and the proxy's ACK for each 487 (the UAS may
            # write its message log a moment after the caller ended: give it up to 2 s)
            deadline = time.monotonic() + 2.0
            while uas.received("ACK") < CALLS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert uas.received("CANCEL") == CALLS
            assert uas.received("ACK") == CALLS
        assert srv.alive(), srv.output()
