"""STUN (RFC 5389): messages, attributes, integrity, fingerprint, and a client transaction.

Sans-I/O. :func:`parse_message` turns a datagram into a :class:`StunMessage`, checking
the header, every attribute length and the FINGERPRINT; anything wrong raises
:class:`StunParseError` (drop the datagram). :meth:`StunMessage.serialize` writes it
back, adding MESSAGE-INTEGRITY and FINGERPRINT on request. Attribute values are
decoded through one table, ``ATTRIBUTES`` (type -> name, decoder, encoder), as aioice
does; unknown attributes are kept raw under ``"0x%04x"`` names.

The phone uses :func:`binding_request` + :class:`StunTransaction` to learn its public
RTP address: ``start(now)`` gives the first datagram, ``get_timer()`` the next
deadline, ``handle_timer(now)`` the retransmissions (RFC 5389 7.2.1: RTO 500 ms
doubling, Rc = 7 sends, final wait Rm x RTO = 8 s, so failure after 39.5 s),
``receive(message)`` the answer.

Not done: SASLprep of passwords (ASCII passwords are unaffected), TURN attributes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "StunParseError",
    "StunClass",
    "StunMethod",
    "StunMessage",
    "ATTRIBUTES",
    "parse_message",
    "is_stun",
    "binding_request",
    "binding_success",
    "long_term_key",
    "StunTransaction",
    "TransactionState",
    "MAGIC_COOKIE",
]

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E
RTO = 0.5  # RFC 5389 7.2.1 default initial RTO
RC = 7
RM = 16


class StunParseError(ValueError):
    """Not a valid STUN message; drop the datagram."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StunMethod(enum.IntEnum):
    BINDING = 0x001


class StunClass(enum.IntEnum):
    """The two class bits, already at their position in the message type (C1 = 0x100, C0 = 0x010)."""

    REQUEST = 0x000
    INDICATION = 0x010
    SUCCESS = 0x100
    ERROR = 0x110


# --- attribute codecs -----------------------------------------------------------------

Address = tuple[str, int]


def _need(value: bytes, n: int, name: str, exact: bool = True) -> None:
    if (len(value) != n) if exact else (len(value) < n):
        raise StunParseError(f"STUN attribute {name} has invalid length {len(value)}")


def _decode_address(value: bytes, tid: bytes, name: str) -> Address:
    if len(value) < 4:
        raise StunParseError(f"STUN attribute {name} has invalid length {len(value)}")
    family, port = value[1], struct.unpack_from("!H", value, 2)[0]
    if family == 0x01:
        _need(value, 8, name)
        return str(ipaddress.IPv4Address(value[4:8])), port
    if family == 0x02:
        _need(value, 20, name)
        return str(ipaddress.IPv6Address(value[4:20])), port
    raise StunParseError(f"STUN attribute {name} has unknown address family {family}")


def _encode_address(addr: Address, tid: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, addr[1]) + ip.packed


def _xor_key(tid: bytes) -> bytes:
    return struct.pack("!L", MAGIC_COOKIE) + tid


def _xor_bytes(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def _decode_xor_address(value: bytes, tid: bytes, name: str) -> Address:
    host, port = _decode_address(value, tid, name)
    # RFC 5389 15.2: port XOR the cookie's high 16 bits, address XOR cookie (+ transaction id).
    key = _xor_key(tid)
    raw = _xor_bytes(value[4:], key)
    xport = port ^ (MAGIC_COOKIE >> 16)
    return str(ipaddress.ip_address(raw)), xport


def _encode_xor_address(addr: Address, tid: bytes) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, addr[1] ^ (MAGIC_COOKIE >> 16)) + _xor_bytes(ip.packed, _xor_key(tid))


