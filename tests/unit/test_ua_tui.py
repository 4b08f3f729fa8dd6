"""The terminal UI's pure parts: render(state) -> lines, and keys -> commands / prompt edits."""

from __future__ import annotations

import pytest

from leansip.ua.tui import (
    HELP,
    Command,
    UiState,
    format_duration,
    handle_key,
    peer_display,
    remember_dialled,
    render,
)


def idle_state() -> UiState:
    return UiState(user="alice", aor="sip:alice@example.com", server="example.com:5061", transport="tls",
                   registration="registered (expires in 3600 s)", flow="up", sip_local="192.168.1.20:50122",
                   rtp_local="192.168.1.20:40000", sdp_address="203.0.113.7:40000",
                   stun="stun.example.com:3478 -> 203.0.113.7:40000 (mapped)",
                   quick_dial=[("bob", "sip:bob@example.com"), ("carol", "sip:carol@example.com")], clock="12:00:00")


def screen(state: UiState, width: int = 100, height: int = 30) -> str:
    lines = render(state, width, height)
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)
    return "\n".join(lines)


def test_idle_screen_shows_registration_addresses_stun_and_quick_dial() -> None:
    text = screen(idle_state())
    assert "sip:alice@example.com" in text and "12:00:00" in text
    assert "Registration : registered (expires in 3600 s)  (example.com:5061, TLS)" in text
    assert "SIP address  : 192.168.1.20:50122  TLS  flow up" in text
    assert "RTP address  : 192.168.1.20:40000  (SDP announces 203.0.113.7:40000)" in text
    assert "STUN         : stun.example.com:3478 -> 203.0.113.7:40000 (mapped)" in text
    assert "Call         : idle" in text
    assert "Secured      : -" in text
    assert "1  bob" in text and "2  carol" in text and "sip:carol@example.com" in text
    assert text.splitlines()[-1].strip() == HELP


def test_in_call_screen_shows_peer_duration_and_srtp() -> None:
    state = idle_state()
    state.call, state.peer, state.call_seconds, state.secured = "in call", "sip:bob@example.com", 75.4, True
    text = screen(state)
    assert "Call         : in call with sip:bob@example.com  01:15\n" in text
    assert "Secured      : yes (SRTP)" in text
    state.secured = False
    assert "Secured      : NO (plain RTP)" in screen(state)


def test_incoming_call_tells_which_keys_to_press() -> None:
    state = idle_state()
    state.call, state.peer = "incoming", "Bob <sip:bob@example.com>"
    assert "incoming from Bob <sip:bob@example.com>   -- press a to answer, h to refuse" in screen(state, 120)


def test_events_pane_shows_the_latest_that_fit_and_prompt_replaces_help() -> None:
    state = idle_state()
    for i in range(50):
        state.events.append(f"event number {i}")
    text = screen(state, 100, 30)
    assert "event number 49" in text and "event number 0\n" not in text
    state.prompt = "sip:da"
    last = render(state, 100, 30)[-1]
    assert last.startswith(" Call (URI or user") and last.endswith("sip:da_")


def test_narrow_and_short_terminals_still_fit() -> None:
    state = idle_state()
    state.quick_dial = [(f"user{i}", f"sip:user{i}@example.com") for i in range(9)]
    lines = render(state, 30, 12)
    assert len(lines) == 12 and all(len(line) <= 30 for line in lines)
    assert lines[-1].startswith(" 1-9 dial")
    assert any(line.endswith("~") for line in lines)  # cut lines say so


def test_no_quick_dial_entries_explains_how_to_get_some() -> None:
    state = idle_state()
    state.quick_dial = []
    assert "--dial NAME=URI" in screen(state)


def test_direct_mode_has_no_server_part() -> None:
    state = UiState(user="alice", aor="sip:alice@127.0.0.1", registration="direct mode (no server)",
                    sip_local="127.0.0.1:5072", rtp_local="127.0.0.1:40000", sdp_address="127.0.0.1:40000")
    text = screen(state)
    assert "Registration : direct mode (no server)\n" in text
    assert "SDP announces" not in text


