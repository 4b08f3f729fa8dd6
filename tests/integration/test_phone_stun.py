"""``leansip phone --stun``: the public address a STUN server reports goes into the SDP offer.

The STUN server here is a few lines in the test: it answers every Binding request with a made-up public
address (203.0.113.7:40000, TEST-NET-3), records where each request came from, and answers nothing else.
Alice calls Bob directly (no SIP server); Bob's ``-v`` log shows the INVITE's SDP, which must announce the
mapped address in ``c=`` and ``m=``. Bob refuses the call (486) so nobody ever sends RTP to the made-up
address. The requests must come from Alice's RTP port: the mapping of any other socket would be useless.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

from leansip.media.stun import StunClass, binding_success, parse_message
from tests.conftest import free_udp_port
from tests.integration.helpers import start_phone, wait_exit, wait_for_text

PUBLIC = ("203.0.113.7", 40000)


class StunServer:
    """Answers Binding requests on 127.0.0.1 with XOR-MAPPED-ADDRESS = PUBLIC; keeps the request sources."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.sources: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if msg.message_class != StunClass.REQUEST:
                continue
            self.sources.append(source)
            self.sock.sendto(binding_success(msg, PUBLIC, software="test-stun").serialize(fingerprint=True), source)

    def __enter__(self) -> StunServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_offer_carries_the_stun_mapped_address(tmp_path: Path) -> None:
    bob_port = free_udp_port()
    bob_log, alice_log = tmp_path / "bob.log", tmp_path / "alice.log"
    with StunServer() as stun:
        bob = start_phone(["--user", "bob", "--local-port", str(bob_port), "-v", "answer", "--reject", "486",
                      "--timeout", "20"], bob_log)
        try:
            wait_for_text(bob_log, "event=started")
            alice = start_phone(["--user", "alice", "--stun", f"127.0.0.1:{stun.port}", "call",
                            f"sip:bob@127.0.0.1:{bob_port}", "--timeout", "8"], alice_log)
            alice_rc = wait_exit(alice, 20)
            bob_rc = wait_exit(bob, 10)
        finally:
            if bob.poll() is None:
                bob.kill()
                bob.wait()
        alice_text, bob_text = alice_log.read_text(), bob_log.read_text()
        logs = f"--- alice\n{alice_text}\n--- bob\n{bob_text}"
        assert alice_rc == 3 and bob_rc == 3, logs  # refused with 486, as arranged
        assert "event=stun_mapped" in alice_text and "mapped=203.0.113.7:40000" in alice_text, logs
        invite = bob_text[bob_text.index("INVITE sip:bob@"):]
        assert "c=IN IP4 203.0.113.7" in invite, logs
        assert re.search(r"^m=audio 40000 RTP/AVP", invite, re.M), logs
        assert re.search(r"^o=alice \d+ \d+ IN IP4 203\.0\.113\.7", invite, re.M), logs
        rtp_port = int(re.search(r"event=started sip=\S+ transport=udp rtp=(\d+)", alice_text).group(1))  # type: ignore[union-attr]
        assert stun.sources and {s for s in stun.sources} == {("127.0.0.1", rtp_port)}, (stun.sources, rtp_port)


def test_dead_stun_server_falls_back_to_the_local_address(tmp_path: Path) -> None:
    """No STUN answer within the start-up wait: the offer uses the local RTP address (and the phone works)."""
    bob_port = free_udp_port()
    silent = free_udp_port()  # nobody answers there
    bob_log, alice_log = tmp_path / "bob.log", tmp_path / "alice.log"
    bob = start_phone(["--user", "bob", "--local-port", str(bob_port), "-v", "answer", "--reject", "486",
                  "--timeout", "20"], bob_log)
    try:
        wait_for_text(bob_log, "event=started")
        alice = start_phone(["--user", "alice", "--stun", f"127.0.0.1:{silent}", "call", f"sip:bob@127.0.0.1:{bob_port}",
                        "--timeout", "8"], alice_log)
        alice_rc = wait_exit(alice, 20)
        wait_exit(bob, 10)
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait()
    text = bob_log.read_text()
    assert alice_rc == 3, alice_log.read_text()
    assert "event=stun_pending" in alice_log.read_text()
    invite = text[text.index("INVITE sip:bob@"):]
    assert "c=IN IP4 127.0.0.1" in invite and "203.0.113.7" not in invite, text
