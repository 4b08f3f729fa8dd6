"""Cut a SIP byte stream (TCP, TLS) into messages: sans-I/O, no sockets, no clock.

Theory of operation. A stream carries messages back to back with nothing but the Content-Length header to say
where a body ends (RFC 3261 18.3: on a stream the header is mandatory, and a missing one means an empty body).
:class:`StreamFramer` buffers what :meth:`StreamFramer.feed` receives and returns each complete message as
``bytes`` exactly as it arrived, ready for ``parse_message(data, stream=True)``.

Between messages a peer may send keep-alives (RFC 5626 3.5.1): a double CRLF is a "ping" that the receiver
must answer with a single CRLF "pong"; a single CRLF is a pong to our own ping. They are not messages, so the
framer skips them and counts the pings in :attr:`StreamFramer.pings` for the shell to answer
(:meth:`StreamFramer.take_pings`).

Anything that makes the stream unframeable raises :class:`FramingError`: an invalid or negative
Content-Length, two that disagree, a header section or a body over the limits. After that the position of the
next message is unknown, so the only safe reaction is to close the connection (RFC 3261 18.3 says the same
for a malformed Content-Length on a stream).
"""

from __future__ import annotations

from typing import Final

from leansip.sip.errors import SipParseError

#: Largest header section we buffer while waiting for its empty line.
MAX_HEADER_BYTES: Final = 64 * 1024
#: Largest body we accept; SIP bodies (SDP, presence documents) are far smaller.
MAX_BODY_BYTES: Final = 1024 * 1024

_CL_NAMES: Final = (b"content-length", b"l")


class FramingError(SipParseError):
    """The stream cannot be cut into messages any more; close the connection.

    ``status`` is 0: no reply can be trusted to reach the peer's message boundaries; a shell may still try a
    400 when it can build one, but it must close afterwards."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, status=0)


class StreamFramer:
    """Incremental framer for one connection.

    Call :meth:`feed` with each chunk read from the connection; it returns the messages completed by that
    chunk (possibly none, possibly several) and raises :class:`FramingError` when the stream is broken.
    After each call, :meth:`take_pings` says how many CRLF pongs to write back.
    """

    __slots__ = ("_buf", "_scan_from", "_need", "max_header", "max_body", "pings", "pongs")

    def __init__(self, *, max_header: int = MAX_HEADER_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        #: where to resume the search for the end of the header section (partial reads stay linear)
        self._scan_from = 0
        #: total length of the current message once its header section is complete, else -1
        self._need = -1
        self.max_header = max_header
        self.max_body = max_body
        #: double-CRLF keep-alive pings received and not yet taken (RFC 5626 3.5.1)
        self.pings = 0
        #: single-CRLF pongs received (answers to our own pings); for statistics only
        self.pongs = 0

    @property
    def buffered(self) -> int:
        """Bytes of a message still incomplete (0 between messages, keep-alive CRLFs do not count).

        The shell uses it to time how long a peer takes to finish a message (slowloris protection)."""
        buf = self._buf
        if self._need < 0 and 0 < len(buf) < 4 and (buf[0] == 13 or buf[0] == 10):  # CR or LF
            return 0  # a lone CRLF keep-alive waiting to see whether it is a ping
        return len(buf)

    def take_pings(self) -> int:
        """Pings received since the last call: answer each with one CRLF."""
        n = self.pings
        self.pings = 0
        return n

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` read from the stream; return the messages it completed. Raises :class:`FramingError`."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if self._need < 0:
                if buf[0] in (13, 10):  # CR or LF: keep-alive between messages
                    if not self._skip_keepalive():
                        break
                    continue
                end = self._header_end()
                if end < 0:
                    if len(buf) > self.max_header:
                        raise FramingError(f"header section over {self.max_header} bytes")
                    break
                if end > self.max_header:
                    raise FramingError(f"header section over {self.max_header} bytes")
                self._need = end + self._content_length(bytes(buf[:end]))
            if len(buf) < self._need:
                break
            out.append(bytes(buf[: self._need]))
            del buf[: self._need]
            self._need = -1
            self._scan_from = 0
        return out

    # ------------------------------------------------------------------ internals
    def _skip_keepalive(self) -> bool:
        """Consume leading CR/LF. Returns False when more bytes are needed to tell a ping from a pong."""
        buf = self._buf
        if buf.startswith(b"\r\n\r\n"):
            self.pings += 1
            del buf[:4]
            return True
        if buf.startswith(b"\r\n"):
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return False  # "\r\n" or "\r\n\r": a ping may still be arriving
            self.pongs += 1
            del buf[:2]
            return True
        if buf == b"\r":
            return False
        del buf[:1]  # a stray bare CR or LF: tolerated and dropped (RFC 3261 7.5 allows leading CRLFs)
        return True

    def _header_end(self) -> int:
        """Index just past the empty line that ends the header section, or -1 if it has not arrived yet."""
        buf = self._buf
        start = max(0, self._scan_from - 3)
        crlf = buf.find(b"\r\n\r\n", start)
        lf = buf.find(b"\n\n", start)  # bare-LF peers (RFC 3261 7 asks for CRLF but 7.5 tolerates LF)
        if crlf < 0 and lf < 0:
            self._scan_from = len(buf)
            return -1
        if crlf >= 0 and (lf < 0 or crlf + 2 <= lf):
            return crlf + 4
        return lf + 2

    def _content_length(self, head: bytes) -> int:
        """The body length announced in ``head``; 0 when absent (RFC 3261 18.3). Raises FramingError."""
        value: bytes | None = None
        for line in head.split(b"\n")[1:]:
            colon = line.find(b":")
            if colon <= 0 or line[:1] in (b" ", b"\t"):
                continue
            if line[:colon].strip(b" \t").lower() not in _CL_NAMES:
                continue
            text = line[colon + 1 :].strip(b" \t\r")
            if value is not None and text != value:
                raise FramingError("conflicting Content-Length headers")
            value = text
        if value is None:
            return 0
        if not value.isdigit() or len(value) > 10:
            raise FramingError(f"bad Content-Length {value[:20]!r}")
        length = int(value)
        if length > self.max_body:
            raise FramingError(f"body of {length} bytes over {self.max_body}")
        return length