@pytest.mark.parametrize(("key", "command"), [
    ("1", Command(action="dial", target="sip:bob@example.com")),
    ("2", Command(action="dial", target="sip:carol@example.com")),
    ("a", Command(action="answer")),
    ("h", Command(action="hangup")),
    ("q", Command(action="quit")),
    ("x", None),
])
def test_keys(key: str, command: Command | None) -> None:
    assert handle_key(idle_state(), key) == command


def test_missing_quick_dial_entry_is_a_message_not_a_call() -> None:
    state = idle_state()
    assert handle_key(state, "7") is None
    assert state.message == "no quick-dial entry 7"
    assert "no quick-dial entry 7" in render(state)[-1]
    handle_key(state, "x")
    assert state.message == ""  # the next key clears it


def test_call_prompt_editing() -> None:
    state = idle_state()
    assert handle_key(state, "c") is None and state.prompt == ""
    for ch in "dabe":
        assert handle_key(state, ch) is None  # letters are text here, not commands ("a" does not answer)
    handle_key(state, "\x7f")
    handle_key(state, "v")
    assert state.prompt == "dabv"
    assert handle_key(state, "\n") == Command(action="dial", target="dabv")
    assert state.prompt is None
    handle_key(state, "c")
    handle_key(state, "q")
    assert handle_key(state, "\x1b") is None and state.prompt is None  # Esc cancels, q was only text
    handle_key(state, "c")
    assert handle_key(state, "\n") is None  # empty prompt: nothing to call


def test_remember_dialled_keeps_nine_without_duplicates() -> None:
    state = UiState()
    for i in range(12):
        remember_dialled(state, f"sip:u{i}@example.com")
    remember_dialled(state, "sip:u11@example.com")
    assert len(state.quick_dial) == 9
    assert state.quick_dial[0] == ("u3", "sip:u3@example.com")
    assert state.quick_dial[-1] == ("u11", "sip:u11@example.com")


@pytest.mark.parametrize(("value", "shown"), [
    ("<sip:alice@127.0.0.1>;tag=27e27c34", "sip:alice@127.0.0.1"),
    ('"Alice A." <sip:alice@example.com>;tag=1', "Alice A. <sip:alice@example.com>"),
    ("sip:bob@example.com", "sip:bob@example.com"),
    ("sip:bob@example.com;tag=9", "sip:bob@example.com"),
])
def test_peer_display(value: str, shown: str) -> None:
    assert peer_display(value) == shown


@pytest.mark.parametrize(("seconds", "text"), [(0, "00:00"), (59.9, "00:59"), (61, "01:01"), (3725, "1:02:05")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_command_checks_its_fields() -> None:
    with pytest.raises(ValueError):
        Command(action="dial")
    with pytest.raises(ValueError):
        Command(action="answer", target="x")
    with pytest.raises(ValueError):
        Command(action="explode")


def test_keypad_and_transfer_during_a_call() -> None:
    state = idle_state()
    state.call, state.peer = "in call", "sip:bob@example.com"
    assert "0-9 * # keypad" in render(state)[-1]
    # in a call the digit keys are DTMF, not quick-dial
    assert [handle_key(state, k) for k in "1#*0"] == [Command(action="dtmf", target=k) for k in "1#*0"]
    state.digits = "1#*0"
    assert "DTMF 1#*0" in screen(state)
    assert handle_key(state, "t") is None and state.prompt == "" and state.prompt_kind == "transfer"
    assert "Transfer to (URI or user" in render(state)[-1]
    for ch in "carol":
        handle_key(state, ch)
    assert handle_key(state, "\n") == Command(action="transfer", target="carol")
    # "t" is only a key in a call; "c" always opens a call prompt
    idle = idle_state()
    assert handle_key(idle, "t") is None and idle.prompt is None
    handle_key(idle, "c")
    assert idle.prompt_kind == "call" and handle_key(idle, "\n") is None
    with pytest.raises(ValueError):
        Command(action="dtmf")
