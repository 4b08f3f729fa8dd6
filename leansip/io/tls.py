"""TLS contexts for the stream transports, and a self-signed development certificate.

A TLS or WSS listener needs a certificate. Production configurations name one (``tls_cert``/``tls_key``);
``make run`` / ``--demo`` must work out of the box, so :func:`ensure_dev_certificate` creates a self-signed
one under ``./var/`` (with the ``cryptography`` package) and reuses it on the next start while it is valid.
Clients will not trust it, which is the point: it is for local testing only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

DEV_CERT_NAME = "leansip-dev-cert.pem"
DEV_KEY_NAME = "leansip-dev-key.pem"


def create_self_signed(cert_path: Path, key_path: Path, *, common_name: str = "leansip development",
                       hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"), days: int = 365) -> None:
    """Write a self-signed EC P-256 certificate valid for ``hosts`` (DNS names and IP addresses).

    The key file is created with mode 0600 because it is a private key even when it only guards a test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _still_valid(cert_path: Path, margin_days: int = 7) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    remaining = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return remaining > datetime.timedelta(days=margin_days)


def ensure_dev_certificate(directory: Path = Path("var")) -> tuple[Path, Path]:
    """(certificate, key) for a development TLS listener: reused from ``directory`` while valid, else created."""
    cert_path = directory / DEV_CERT_NAME
    key_path = directory / DEV_KEY_NAME
    if not (key_path.exists() and _still_valid(cert_path)):
        create_self_signed(cert_path, key_path)
    return cert_path, key_path


def server_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """Server side: our certificate; with ``ca``, ask clients for a certificate and verify it when given
    (RFC 5630 mutual TLS is optional for UAs, which usually have no certificate)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca: Path | None = None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Client side for connections we open: verify the peer against ``ca`` (else the system store), and
    present our own certificate when we have one (a proxy's identity towards the next hop)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx
