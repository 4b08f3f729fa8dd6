"""The machine's own IP addresses, for listeners bound to a wildcard (``0.0.0.0``, ``::``).

Such a listener answers on every address of the machine, so the core must recognise each of them as its own in
a Request-URI, a Route or a Via (else ``OPTIONS sip:192.0.2.5`` would be forwarded to ourselves: 482). Read
once at start-up, from the kernel: IPv4 through the ``SIOCGIFADDR`` ioctl per interface, IPv6 from
``/proc/net/if_inet6``, plus whatever the host name resolves to. Linux first; elsewhere the host name and the
loopback addresses.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from pathlib import Path

_SIOCGIFADDR = 0x8915


def interface_addresses() -> set[str]:
    """Every address of this machine we can find, as text (IPv6 without brackets, compressed)."""
    found = {"127.0.0.1", "::1"}
    found |= _ipv4_interfaces()
    found |= _ipv6_interfaces()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%", 1)[0])
    except OSError:
        pass
    return found


def _ipv4_interfaces() -> set[str]:
    out: set[str] = set()
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            out.add(socket.inet_ntoa(packed[20:24]))
    return out


def _ipv6_interfaces() -> set[str]:
    out: set[str] = set()
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if fields and len(fields[0]) == 32:
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))))
    return out
