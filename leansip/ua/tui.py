"""``leansip phone ... ui``: a full-screen terminal phone (curses, stdlib only).

Theory of operation. Three parts, so that the screen can be tested without a terminal:

* :class:`UiState` -- everything shown, as plain values; :func:`snapshot` fills it from the running
  :class:`~leansip.ua.phone.Phone` (registration, addresses, STUN mapping, call state and SRTP);
* :func:`render` -- ``render(state, width, height) -> list[str]``, pure: the lines of the screen;
* :func:`handle_key` -- pure too: a key and the state give a :class:`Command` (dial, answer, hang up, quit)
  or edit the "call:" prompt.

:func:`run_ui` is the thin curses + asyncio shell: stdin is watched with ``loop.add_reader`` (no polling
thread), phone events and a 1 s tick (for the call timer) trigger redraws, and quitting hangs up and
unregisters before the terminal is restored.

Keys: ``1``-``9`` dial a quick-dial entry, ``c`` asks for a URI or user name to call, ``a`` answers the ringing
call, ``h`` hangs up (or refuses a ringing call), ``q`` quits. During a call the keys ``0``-``9``, ``*``, ``#`` are
a DTMF keypad and ``t`` asks for a URI or user name to transfer the call to (blind, REFER). At a prompt, Enter
confirms, Esc cancels.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import curses
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

from leansip.ua.phone import MediaFailed, Phone, PhoneCall, PhoneError
from leansip.ua.useragent import (
    CallEnded,
    CallState,
    DtmfReceived,
    IncomingCall,
    Registered,
    RegistrationFailed,
    TransferProgress,
    Unregistered,
)

__all__ = ["UiState", "Command", "render", "handle_key", "snapshot", "run_ui", "format_duration", "peer_display",
           "remember_dialled", "HELP"]

log = logging.getLogger("leansip.phone.ui")

HELP = "1-9 dial   c call   a answer   h hang up   q quit"
IN_CALL_HELP = "0-9 * # keypad   t transfer   h hang up   q quit"
MAX_QUICK_DIAL = 9


@dataclass(slots=True)
class UiState:
    """What the screen shows. Plain values only: :func:`render` must not reach into the phone."""

    user: str = ""
    aor: str = ""
    server: str | None = None  # "host:port", None in direct mode
    transport: str = "udp"
    registration: str = "not registered"
    flow: str = ""  # TCP/TLS: up / reconnecting; empty over UDP
    sip_local: str = ""
    rtp_local: str = ""
    sdp_address: str = ""  # what our SDP announces (the STUN mapping when there is one)
    stun: str = "off"
    call: str = "idle"  # idle, calling, ringing (them), incoming (us), connecting, in call, hanging up
    peer: str | None = None
    call_seconds: float | None = None
    secured: bool | None = None  # SRTP in use for the current call; None: no media
    quick_dial: list[tuple[str, str]] = field(default_factory=list)
    prompt: str | None = None  # text typed at the prompt; None when not prompting
    prompt_kind: str = "call"  # what Enter does with it: "call" or "transfer"
    digits: str = ""  # DTMF sent and received in this call, as typed/heard
    message: str = ""
    events: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    clock: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """What a key asks the phone to do: ``dial`` or ``transfer`` (with ``target``), ``dtmf`` (with the digit
    as ``target``), ``answer``, ``hangup`` or ``quit``."""

    action: str
    target: str = ""

    def __post_init__(self) -> None:
        if self.action not in ("dial", "transfer", "dtmf", "answer", "hangup", "quit"):
            raise ValueError(f"unknown UI action {self.action!r}")
        if (self.action in ("dial", "transfer", "dtmf")) != bool(self.target):
            raise ValueError("dial, transfer and dtmf need a target, the others none")


def peer_display(value: str) -> str:
    """A From/To value or URI as a person reads it: display name and URI, no tag or angle brackets."""
    text = value.strip()
    if "<" in text and ">" in text:
        name = text[: text.index("<")].strip().strip('"')
        uri = text[text.index("<") + 1 : text.index(">")]
        return f"{name} <{uri}>" if name else uri
    return text.split(";", 1)[0]


def format_duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- drawing


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def _secured(secured: bool | None) -> str:
    if secured is None:
        return "-"
    return "yes (SRTP)" if secured else "NO (plain RTP)"


def render(state: UiState, width: int = 80, height: int = 24) -> list[str]:
    """The screen as ``height`` lines of at most ``width`` characters (pure; see the module docstring)."""
    width = max(width, 20)
    rule = "-" * width
    title = f" leansip phone  {state.aor or state.user}"
    if state.clock:
        title = title.ljust(width - len(state.clock) - 1) + state.clock
    reg = state.registration
    if state.server is not None:
        reg += f"  ({state.server}, {state.transport.upper()})"
    sip = f"{state.sip_local}  {state.transport.upper()}"
    if state.flow:
        sip += f"  flow {state.flow}"
    rtp = state.rtp_local
    if state.sdp_address and state.sdp_address != state.rtp_local:
        rtp += f"  (SDP announces {state.sdp_address})"
    call = state.call
    if state.peer and state.call != "idle":
        preposition = "from" if state.call == "incoming" else "with" if state.call == "in call" else "to"
        call += f" {preposition} {state.peer}"
    if state.call_seconds is not None:
        call += f"  {format_duration(state.call_seconds)}"
    if state.call == "incoming":
        call += "   -- press a to answer, h to refuse"
    if state.digits and state.call != "idle":
        call += f"   DTMF {state.digits}"
    top = [
        title,
        rule,
        f" Registration : {reg}",
        f" SIP address  : {sip}",
        f" RTP address  : {rtp}",
        f" STUN         : {state.stun}",
        rule,
        f" Call         : {call}",
        f" Secured      : {_secured(state.secured)}",
        rule,
        " Quick dial",
    ]
    if state.quick_dial:
        top += [f"  {i}  {name:<12} {uri}" for i, (name, uri) in enumerate(state.quick_dial[:MAX_QUICK_DIAL], 1)]
    else:
        top.append("  (none yet: use --dial NAME=URI, or call someone with c)")
    top += [rule, " Events"]
    bottom = [rule]
    if state.prompt is not None:
        verb = "Transfer to" if state.prompt_kind == "transfer" else "Call"
        bottom.append(f" {verb} (URI or user, Enter to confirm, Esc to cancel): {state.prompt}_")
    else:
        keys = IN_CALL_HELP if state.call == "in call" else HELP
        bottom.append(f" {state.message}" if state.message else f" {keys}")
    room = height - len(top) - len(bottom)
    events = list(state.events)[-room:] if room > 0 else []
    lines = top + [f"  {e}" for e in events] + [""] * max(0, room - len(events)) + bottom
    if len(lines) > height:  # a tiny terminal: keep the head and the key line
        lines = lines[: height - 1] + lines[-1:]
    return [_fit(line, width) for line in lines]


# --------------------------------------------------------------------------- keys

KEY_ENTER = "\n"
KEY_ESC = "\x1b"
KEY_BACKSPACE = "\x7f"


def handle_key(state: UiState, key: str) -> Command | None:
    """Apply one key: edit the prompt in ``state`` or return the :class:`Command` it stands for."""
    if state.prompt is not None:
        if key in ("\n", "\r"):
            target = state.prompt.strip()
            state.prompt = None
            action = "transfer" if state.prompt_kind == "transfer" else "dial"
            return Command(action=action, target=target) if target else None
        if key == KEY_ESC:
            state.prompt = None
        elif key in (KEY_BACKSPACE, "\b", "KEY_BACKSPACE"):
            state.prompt = state.prompt[:-1]
        elif len(key) == 1 and key.isprintable():
            state.prompt += key
        return None
    state.message = ""
    if state.call == "in call" and len(key) == 1 and key in "0123456789*#":
        return Command(action="dtmf", target=key)  # the keypad during a call
    if state.call == "in call" and key == "t":
        state.prompt = ""
        state.prompt_kind = "transfer"
        return None
    if key in "123456789" and len(key) == 1:
        index = int(key) - 1
        if index < len(state.quick_dial):
            return Command(action="dial", target=state.quick_dial[index][1])
        state.message = f"no quick-dial entry {key}"
        return None
    if key == "c":
        state.prompt = ""
        state.prompt_kind = "call"
        return None
    if key == "a":
        return Command(action="answer")
    if key == "h":
        return Command(action="hangup")
    if key == "q":
        return Command(action="quit")
    return None


def remember_dialled(state: UiState, target: str) -> None:
    """Put a called target into the quick-dial list (most recent last, at most 9 entries, no duplicates)."""
    if any(uri == target for _name, uri in state.quick_dial):
        return
    name = target.split(":", 1)[-1].split("@", 1)[0] or target
    state.quick_dial.append((name, target))
    del state.quick_dial[:-MAX_QUICK_DIAL]


# --------------------------------------------------------------------------- phone -> state

_CALL_NAMES = {
    CallState.CALLING: "calling",
    CallState.EARLY: "ringing",
    CallState.CANCELLING: "cancelling",
    CallState.INCOMING: "incoming",
    CallState.ANSWERED: "connecting",  # our 200 OK sent, its ACK not yet here
    CallState.CONFIRMED: "in call",
    CallState.TERMINATING: "hanging up",
}


def snapshot(phone: Phone, state: UiState, now: float) -> None:
    """Copy what the phone knows now into ``state`` (registration text is kept from the events)."""
    ua = phone.ua
    assert ua is not None
    o = phone.options
    state.user = o.user
    state.aor = ua.config.aor
    state.transport = o.transport
    state.server = f"{o.server_name or o.server[0]}:{o.server[1]}" if o.server is not None else None
    if o.server is None:
        state.registration = "direct mode (no server)"
    state.flow = phone.flow_state if phone.stream is not None or o.transport != "udp" else ""
    host, port = phone.address
    state.sip_local = f"{host}:{port}"
    state.rtp_local = f"{o.local_host}:{phone.rtp.port}" if phone.rtp is not None else ""
    address, rtp_port = phone.advertised_media
    state.sdp_address = f"{address}:{rtp_port}"
    client = phone.stun_client
    if client is None:
        state.stun = "off"
    else:
        server = f"{client.server[0]}:{client.server[1]}"
        mapped = f"{client.mapped[0]}:{client.mapped[1]}" if client.mapped else "no mapping"
        state.stun = f"{server} -> {mapped} ({client.state})"
    call = ua.call
    state.call = _CALL_NAMES.get(call.state, "idle") if call is not None else "idle"
    state.peer = peer_display(phone.call_peer) if phone.call_peer and state.call != "idle" else None
    answered = phone.call_answered_at
    state.call_seconds = now - answered if answered is not None and state.call in ("in call", "hanging up") \
        else None
    session = phone.media_session
    state.secured = session.srtp_active if session is not None and state.call != "idle" else None
    if state.call == "idle":
        state.digits = ""
    state.clock = time.strftime("%H:%M:%S")


# --------------------------------------------------------------------------- the curses shell


class _PaneHandler(logging.Handler):
    """Log records into the events pane (the screen belongs to curses; stderr would tear it)."""

    def __init__(self, state: UiState, changed: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self.state = state
        self.changed = changed

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        self.state.events.append(f"{stamp} {record.getMessage().splitlines()[0]}")
        self.changed()


_SPECIAL_KEYS = {curses.KEY_BACKSPACE: KEY_BACKSPACE, curses.KEY_ENTER: KEY_ENTER, 10: KEY_ENTER, 13: KEY_ENTER,
                 27: KEY_ESC, 127: KEY_BACKSPACE, 8: KEY_BACKSPACE}


async def run_ui(phone: Phone, args: argparse.Namespace) -> int:
    """Run the screen until ``q``; returns the exit status (0, or 1 when the registration failed at start)."""
    from leansip.ua.cli import EXIT_OK, _target_uri, _unregister

    loop = asyncio.get_running_loop()
    state = UiState(quick_dial=list(args.dial)[:MAX_QUICK_DIAL])
    ringing: PhoneCall | None = None
    background: set[asyncio.Task[object]] = set()

    def spawn(coro: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[object] = loop.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    async def guarded(what: str, coro: Awaitable[object]) -> None:
        try:
            await coro
        except (PhoneError, ValueError, OSError) as exc:
            state.message = f"{what}: {exc}"
            redraw()
    quit_requested = asyncio.Event()
    dirty = asyncio.Event()
    redraw = dirty.set

    root = logging.getLogger("leansip")
    saved = (root.handlers[:], root.level)
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    pane = _PaneHandler(state, redraw)
    root.addHandler(pane)
    root.setLevel(logging.INFO if not args.verbose else logging.DEBUG)
    pane.setLevel(logging.INFO)  # SIP dumps (-v) go to --log-file only: they would flood the pane

    screen = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        screen.keypad(True)
        screen.nodelay(True)
        with contextlib.suppress(curses.error):
            curses.curs_set(0)

        def command(cmd: Command) -> None:
            nonlocal ringing
            ua = phone.ua
            assert ua is not None
            if cmd.action == "quit":
                quit_requested.set()
            elif cmd.action == "dial":
                if ua.in_call:
                    state.message = "already in a call (h hangs up)"
                    return
                try:
                    target = _target_uri(cmd.target, args)
                except ValueError as exc:
                    state.message = f"cannot call {cmd.target!r}: {exc}"
                    return
                state.digits = ""
                spawn(guarded(f"cannot call {cmd.target!r}", phone.dial(target)))
                remember_dialled(state, target)
            elif cmd.action == "answer":
                if ringing is None or ua.call is None or ua.call.state is not CallState.INCOMING:
                    state.message = "no ringing call to answer"
                    return
                call, ringing = ringing, None
                state.digits = ""
                spawn(guarded("answer failed", call.answer()))
            elif cmd.action == "hangup":
                if not ua.in_call:
                    state.message = "no call to hang up"
                    return
                phone.hangup()
            elif cmd.action == "dtmf" and phone.current is not None:
                try:
                    phone.current.send_dtmf(cmd.target)
                    state.digits += cmd.target
                except PhoneError as exc:
                    state.message = f"DTMF: {exc}"
            elif cmd.action == "transfer" and phone.current is not None:
                try:
                    target = _target_uri(cmd.target, args)
                except ValueError as exc:
                    state.message = f"cannot transfer to {cmd.target!r}: {exc}"
                    return
                state.message = f"transferring to {target} ..."
                spawn(guarded("transfer failed", phone.current.transfer(target)))

        def on_key() -> None:
            while True:
                try:
                    ch = screen.get_wch()
                except curses.error:
                    break  # no more input
                if isinstance(ch, int):
                    if ch == curses.KEY_RESIZE:
                        redraw()
                        continue
                    key = _SPECIAL_KEYS.get(ch, "")
                else:
                    key = _SPECIAL_KEYS.get(ord(ch), ch) if len(ch) == 1 else ch
                if key:
                    cmd = handle_key(state, key)
                    if cmd is not None:
                        command(cmd)
                    redraw()

        async def events() -> None:
            nonlocal ringing
            while True:
                event = await phone.next_event()
                if isinstance(event, Registered):
                    state.registration = f"registered (expires in {event.expires} s)"
                elif isinstance(event, RegistrationFailed):
                    state.registration = f"FAILED: {event.status} {event.reason}"
                elif isinstance(event, Unregistered):
                    state.registration = "not registered"
                elif isinstance(event, IncomingCall):
                    ringing = phone.calls.get(event.call_id) if event.replaces is None else None
                    if ringing is not None:
                        curses.beep()
                elif isinstance(event, CallEnded):
                    if ringing is not None and ringing.id == event.call_id:
                        ringing = None
                    state.message = f"call ended: {event.reason}" + (f" ({event.status})" if event.status else "")
                elif isinstance(event, DtmfReceived):
                    state.digits += event.digit
                elif isinstance(event, TransferProgress) and event.final:
                    state.message = ("transfer done" if event.succeeded else
                                     f"transfer failed: {event.status} {event.reason}")
                elif isinstance(event, MediaFailed):
                    state.message = f"media failed: {event.reason}"
                redraw()

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1.0)
                redraw()

        def draw() -> None:
            snapshot(phone, state, loop.time())
            height, width = screen.getmaxyx()
            screen.erase()
            for y, line in enumerate(render(state, width - 1, height)):
                with contextlib.suppress(curses.error):
                    screen.addstr(y, 0, line)
            screen.refresh()

        loop.add_reader(sys.stdin.fileno(), on_key)
        tasks = [loop.create_task(events()), loop.create_task(ticker())]
        if phone.options.server is not None:
            state.registration = "registering..."
            phone.register(args.expires)
        draw()
        while not quit_requested.is_set():
            waiter = loop.create_task(dirty.wait())
            quitter = loop.create_task(quit_requested.wait())
            await asyncio.wait({waiter, quitter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            quitter.cancel()
            dirty.clear()
            draw()
        # leaving: hang up, unregister, and show it while it happens
        loop.remove_reader(sys.stdin.fileno())
        state.message = "quitting: hanging up and unregistering..."
        draw()
        for task in tasks:
            task.cancel()
        assert phone.ua is not None
        if phone.ua.in_call:
            phone.hangup()
            end = loop.time() + 5.0
            while (left := end - loop.time()) > 0:
                if isinstance(await phone.next_event(left), CallEnded):
                    break
        await _unregister(phone)
        return EXIT_OK
    finally:
        with contextlib.suppress(curses.error):
            screen.keypad(False)
            curses.nocbreak()
            curses.echo()
            curses.endwin()
        root.handlers[:], _level = saved
        root.setLevel(_level)
