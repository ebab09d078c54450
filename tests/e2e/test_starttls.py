"""STARTTLS on the real stack: the sandbox's self-signed certificate for EMAIL_DOMAIN, delivery through it to the
device, and a renewed certificate served by the running mail server actors without a restart."""

from __future__ import annotations

import hashlib
import os
import smtplib
import ssl
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from messaging.intake.smtp.tls import RECHECK_SECONDS
from messaging.sandbox import selfsigned

from .conftest import device_texts, wait_until

pytestmark = pytest.mark.e2e


def trusting(cert_file: str) -> ssl.SSLContext:
    """A client that trusts only the stack's certificate and checks the host name (127.0.0.1 is in it)."""
    return ssl.create_default_context(cafile=cert_file)


def served_fingerprint(e2e) -> str:
    """SHA-256 of the certificate a new session is served (not verified: a renewal may be under way)."""
    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        return hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()


def fingerprint_of(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


def test_email_through_starttls_reaches_the_device(e2e, new_user):
    user = new_user()
    device = user.devices.get()
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "alice@example.org", f"{user.username}@beaver.test", "Sealed"
    m.set_content("Sent under STARTTLS.")
    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as s:
        s.ehlo("mx.example.org")
        assert s.has_extn("starttls"), "the sandbox stack offers STARTTLS"
        assert s.starttls(context=trusting(e2e.config.smtp_tls_cert_file))[0] == 220
        assert s.sock.version() in {"TLSv1.2", "TLSv1.3"}
        assert s.send_message(m) == {}
    texts = wait_until(lambda: device_texts(e2e, device.device_id), what="the mail at the device")
    assert any("Sent under STARTTLS." in text for text in texts)


def test_a_renewed_certificate_is_served_to_new_sessions_without_restart(e2e, new_user):
    cert_file, key_file = Path(e2e.config.smtp_tls_cert_file), Path(e2e.config.smtp_tls_key_file)
    old = fingerprint_of(cert_file.read_bytes())
    assert served_fingerprint(e2e) == old
    cert, key = selfsigned.make("beaver.test")  # the renewal, written the way the kubelet swaps files in
    for path, data in ((key_file, key), (cert_file, cert)):
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    new = fingerprint_of(cert)
    swapped = time.monotonic()
    # Every mail server actor (they share the port) picks it up at its first session once RECHECK_SECONDS have
    # passed: from then on every session gets the new one, whichever actor the kernel hands it to.
    wait_until(
        lambda: time.monotonic() - swapped > RECHECK_SECONDS and all(served_fingerprint(e2e) == new for _ in range(6)),
        what="the renewed certificate",
    )
    user = new_user()  # and mail still goes through, verified against the new certificate
    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as s:
        s.starttls(context=trusting(str(cert_file)))
        m = EmailMessage()
        m["From"], m["To"], m["Subject"] = "alice@example.org", f"{user.username}@beaver.test", "Renewed"
        m.set_content("After the renewal.")
        assert s.send_message(m) == {}
    texts = wait_until(lambda: device_texts(e2e, user.devices.get().device_id), what="the mail at the device")
    assert any("After the renewal." in text for text in texts)
