"""Hostile SIP datagrams for the soak benchmark (bench/soak.py) and the memory bound tests: seeded, all distinct.

Each datagram is a REGISTER or an INVITE to the server under test, with a fresh Call-ID, branch and tags (so no
cache ever sees a key twice), damaged by one to four mutations of the kinds issue 23's fuzz run used: byte
flips, truncation, duplicated and removed lines, header values up to 60 kB, NULs, invalid UTF-8, absurd
Content-Lengths, 1,000 Vias. Sizes run up to 64 kB (65,507 bytes, a UDP datagram's most), about 10 kB on
average.

What must stay at home on a shared machine: the top Via (where the server answers) is never mutated, and
points at the sender's own socket with ``rport``; every address is 127.0.0.1; ACK and CANCEL (which a proxy
forwards without a challenge) are never sent. With ``--auth`` nothing else leaves the server but its answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

MAX_DATAGRAM = 65_507

_INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xe2\x82", b"\xf0\x28\x8c\x28", b"\xed\xa0\x80", b"\x80")
_ABSURD_LENGTHS = (b"99999999999999999999", b"-1", b"4294967296", b"1000000000", b"65536", b" 12 34", b"0x10",
                   b"1e9", b"")


class Hostile:
    """Makes the datagrams. ``reply_port`` is the sender's socket (the top Via's sent-by, with rport)."""

    def __init__(self, seed: int, server_port: int, reply_port: int, *, users: int = 100_000) -> None:
        self.rng = random.Random(seed)
        self.server_port = server_port
        self.reply_port = reply_port
        self.users = users
        self.n = 0
        self._cut = False
        self._via_blocks: list[tuple[list[bytes], bytes]] = []
        self._fillers = [bytes(self.rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789.-_;=@:<>,") for _ in range(64))
                         for _ in range(64)]
        self._mutations: list[Callable[[list[bytes]], None]] = [
            self._flip, self._flip, self._flip, self._flip, self._truncate, self._truncate, self._duplicate_line,
            self._duplicate_line, self._remove_line, self._remove_line, self._big_value, self._big_value, self._nul,
            self._invalid_utf8, self._content_length, self._content_length, self._many_vias]

    # ------------------------------------------------------------------ the base messages
    def _base(self) -> list[bytes]:
        """Header lines (start line first) of a fresh REGISTER or INVITE; the body is the last item."""
        rng = self.rng
        self.n += 1
        n = self.n
        user = f"user{rng.randrange(self.users)}"
        here = f"127.0.0.1:{self.server_port}"
        via = (f"Via: SIP/2.0/UDP 127.0.0.1:{self.reply_port};rport;"
               f"branch=z9hG4bK-h{n}x{rng.getrandbits(32):08x}").encode()
        common = [via, b"Max-Forwards: 70",
                  f"From: <sip:{user}@{here}>;tag=f{n}{rng.getrandbits(24):06x}".encode(),
                  f"Call-ID: h{n}-{rng.getrandbits(64):016x}@127.0.0.1".encode()]
        if rng.random() < 0.5:
            lines = [f"REGISTER sip:{here} SIP/2.0".encode(), *common, f"To: <sip:{user}@{here}>".encode(),
                     f"CSeq: {rng.randrange(1, 1 << 31)} REGISTER".encode(),
                     f"Contact: <sip:{user}@127.0.0.1:{self.reply_port};line={n}>;expires=3600".encode(),
                     b"User-Agent: soak", b"Content-Length: 0"]
            body = b""
        else:
            callee = f"user{rng.randrange(self.users)}"
            body = (f"v=0\r\no=- {n} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    f"m=audio {rng.randrange(1024, 65536)} RTP/AVP 0 8 101\r\n").encode()
            lines = [f"INVITE sip:{callee}@{here} SIP/2.0".encode(), *common, f"To: <sip:{callee}@{here}>".encode(),
                     f"CSeq: {rng.randrange(1, 1 << 31)} INVITE".encode(),
                     f"Contact: <sip:{user}@127.0.0.1:{self.reply_port}>".encode(),
                     b"Content-Type: application/sdp", f"Content-Length: {len(body)}".encode()]
        return [*lines, body]

    # ------------------------------------------------------------------ mutations (line 1, the top Via, is kept)
    def _line(self, lines: list[bytes]) -> int:
        """A line that may be edited: the start line or any header after the top Via (not the body)."""
        i = self.rng.randrange(1, len(lines) - 1)
        return 0 if i == 1 else i

    def _flip(self, lines: list[bytes]) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 20)):
            i = self._line(lines)
            line = bytearray(lines[i])
            if line:
                line[rng.randrange(len(line))] = rng.randrange(256)
            lines[i] = bytes(line)

    def _truncate(self, lines: list[bytes]) -> None:
        """The datagram cut short somewhere after the top Via (done last, in :meth:`datagram`)."""
        self._cut = True

    def _duplicate_line(self, lines: list[bytes]) -> None:
        i = self._line(lines)
        lines[i + 1:i + 1] = [lines[i]] * self.rng.randint(1, 50) if i else []

    def _remove_line(self, lines: list[bytes]) -> None:
        i = self._line(lines)
        if i and len(lines) > 3:
            del lines[i]

    def _big_value(self, lines: list[bytes]) -> None:
        """A header value up to 60 kB: an existing header grown, or a new one."""
        rng = self.rng
        size = int(100 + 59_900 * rng.random() ** 2)
        pad = (rng.choice(self._fillers) * (size // 64 + 1))[:size]
        if rng.random() < 0.5:
            i = self._line(lines)
            if i:
                lines[i] = lines[i] + pad
                return
        lines.insert(2, b"X-" + bytes(rng.choice(b"ABCDEFGH") for _ in range(6)) + b": " + pad)

    def _nul(self, lines: list[bytes]) -> None:
        i = self._line(lines)
        at = self.rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + b"\x00" * self.rng.randint(1, 4) + lines[i][at:]

    def _invalid_utf8(self, lines: list[bytes]) -> None:
        i = self._line(lines)
        at = self.rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + self.rng.choice(_INVALID_UTF8) + lines[i][at:]

    def _content_length(self, lines: list[bytes]) -> None:
        for i, line in enumerate(lines[:-1]):
            if line.startswith(b"Content-Length:"):
                lines[i] = b"Content-Length: " + self.rng.choice(_ABSURD_LENGTHS)

    def _many_vias(self, lines: list[bytes]) -> None:
        """1,000 Vias after the top one: lines of their own, or one comma-separated value (from a few blocks
        made once: the datagram stays distinct by its Call-ID and branch, and making them is the sender's
        largest cost)."""
        if not self._via_blocks:
            rng = random.Random(self.rng.getrandbits(32))
            for _ in range(8):
                vias = [f"SIP/2.0/UDP 127.0.0.1:{rng.randrange(1024, 65536)};branch=z9hG4bK-{rng.getrandbits(40):x}"
                        .encode() for _ in range(1000)]
                self._via_blocks.append(([b"Via: " + v for v in vias], b"Via: " + b", ".join(vias)))
        separate, joined = self.rng.choice(self._via_blocks)
        if self.rng.random() < 0.5:
            lines[2:2] = separate
        else:
            lines.insert(2, joined)

    # ------------------------------------------------------------------ the datagram
    def datagram(self) -> bytes:
        lines = self._base()
        rng = self.rng
        for _ in range(rng.randint(1, 4)):
            rng.choice(self._mutations)(lines)
        body = lines.pop()
        data = b"\r\n".join(lines) + b"\r\n\r\n" + body
        if self._cut:
            self._cut = False
            keep = len(lines[0]) + len(lines[1]) + 4  # start line and top Via, with their CRLFs
            data = data[:rng.randrange(keep, len(data) + 1)]
        # never ACK or CANCEL (a proxy forwards those unchallenged); a flip cannot make one of REGISTER/INVITE,
        # but a truncated start line could be anything: be sure
        if data[:4] in (b"ACK ", b"CANC") or data[:3] == b"ACK":
            data = b"X" + data
        return data[:MAX_DATAGRAM]