def _decode_text(value: bytes, tid: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunParseError(f"STUN attribute {name} is not UTF-8") from exc


def _encode_text(value: str, tid: bytes) -> bytes:
    return value.encode("utf-8")


def _decode_u32(value: bytes, tid: bytes, name: str) -> int:
    _need(value, 4, name)
    return int(struct.unpack("!L", value)[0])


def _encode_u32(value: int, tid: bytes) -> bytes:
    return struct.pack("!L", value)


def _decode_u64(value: bytes, tid: bytes, name: str) -> int:
    _need(value, 8, name)
    return int(struct.unpack("!Q", value)[0])


def _encode_u64(value: int, tid: bytes) -> bytes:
    return struct.pack("!Q", value)


def _decode_bytes(value: bytes, tid: bytes, name: str) -> bytes:
    return value


def _encode_bytes(value: bytes, tid: bytes) -> bytes:
    return value


def _decode_sha1(value: bytes, tid: bytes, name: str) -> bytes:
    _need(value, 20, name)
    return value


def _decode_none(value: bytes, tid: bytes, name: str) -> None:
    _need(value, 0, name)
    return None


def _encode_none(value: None, tid: bytes) -> bytes:
    return b""


def _decode_error_code(value: bytes, tid: bytes, name: str) -> tuple[int, str]:
    _need(value, 4, name, exact=False)
    cls, number = value[2] & 0x07, value[3]
    if not 3 <= cls <= 6 or number > 99:
        raise StunParseError(f"STUN attribute {name} has invalid code {cls}{number:02d}")
    return cls * 100 + number, _decode_text(value[4:], tid, name)


def _encode_error_code(value: tuple[int, str], tid: bytes) -> bytes:
    code, reason = value
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")


def _decode_unknown_attrs(value: bytes, tid: bytes, name: str) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunParseError(f"STUN attribute {name} has invalid length {len(value)}")
    return struct.unpack(f"!{len(value) // 2}H", value)


def _encode_unknown_attrs(value: tuple[int, ...], tid: bytes) -> bytes:
    return struct.pack(f"!{len(value)}H", *value)


Decoder = Callable[[bytes, bytes, str], Any]
Encoder = Callable[[Any, bytes], bytes]

# type -> (name, decoder, encoder). One table for both directions.
ATTRIBUTES: dict[int, tuple[str, Decoder, Encoder]] = {
    0x0001: ("MAPPED-ADDRESS", _decode_address, _encode_address),
    0x0006: ("USERNAME", _decode_text, _encode_text),
    0x0008: ("MESSAGE-INTEGRITY", _decode_sha1, _encode_bytes),
    0x0009: ("ERROR-CODE", _decode_error_code, _encode_error_code),
    0x000A: ("UNKNOWN-ATTRIBUTES", _decode_unknown_attrs, _encode_unknown_attrs),
    0x0014: ("REALM", _decode_text, _encode_text),
    0x0015: ("NONCE", _decode_text, _encode_text),
    0x0020: ("XOR-MAPPED-ADDRESS", _decode_xor_address, _encode_xor_address),
    0x0024: ("PRIORITY", _decode_u32, _encode_u32),
    0x0025: ("USE-CANDIDATE", _decode_none, _encode_none),
    0x8022: ("SOFTWARE", _decode_text, _encode_text),
    0x8023: ("ALTERNATE-SERVER", _decode_address, _encode_address),
    0x8028: ("FINGERPRINT", _decode_u32, _encode_u32),
    0x8029: ("ICE-CONTROLLED", _decode_u64, _encode_u64),
    0x802A: ("ICE-CONTROLLING", _decode_u64, _encode_u64),
}
_BY_NAME = {name: (t, enc) for t, (name, _dec, enc) in ATTRIBUTES.items()}


def _attr_type(name: str) -> tuple[int, Encoder]:
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("0x"):
        return int(name, 16), _encode_bytes
    raise ValueError(f"unknown STUN attribute {name!r}")


# --- message ---------------------------------------------------------------------------


def _message_type(method: int, cls: int) -> int:
    # Method bits M0-M3, C0, M4-M6, C1, M7-M11 (RFC 5389 6, figure 3).
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | cls


def _split_type(t: int) -> tuple[int, int]:
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    return method, t & 0x0110


@dataclass(slots=True, kw_only=True)
class StunMessage:
    """One STUN message. ``attributes`` keeps wire order; use :meth:`get` to read one.

    MESSAGE-INTEGRITY and FINGERPRINT are not put in ``attributes`` by hand: pass
    ``integrity_key``/``fingerprint`` to :meth:`serialize`. A parsed message keeps the
    received bytes so :meth:`check_integrity` can verify with the key found later
    (after looking up the USERNAME).
    """

    method: int = StunMethod.BINDING
    message_class: int = StunClass.REQUEST
    transaction_id: bytes = field(default_factory=lambda: secrets.token_bytes(12))
    attributes: list[tuple[str, Any]] = field(default_factory=list)
    _raw: bytes = b""
    _integrity_offset: int | None = None

    def __post_init__(self) -> None:
        if len(self.transaction_id) != 12:
            raise ValueError("transaction id is 96 bits")

    def get(self, name: str, default: Any = None) -> Any:
        for n, v in self.attributes:
            if n == name:
                return v
        return default

    def __contains__(self, name: str) -> bool:
        return any(n == name for n, _ in self.attributes)

    def add(self, name: str, value: Any) -> StunMessage:
        """Append an attribute; returns self so builders can chain."""
        self.attributes.append((name, value))
        return self

    def serialize(self, *, integrity_key: bytes | None = None, fingerprint: bool = False) -> bytes:
        """Encode; MESSAGE-INTEGRITY (RFC 5389 15.4) then FINGERPRINT (15.5) are appended last."""
        body = bytearray()
        for name, value in self.attributes:
            if name in ("MESSAGE-INTEGRITY", "FINGERPRINT"):
                continue
            t, enc = _attr_type(name)
            v = enc(value, self.transaction_id)
            if len(v) > 0xFFFF:
                raise ValueError(f"STUN attribute {name} too long")
            body += struct.pack("!HH", t, len(v)) + v + b"\x00" * (-len(v) % 4)
        mtype = _message_type(self.method, self.message_class)

        def header(length: int) -> bytes:
            return struct.pack("!HHL", mtype, length, MAGIC_COOKIE) + self.transaction_id

        if integrity_key is not None:
            # The length in the hashed header already counts the MESSAGE-INTEGRITY attribute.
            mac = hmac.new(integrity_key, header(len(body) + 24) + bytes(body), hashlib.sha1).digest()
            body += struct.pack("!HH", 0x0008, 20) + mac
        if fingerprint:
            crc = zlib.crc32(header(len(body) + 8) + bytes(body)) ^ FINGERPRINT_XOR
            body += struct.pack("!HHL", 0x8028, 4, crc)
        return header(len(body)) + bytes(body)

    def check_integrity(self, key: bytes) -> bool:
        """Verify MESSAGE-INTEGRITY of a parsed message with ``key`` (False if absent)."""
        if self._integrity_offset is None:
            return False
        off = self._integrity_offset
        raw = self._raw
        hdr = raw[:2] + struct.pack("!H", off + 24 - HEADER_LENGTH) + raw[4:HEADER_LENGTH]
        mac = hmac.new(key, hdr + raw[HEADER_LENGTH:off], hashlib.sha1).digest()
        return hmac.compare_digest(mac, raw[off + 4:off + 24])


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983 / 5389 7.3): first two bits 0 and the magic cookie."""
    return len(data) >= HEADER_LENGTH and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


def parse_message(data: bytes, *, integrity_key: bytes | None = None) -> StunMessage:
    """Decode one datagram; raise :class:`StunParseError` naming the first problem.

    The FINGERPRINT, when present, must be last and correct. With ``integrity_key`` a
    missing or wrong MESSAGE-INTEGRITY also raises; without it call
    :meth:`StunMessage.check_integrity` once the key is known. Attributes after
    MESSAGE-INTEGRITY other than FINGERPRINT are ignored (RFC 5389 15.4).
    """
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        raise StunParseError("STUN message length is less than 20 bytes")
    mtype, length, cookie = struct.unpack_from("!HHL", data)
    if mtype & 0xC000:
        raise StunParseError("STUN message type has the top bits set")
    if cookie != MAGIC_COOKIE:
        raise StunParseError("STUN message has a bad magic cookie")
    if length % 4:
        raise StunParseError("STUN message length is not a multiple of 4")
    if length != len(data) - HEADER_LENGTH:
        raise StunParseError("STUN message length does not match the datagram")
    tid = data[8:20]
    method, cls = _split_type(mtype)
    msg = StunMessage(method=method, message_class=cls, transaction_id=tid, _raw=data)
    pos = HEADER_LENGTH
    after_integrity = False
    while pos < len(data):
        if pos + 4 > len(data):
            raise StunParseError("STUN attribute header truncated")
        atype, alen = struct.unpack_from("!HH", data, pos)
        vstart = pos + 4
        vend = vstart + alen
        if vend > len(data):
            raise StunParseError(f"STUN attribute 0x{atype:04x} length exceeds the message")
        value = data[vstart:vend]
        next_pos = vstart + alen + (-alen % 4)
        if next_pos > len(data):
            raise StunParseError(f"STUN attribute 0x{atype:04x} padding exceeds the message")
        if atype == 0x8028:
            if next_pos != len(data):
                raise StunParseError("STUN FINGERPRINT is not the last attribute")
            fp = _decode_u32(value, tid, "FINGERPRINT")
            hdr = data[:2] + struct.pack("!H", pos + 8 - HEADER_LENGTH) + data[4:HEADER_LENGTH]
            if zlib.crc32(hdr + data[HEADER_LENGTH:pos]) ^ FINGERPRINT_XOR != fp:
                raise StunParseError("STUN FINGERPRINT does not match")
            msg.attributes.append(("FINGERPRINT", fp))
        elif not after_integrity:
            if atype in ATTRIBUTES:
                name, dec, _enc = ATTRIBUTES[atype]
                msg.attributes.append((name, dec(value, tid, name)))
            else:
                msg.attributes.append((f"0x{atype:04x}", value))
            if atype == 0x0008:
                msg._integrity_offset = pos
                after_integrity = True
        pos = next_pos
    if integrity_key is not None and not msg.check_integrity(integrity_key):
        raise StunParseError("STUN MESSAGE-INTEGRITY missing or wrong")
    return msg


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """Long-term credential key MD5(username ":" realm ":" password) (RFC 5389 15.4)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def binding_request(*, software: str | None = "leansip", transaction_id: bytes | None = None) -> StunMessage:
    """A Binding request with a fresh random 96-bit transaction id (RFC 5389 6)."""
    msg = StunMessage(method=StunMethod.BINDING, message_class=StunClass.REQUEST,
                      transaction_id=transaction_id if transaction_id is not None else secrets.token_bytes(12))
    if software:
        msg.add("SOFTWARE", software)
    return msg


