"""``leansip phone``: register, call or answer from the command line, with audio files (WAV, FLAC, OGG, MP3).

``main(argv) -> int`` is called by ``leansip phone ...`` with the arguments after ``phone``. Each command is
a short script over :class:`leansip.ua.phone.Phone` and its events; the exit status tells scripts what
happened (see :data:`EPILOG`). One line per event goes to stderr (``-v`` adds the SIP messages).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from leansip.media.audiofile import AudioFileError, check_writable
from leansip.media.dtmf import DtmfError, check_digits
from leansip.ua.phone import CallFailed, MediaFailed, Phone, PhoneCall, PhoneError, PhoneOptions
from leansip.ua.resolve import ResolveError, parse_host_port, resolve_server
from leansip.ua.useragent import (
    CallEnded,
    DtmfReceived,
    Registered,
    RegistrationFailed,
    TransferRequested,
    Unregistered,
)

__all__ = ["main", "EXIT_OK", "EXIT_REGISTRATION", "EXIT_USAGE", "EXIT_REJECTED", "EXIT_TIMEOUT", "EXIT_MEDIA"]

EXIT_OK = 0
EXIT_REGISTRATION = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_TIMEOUT = 4
EXIT_MEDIA = 5

EPILOG = """\
exit status:
  0  registered / call completed (answered and hung up by either side)
  1  registration failed (bad credentials, registrar error or no answer from the registrar)
  2  usage error
  3  call rejected (busy, declined, not found, unavailable ...)
  4  timeout: no answer, no incoming call, or no response at all
  5  media negotiation failed (no common codec, SRTP required by one side only)

examples:
  leansip phone --server 127.0.0.1:5080 --user alice --password pw register --expires 300 --hold 10
  leansip phone --server example.com --transport tls --user alice --password pw ui --dial bob=sip:bob@example.com
  leansip phone --server 127.0.0.1:5081 --transport tls --ca-file var/leansip-dev-cert.pem --user bob ... answer
  leansip phone --server 127.0.0.1:5080 --user alice --password pw call bob --play in.wav --hangup-after 10
  leansip phone --server 127.0.0.1:5080 --user bob --password pw answer --record out.wav --max-calls 1
  leansip phone --user alice --local-port 5072 call sip:bob@127.0.0.1:5074 --play in.wav   (direct, no server)
  leansip phone --server 127.0.0.1:5080 --user alice --password pw call ivr --dtmf 1234# --hangup-after 8
  leansip phone --server 127.0.0.1:5080 --user bob --password pw transfer carol --after 5       (answer, then
      transfer the caller to carol; --attended talks to carol first; --call PEER dials instead of answering)
