"""The curses phone for real, headless in tmux: keys in with ``send-keys``, the screen out with ``capture-pane``.

Bob runs ``leansip phone ... ui`` over TLS in a tmux pane; Alice (a CLI phone over UDP) calls him through
``leansip serve``. The screen must show the registration, the ringing call, the established call (with its
timer, plain RTP), and the end; ``1`` dials a quick-dial entry and ``q`` quits after unregistering. Every
captured screen is kept in ``test-output/`` for a person to look at.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from leansip.media.tone import write_tone_wav
from tests.conftest import REPO_ROOT, require_program
from tests.integration.helpers import start_phone, wait_exit
from tests.integration.test_phone_transports import Server


class Tmux:
    def __init__(self, tmux: str, out: Path) -> None:
        self.tmux = tmux
        self.name = f"leansip-ui-{uuid.uuid4().hex[:8]}"
        self.out = out
        self.shots = 0

    def start(self, command: str) -> None:
        subprocess.run([self.tmux, "new-session", "-d", "-s", self.name, "-x", "100", "-y", "32", command],
                       check=True)
        # a tmux server that was already running may keep its own default size: insist on ours
        subprocess.run([self.tmux, "resize-window", "-t", self.name, "-x", "100", "-y", "32"], capture_output=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def capture(self) -> str:
        done = subprocess.run([self.tmux, "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return done.stdout

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if text in screen:
                self.shots += 1
                (self.out / f"screen-{self.shots:02d}.txt").write_text(screen)
                return screen
            time.sleep(0.1)
        (self.out / "screen-timeout.txt").write_text(screen)
        raise AssertionError(f"{text!r} not on the screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run([self.tmux, "kill-session", "-t", self.name], capture_output=True)


def test_ui_answers_shows_the_call_dials_and_quits(tmp_path: Path, test_output_dir: Path) -> None:
    tmux = Tmux(require_program("tmux"), test_output_dir)
    (tmp_path / "users.txt").write_text("alice:alicepw\nbob:bobpw\n")
    write_tone_wav(tmp_path / "tone1k.wav", 1000.0, 8.0)
    with Server(tmp_path) as srv:
        ui_log = tmp_path / "ui.log"
        args = [sys.executable, "-m", "leansip", "phone", *srv.args("tls"), "--user", "bob", "--password",
                "bobpw", "-v", "ui", "--dial", f"carol=sip:carol@127.0.0.1:{srv.ports['udp']}", "--log-file",
                str(ui_log)]
        marker = tmp_path / "ui.exit"
        tmux.start(f"cd {shlex.quote(str(tmp_path))} && PYTHONPATH={shlex.quote(str(REPO_ROOT))} "
                   f"{shlex.join(args)}; echo $? > {shlex.quote(str(marker))}; sleep 60")
        try:
            screen = tmux.wait_for("registered (expires in")
            assert "TLS  flow up" in screen and "Call         : idle" in screen
            assert "1  carol" in screen and screen.rstrip().endswith("q quit")

            alice = start_phone([*srv.args("udp"), "--user", "alice", "--password", "alicepw", "call", "bob",
                            "--play", str(tmp_path / "tone1k.wav"), "--hangup-after", "6", "--timeout", "15"],
                           tmp_path / "alice.log")
            screen = tmux.wait_for("incoming from sip:alice@")
            assert "press a to answer" in screen
            tmux.keys("a")
            screen = tmux.wait_for("in call with sip:alice@")
            assert "Secured      : NO (plain RTP)" in screen
            # the call timer runs; "00:02" shows from 2 s to alice's hang-up at 6 s (at 3 s a loaded machine's
            # screen polls missed the one second it showed)
            tmux.wait_for("00:02")
            screen = tmux.wait_for("call ended: remote hangup", timeout=10)
            assert "Call         : idle" in screen
            assert wait_exit(alice, 15) == 0, (tmp_path / "alice.log").read_text()

            tmux.keys("1")  # carol is not registered: the server answers 404 and the screen says so
            tmux.wait_for("call ended: rejected (404)")
            tmux.keys("c")
            tmux.wait_for("Call (URI or user")
            tmux.keys("-l", "dave")
            tmux.keys("Enter")
            screen = tmux.wait_for("2  dave", timeout=10)  # a called target joins the quick-dial list

            tmux.keys("q")
            deadline = time.monotonic() + 15
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert marker.exists(), tmux.capture()
            assert marker.read_text().strip() == "0"
            log = ui_log.read_text()
            assert "event=Unregistered" in log, log
        finally:
            tmux.kill()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