def binding_success(request: StunMessage, source: Address, *, software: str | None = None) -> StunMessage:
    """The success response a server sends: XOR-MAPPED-ADDRESS = where the request came from."""
    resp = StunMessage(method=request.method, message_class=StunClass.SUCCESS,
                       transaction_id=request.transaction_id)
    resp.add("XOR-MAPPED-ADDRESS", source)
    if software:
        resp.add("SOFTWARE", software)
    return resp


# --- client transaction ----------------------------------------------------------------


class TransactionState(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # error response
    TIMED_OUT = "timed_out"


class StunTransaction:
    """Retransmission and matching for one STUN request over UDP (RFC 5389 7.2.1).

    Drive it with the shell's single timer: after :meth:`start`, re-arm at
    :meth:`get_timer` and call :meth:`handle_timer`, which returns the datagrams to
    (re)send. Give every STUN message from the server to :meth:`receive`; it returns
    True when the message belonged to this transaction. Then read ``state``,
    ``response`` (success or error message) and ``mapped_address``.
    """

    def __init__(self, request: StunMessage, *, rto: float = RTO, rc: int = RC, rm: int = RM,
                 integrity_key: bytes | None = None) -> None:
        if request.message_class != StunClass.REQUEST:
            raise ValueError("only requests have client transactions")
        self.request = request
        self.datagram = request.serialize(integrity_key=integrity_key, fingerprint=integrity_key is not None)
        self.rto = rto
        self.rc = rc
        self.rm = rm
        self.state = TransactionState.IDLE
        self.response: StunMessage | None = None
        self.sends = 0
        self._deadline: float | None = None
        self._interval = rto

    def start(self, now: float) -> bytes:
        """First transmission; returns the datagram to send."""
        if self.state is not TransactionState.IDLE:
            raise RuntimeError("transaction already started")
        self.state = TransactionState.WAITING
        self.sends = 1
        self._deadline = now + self._interval
        return self.datagram

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None when finished."""
        return self._deadline if self.state is TransactionState.WAITING else None

    def handle_timer(self, now: float) -> list[bytes]:
        """Retransmit if due; after Rc sends and a final Rm x RTO wait, time out."""
        if self.state is not TransactionState.WAITING or self._deadline is None or now < self._deadline:
            return []
        if self.sends >= self.rc:
            self.state = TransactionState.TIMED_OUT
            self._deadline = None
            return []
        self.sends += 1
        self._interval *= 2
        # The last request waits Rm x RTO instead of another doubling.
        wait = self.rm * self.rto if self.sends == self.rc else self._interval
        self._deadline = now + wait
        return [self.datagram]

    def receive(self, message: StunMessage) -> bool:
        """Match a response by transaction id; True if it was ours (state is then final)."""
        if message.transaction_id != self.request.transaction_id:
            return False
        if message.message_class not in (StunClass.SUCCESS, StunClass.ERROR):
            return False
        if self.state is not TransactionState.WAITING:
            return True  # a late duplicate: ours, but nothing changes
        self.response = message
        self.state = TransactionState.SUCCEEDED if message.message_class == StunClass.SUCCESS \
            else TransactionState.FAILED
        self._deadline = None
        return True

    @property
    def mapped_address(self) -> Address | None:
        """XOR-MAPPED-ADDRESS of a success response (MAPPED-ADDRESS from old RFC 3489 servers)."""
        if self.response is None or self.state is not TransactionState.SUCCEEDED:
            return None
        addr = self.response.get("XOR-MAPPED-ADDRESS") or self.response.get("MAPPED-ADDRESS")
        if not addr:
            return None
        host, port = addr
        return str(host), int(port)

    @property
    def error(self) -> tuple[int, str] | None:
        """ERROR-CODE of an error response."""
        if self.response is None or self.state is not TransactionState.FAILED:
            return None
        return self.response.get("ERROR-CODE", (500, ""))  # type: ignore[no-any-return]