"""

log = logging.getLogger("leansip.phone")
REGISTER_TIMEOUT = 40.0  # a little more than Timer F (32 s): the UA reports the timeout itself


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"leansip phone: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _server(text: str) -> tuple[str, int | None]:
    """HOST or HOST:PORT; a name without a port is located with DNS SRV (RFC 3263)."""
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HOST[:PORT], got {text!r} ({exc})") from None


def _dial_entry(text: str) -> tuple[str, str]:
    name, sep, uri = text.partition("=")
    if not sep or not name.strip() or not uri.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=URI, got {text!r}")
    return name.strip(), uri.strip()


def _transport(args: argparse.Namespace) -> str:
    """--transport, except that a sips: target needs TLS (RFC 3261 26.2.2)."""
    target = getattr(args, "target", None) or ""
    if target.startswith("sips:"):
        return "tls"
    return str(args.transport)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="leansip phone", description="SIP softphone: register, call, answer; audio from/to files.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", type=_server,
                   help="registrar/proxy HOST[:PORT]; a name without port is looked up with DNS SRV "
                        "(_sip._udp, _sip._tcp, _sips._tcp); without --server: direct mode")
    p.add_argument("--user", required=True, help="user name (AOR user part and digest username)")
    p.add_argument("--password", help="digest password")
    p.add_argument("--realm", help="domain of our address-of-record (default: the server's host)")
    p.add_argument("--local-host", default="127.0.0.1", help="address to bind and advertise (default 127.0.0.1)")
    p.add_argument("--local-port", type=int, default=0, help="SIP UDP port (default: any free port)")
    p.add_argument("--rtp-port", type=int, default=0, help="RTP port, even; RTCP uses the next (default: any)")
    p.add_argument("--srtp", choices=("off", "optional", "mandatory"), default="off",
                   help="SRTP with SDES keys: off, optional (best effort) or mandatory")
    p.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp",
                   help="SIP transport to the server (default udp; a sips: target implies tls). TCP/TLS keep "
                        "one connection to the server that also carries the calls to us")
    p.add_argument("--ca-file", type=Path, help="TLS: trust this CA / certificate (PEM) for the server")
    p.add_argument("--insecure", action="store_true", help="TLS: do not verify the server's certificate")
    p.add_argument("--keepalive", type=float, metavar="SECONDS",
                   help="keep-alive interval to the server (default 25 over UDP, 120 over TCP/TLS; 0: off)")
    p.add_argument("--keepalive-method", choices=("crlf", "options"), default="crlf",
                   help="UDP keep-alive: CRLFCRLF (RFC 5626) or an OPTIONS request (default crlf)")
    p.add_argument("--stun", type=_host_port, metavar="HOST:PORT",
                   help="STUN server: learn the public RTP address (RFC 5389) and announce it in SDP")
    p.add_argument("--codec", action="append", choices=("PCMU", "PCMA"),
                   help="codec in preference order; repeat for more (default PCMU, PCMA)")
    p.add_argument("--sound-card", action="store_true", help="also play received audio (needs sounddevice)")
    p.add_argument("--dtmf-mode", choices=("auto", "rfc4733", "info"), default="auto",
                   help="how --dtmf digits go: RFC 4733 telephone-events when the call agreed on them, else SIP "
                        "INFO (auto, the default), or always one of the two")
    p.add_argument("--webrtc", action="store_true",
                   help="offer WebRTC media in our calls (ICE, DTLS-SRTP, Opus; needs aiortc). A WebRTC offer "
                        "from a browser is answered so in any case")
    p.add_argument("--no-follow-transfer", action="store_true",
                   help="refuse transfers (REFER) instead of calling the target")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v: SIP messages too")
    p.add_argument("-q", "--quiet", action="store_true", help="no event lines")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("register", help="register, stay registered for --hold seconds, unregister")
    r.add_argument("--expires", type=int, default=3600, help="requested expiry in seconds (default 3600)")
    r.add_argument("--hold", type=float, default=0.0, help="seconds to stay registered before unregistering")

    c = sub.add_parser("call", help="call TARGET (user name via the server, or a full sip: URI)")
    c.add_argument("target")
    c.add_argument("--play", type=Path, help="audio file to send: WAV, FLAC, OGG, MP3 ... at any rate and "
                                             "channel count (converted to 8 kHz mono)")
    c.add_argument("--record", type=Path, help="file to write the received audio to: .wav or .flac")
    c.add_argument("--hangup-after", type=float, default=10.0, help="seconds after answer to hang up (10)")
    c.add_argument("--timeout", type=float, default=30.0, help="give up (CANCEL) when unanswered after S (30)")
    c.add_argument("--register", action="store_true", help="register before calling (to be reachable)")
    c.add_argument("--hold-at", type=float, help="put the call on hold this many seconds after answer")
    c.add_argument("--resume-at", type=float, help="resume the held call this many seconds after answer")
    _dtmf_options(c)

    a = sub.add_parser("answer", help="wait for calls and answer them")
    a.add_argument("--play", type=Path, help="audio file to send (WAV, FLAC, OGG, MP3 ...)")
    a.add_argument("--record", type=Path, help="file to write the received audio to: .wav or .flac")
    a.add_argument("--auto-answer-after", type=float, default=0.0, help="ring for S seconds first (0)")
    a.add_argument("--max-calls", type=int, default=1, help="exit after this many calls (1)")
    a.add_argument("--timeout", type=float, default=60.0, help="give up waiting for a call after S (60)")
    a.add_argument("--expires", type=int, default=3600, help="registration expiry when --server is given")
    a.add_argument("--reject", type=int, metavar="STATUS", help="refuse calls with this status instead")
    a.add_argument("--hangup-after", type=float, help="hang up S seconds after answering (default: the caller does)")
    _dtmf_options(a)

    t = sub.add_parser("transfer", help="get a call (--call PEER, or answer one), then transfer it to TARGET")
    t.add_argument("target", help="who the call goes to (user name via the server, or a sip: URI)")
    t.add_argument("--call", metavar="PEER", help="call PEER first (default: wait for a call and answer it)")
    t.add_argument("--after", type=float, default=2.0, help="seconds to talk before transferring (2)")
    t.add_argument("--attended", action="store_true",
                   help="attended transfer: hold the call, call TARGET, then hand the call over (Replaces)")
    t.add_argument("--consult", type=float, default=1.0, help="attended: seconds to talk to TARGET first (1)")
    t.add_argument("--play", type=Path, help="audio file to send during the calls")
    t.add_argument("--record", type=Path, help="file to write the received audio to: .wav or .flac")
    t.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each step (30)")

    u = sub.add_parser("ui", help="full-screen terminal phone (curses): quick-dial, call, answer, hang up")
    u.add_argument("--dial", type=_dial_entry, action="append", default=[], metavar="NAME=URI",
                   help="quick-dial entry (keys 1-9 in order); repeat for more")
    u.add_argument("--play", type=Path, help="audio file to send during calls (WAV, FLAC, OGG, MP3 ...)")
    u.add_argument("--record", type=Path, help="file to write the received audio to: .wav or .flac")
    u.add_argument("--expires", type=int, default=3600, help="registration expiry when --server is given")
    u.add_argument("--log-file", type=Path, help="also write the event log here (the screen shows the last lines)")
    return p


def _dtmf_argument(text: str) -> str:
    try:
        return check_digits(text)
    except DtmfError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dtmf_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtmf", type=_dtmf_argument, metavar="DIGITS",
                   help="send these digits (0-9 * # A-D) after the answer; digits received are printed on stdout")
    p.add_argument("--dtmf-delay", type=float, default=1.0, help="seconds after the answer to send --dtmf (1)")


def _target_uri(target: str, args: argparse.Namespace) -> str:
    if target.startswith(("sip:", "sips:")):
        return target
    if args.server is None:
        raise ValueError("without --server the target must be a full sip: URI")
    host, port = args.server
    domain = args.realm or host
    if "@" in target:
        return f"sip:{target}"
    uri_host = f"[{domain}]" if ":" in domain else domain  # an IPv6 address in a URI is bracketed
    return f"sip:{target}@{uri_host}" + (f":{port}" if domain == host and port and port != 5060 else "")


def _no_credentials(status: int | None, password: str | None) -> bool:
    """A 401/407 to a phone that has no password: say so, instead of a bare status the user must decode."""
    if status not in (401, 407) or password is not None:
        return False
    print(f"leansip phone: error: the server asked for credentials ({status}) and none were given: add "
          "--password (and --user if the server knows you by another name)", file=sys.stderr)
    return True


async def _register(phone: Phone, expires: int) -> int:
    phone.register(expires)
    while True:
        event = await phone.next_event(REGISTER_TIMEOUT)
        if event is None or isinstance(event, RegistrationFailed):
            if event is not None:
                _no_credentials(event.status, phone.options.password)
            return EXIT_REGISTRATION
        if isinstance(event, Registered):
            return EXIT_OK


async def _unregister(phone: Phone) -> None:
    assert phone.ua is not None
    if not phone.ua.registered:
        return
    phone.unregister()
    deadline = asyncio.get_running_loop().time() + 5.0
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        event = await phone.next_event(left)
        if event is None or isinstance(event, Unregistered | RegistrationFailed):
            return


async def _wait_end(phone: Phone, timeout: float) -> CallEnded | None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        event = await phone.next_event(left)
        if isinstance(event, CallEnded):
            return event
    return None


def _status_exit(ended: CallEnded) -> int:
    if ended.reason == "timeout":
        return EXIT_TIMEOUT
    if ended.status in (488, 606):
        return EXIT_MEDIA
    return EXIT_REJECTED


async def _cmd_register(phone: Phone, args: argparse.Namespace) -> int:
    code = await _register(phone, args.expires)
    if code != EXIT_OK:
        return code
    if args.hold > 0:
        await _drain(phone, args.hold)
    await _unregister(phone)
    return EXIT_OK


async def _drain(phone: Phone, seconds: float) -> None:
    """Let time pass while the phone keeps working (refreshes, events are logged by the phone)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        await phone.next_event(left)


def _print_digit(event: DtmfReceived) -> None:
    """Received digits go to stdout, one line each, for scripts (the event log is on stderr)."""
    print(f"DTMF {event.digit} {event.duration_ms}ms {event.via}", flush=True)


def _live(phone: Phone) -> list[PhoneCall]:
    return [c for c in phone.calls.values() if c.ended is None]


async def _talk(phone: Phone, *, hangup_after: float | None, dtmf: str | None, dtmf_delay: float,
                actions: list[tuple[float, str]] | None = None) -> tuple[CallEnded | None, bool]:
    """Stay in the call (and in the call a transfer replaces it with) until no call is left: hang the current one
    up ``hangup_after`` seconds after the first answer, send ``dtmf`` ``dtmf_delay`` seconds after it, print the
    digits that come. Returns (the last CallEnded, whether media failed)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    todo = sorted(actions or [])
    if dtmf:
        todo.append((dtmf_delay, "dtmf"))
    if hangup_after is not None:
        todo.append((hangup_after, "hangup"))
    todo.sort()
    last: CallEnded | None = None
    media_failed = False
    hung_up = False
    while _live(phone):
        left = (start + todo[0][0] - loop.time()) if todo else None
        if left is not None and left <= 0:
            _, name = todo.pop(0)
            current = phone.current
            if current is None or current.ended is not None:
                continue
            try:
                if name == "hangup":
                    hung_up = True
                    for call in _live(phone):
                        call.hangup()
                elif name == "dtmf":
                    assert dtmf is not None
                    way = current.send_dtmf(dtmf)
                    log.info("event=dtmf_sent digits=%s via=%s", dtmf, way)
                else:
                    current.hold(name == "hold")
            except PhoneError as exc:
                log.info("event=%s_failed reason=%r", name, str(exc))
            continue
        if hung_up and left is None:
            left = 40.0  # BYE sent: its answer (or Timer F) ends the call
        event = await phone.next_event(left)
        if event is None and hung_up and left == 40.0:
            break
        if isinstance(event, MediaFailed):
            media_failed = True
        elif isinstance(event, DtmfReceived):
            _print_digit(event)
        elif isinstance(event, TransferRequested) and not phone.options.follow_transfers:
            asked = phone.calls.get(event.call_id)
            if asked is not None:
                asked.decline_transfer(603)  # --no-follow-transfer: the transferor hears 603 Decline
        elif isinstance(event, CallEnded):
            last = event
    return last, media_failed


async def _cmd_call(phone: Phone, args: argparse.Namespace) -> int:
    target = _target_uri(args.target, args)
    if args.register:
        code = await _register(phone, 3600)
        if code != EXIT_OK:
            return code
    call = await phone.dial(target)
    if not await call.wait_established(args.timeout):
        if call.ended is None:  # no answer in time: CANCEL
            call.hangup()
            await call.wait_ended(40.0)
            return EXIT_TIMEOUT
        assert call.ended is not None
        _no_credentials(call.ended.status, args.password)
        return EXIT_MEDIA if call.media_failure else _status_exit(call.ended)
    actions = [(t, name) for t, name in ((args.hold_at, "hold"), (args.resume_at, "resume")) if t is not None]
    ended, media_failed = await _talk(phone, hangup_after=args.hangup_after, dtmf=args.dtmf,
                                      dtmf_delay=args.dtmf_delay, actions=actions)
    if media_failed:
        return EXIT_MEDIA
    return EXIT_OK if ended is not None else EXIT_TIMEOUT


async def _cmd_answer(phone: Phone, args: argparse.Namespace) -> int:
    if args.server is not None:
        code = await _register(phone, args.expires)
        if code != EXIT_OK:
            return code
    calls = 0
    result = EXIT_OK
    try:
        while calls < args.max_calls:
            call = await phone.next_call(args.timeout)
            if call is None:
                return EXIT_TIMEOUT
            if args.reject:
                call.reject(args.reject)
                calls += 1
                result = EXIT_REJECTED
                continue
            if args.auto_answer_after > 0 and await call.wait_ended(args.auto_answer_after) is not None:
                calls += 1  # the caller gave up while it rang
                result = EXIT_TIMEOUT
                continue
            try:
                await call.answer()
            except CallFailed:
                calls += 1
                result = EXIT_MEDIA
                continue
            except PhoneError:  # it ended while we were answering
                calls += 1
                result = EXIT_TIMEOUT
                continue
            ended, media_failed = await _talk(phone, hangup_after=args.hangup_after, dtmf=args.dtmf,
                                              dtmf_delay=args.dtmf_delay)
            calls += 1
            result = EXIT_MEDIA if media_failed else EXIT_OK if ended is not None and ended.reason in (
                "remote hangup", "local hangup", "replaced") else EXIT_TIMEOUT
    finally:
        await _unregister(phone)
    return result


async def _cmd_transfer(phone: Phone, args: argparse.Namespace) -> int:
    """Get a call (dial ``--call`` or answer the first one), talk ``--after`` seconds, transfer it to TARGET
    (blind, or ``--attended``: hold it, call TARGET, then REFER with Replaces), report the outcome."""
    target = _target_uri(args.target, args)
    if args.server is not None:
        code = await _register(phone, 3600)
        if code != EXIT_OK:
            return code
    try:
        if args.call:
            try:
                call = await phone.call(_target_uri(args.call, args), timeout=args.timeout)
            except CallFailed as exc:
                if not _no_credentials(exc.status, args.password):
                    print(f"leansip phone: {exc}", file=sys.stderr)
                return EXIT_TIMEOUT if exc.status is None else EXIT_REJECTED
        else:
            incoming = await phone.next_call(args.timeout)
            if incoming is None:
                return EXIT_TIMEOUT
            call = incoming
            await call.answer()
            if not await call.wait_established(10.0):
                return EXIT_TIMEOUT
        if await call.wait_ended(args.after) is not None:
            print("leansip phone: the call ended before the transfer", file=sys.stderr)
            return EXIT_REJECTED
        if args.attended:
            call.hold(True)
            try:
                consult = await phone.call(target, timeout=args.timeout)
            except CallFailed as exc:
                print(f"leansip phone: transfer target: {exc}", file=sys.stderr)
                call.hangup()
                await call.wait_ended(10.0)
                return EXIT_REJECTED
            await consult.wait_ended(args.consult)
            result = await call.transfer_to(consult, timeout=args.timeout)
            if not result.succeeded:
                consult.hangup()
        else:
            result = await call.transfer(target, timeout=args.timeout)
        log.info("event=transfer_result status=%d reason=%r succeeded=%s", result.status, result.reason,
                 result.succeeded)
        if not result.succeeded:
            print(f"leansip phone: transfer failed: {result.status} {result.reason}".rstrip(), file=sys.stderr)
            call.hangup()
        for c in _live(phone):
            await c.wait_ended(40.0)
        return EXIT_OK if result.succeeded else EXIT_REJECTED
    finally:
        await _unregister(phone)


def _setup_logging(verbose: int, quiet: bool, log_file: Path | None = None) -> None:
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if log_file is None \
        else logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    root = logging.getLogger("leansip")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("leansip.phone.sip").setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose and not quiet:
        root.setLevel(logging.DEBUG)


def _options(args: argparse.Namespace, transport: str) -> PhoneOptions:
    """PhoneOptions from the arguments; locates the server (RFC 3263, may block on DNS). Raises ResolveError."""
    server: tuple[str, int] | None = None
    alternates: tuple[tuple[str, int], ...] = ()
    server_name = domain = None
    if args.server is not None:
        host, port = args.server
        targets = resolve_server(host, port, transport)
        server = (targets[0].host, targets[0].port)
        alternates = tuple((t.host, t.port) for t in targets[1:])
        server_name = host
        domain = args.realm or (host if host != server[0] else None)
    return PhoneOptions(
        user=args.user, password=args.password, server=server, domain=domain,
        local_host=args.local_host, local_port=args.local_port, rtp_port=args.rtp_port, srtp=args.srtp,
        codecs=tuple(args.codec) if args.codec else ("PCMU", "PCMA"),
        play=getattr(args, "play", None), record=getattr(args, "record", None), sound_card=args.sound_card,
        transport=transport, server_alternates=alternates, server_name=server_name, ca_file=args.ca_file,
        insecure=args.insecure, keepalive=args.keepalive, keepalive_method=args.keepalive_method, stun=args.stun,
        dtmf_mode=args.dtmf_mode, follow_transfers=not args.no_follow_transfer, webrtc=args.webrtc,
    )


async def _run(args: argparse.Namespace, options: PhoneOptions) -> int:
    phone = await Phone.start(options)
    log.info("event=started sip=%s:%s transport=%s rtp=%s", *phone.address, options.transport,
             phone.rtp.port if phone.rtp else 0)
    try:
        if args.command == "ui":
            from leansip.ua.tui import run_ui

            return await run_ui(phone, args)
        if args.command == "register":
            return await _cmd_register(phone, args)
        if args.command == "call":
            try:
                return await _cmd_call(phone, args)
            finally:
                await _unregister(phone)  # only if --register made us register
        if args.command == "transfer":
            return await _cmd_transfer(phone, args)
        return await _cmd_answer(phone, args)
    finally:
        await phone.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``leansip phone``; returns the exit status documented in ``--help``."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "register" and args.server is None:
        parser.print_usage(sys.stderr)
        print("leansip phone: error: register needs --server", file=sys.stderr)
        return EXIT_USAGE
    transport = _transport(args)
    if transport != "udp" and args.server is None:
        print(f"leansip phone: error: --transport {transport} needs --server (one connection to it carries "
              "everything)", file=sys.stderr)
        return EXIT_USAGE
    if args.command in ("call", "transfer"):
        try:
            _target_uri(args.target, args)
            if args.command == "transfer" and args.call:
                _target_uri(args.call, args)
        except ValueError as exc:
            print(f"leansip phone: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    record = getattr(args, "record", None)
    if record is not None:
        try:
            check_writable(record)
        except AudioFileError as exc:
            print(f"leansip phone: error: --record: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "ui":
        if args.log_file is None:
            args.quiet = True  # the screen is ours; events are shown in its log pane
    _setup_logging(args.verbose, args.quiet, getattr(args, "log_file", None))
    try:
        options = _options(args, transport)
    except ResolveError as exc:
        print(f"leansip phone: error: --server: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, options))
    except AudioFileError as exc:  # --play: missing, unreadable or not audio (read before anything is sent)
        print(f"leansip phone: error: --play: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"leansip phone: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_TIMEOUT
