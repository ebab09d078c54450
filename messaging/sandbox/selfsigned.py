"""The sandbox's STARTTLS certificate: self-signed for EMAIL_DOMAIN, made on first start and reused afterwards.

``certificate(directory, domain)`` returns ``(smtp-cert.pem, smtp-key.pem)`` in ``directory``, making them when they are
missing, unreadable, for another domain, or expiring within ``RENEW_BEFORE``. The names in it: the domain,
``localhost`` and ``127.0.0.1`` (a sandbox client connects to loopback). Nobody trusts it, which is fine for
opportunistic STARTTLS: sending servers on port 25 encrypt without checking the certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_NAME = "smtp-cert.pem"
KEY_NAME = "smtp-key.pem"
VALID_FOR = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=7)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def usable(cert_file: Path, key_file: Path, domain: str, now: dt.datetime | None = None) -> bool:
    """Whether the files hold a certificate for ``domain``, valid for at least RENEW_BEFORE, and its key."""
    now = now or _utcnow()
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return (
        domain.lower() in [n.lower() for n in names.get_values_for_type(x509.DNSName)]
        and cert.not_valid_before_utc <= now
        and now + RENEW_BEFORE < cert.not_valid_after_utc
        and cert.public_key() == key.public_key()
    )


def make(domain: str, now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed certificate for ``domain`` and its key (ECDSA P-256), both PEM."""
    now = now or _utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(domain),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        # its own CA: a client (a test, swaks --tls-ca-path) may trust exactly this certificate
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all (a reader never sees half a file), readable only by us for the key."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def certificate(directory: Path, domain: str, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """``(cert_file, key_file)`` for ``domain`` in ``directory``: the ones there when usable, else new ones."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / CERT_NAME, directory / KEY_NAME
    if not usable(cert_file, key_file, domain, now):
        cert_pem, key_pem = make(domain, now)
        _write(key_file, key_pem, 0o600)
        _write(cert_file, cert_pem, 0o644)
    return cert_file, key_file
