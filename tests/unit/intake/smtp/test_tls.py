"""STARTTLS: the server context from PEM files, its reload on renewal, the both-or-neither rule, the sandbox's
self-signed certificate, and delivery through STARTTLS over a real socket (real handler, real database)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import smtplib
import ssl
import threading
import time
import warnings
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from messaging.intake.smtp.server import MailHandler, smtp_protocol
from messaging.intake.smtp.tls import ReloadingContext, check_local_files, server_context
from messaging.intake.user_store import LocalUsers
from messaging.runtime.config import Config, ConfigError
from messaging.sandbox import selfsigned
from messaging.sandbox.fake_dns import FakeDNS
from messaging.sandbox.stack import start_sandbox
from web.delivery.models import Message


def write_pair(directory: Path, domain: str = "beaver.test") -> tuple[str, str]:
    """A fresh self-signed certificate and key written to ``directory`` (replacing what is there)."""
    cert, key = selfsigned.make(domain)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return str(directory / "cert.pem"), str(directory / "key.pem")


def client_context(cert_file: str) -> ssl.SSLContext:
    """A client that trusts only this self-signed certificate (and checks the host name)."""
    return ssl.create_default_context(cafile=cert_file)


def fingerprint(pem_file: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(pem_file).read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def peer_fingerprint(s: smtplib.SMTP) -> str:
    return hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the context and the both-or-neither rule -------------------------------------------------------------


def test_server_context_loads_pem_and_refuses_old_tls(tmp_path):
    context = server_context(*write_pair(tmp_path))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE, "a server does not ask senders for client certificates"


@pytest.mark.parametrize("broken", ["missing", "garbage", "other key"])
def test_files_that_do_not_load_refuse_to_start_naming_the_variables(tmp_path, broken):
    cert, key = write_pair(tmp_path / "a")
    if broken == "missing":
        key = str(tmp_path / "nowhere.pem")
    elif broken == "garbage":
        Path(cert).write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    else:
        key = write_pair(tmp_path / "b")[1]
    with pytest.raises(ConfigError, match="SMTP_TLS_CERT_FILE.*SMTP_TLS_KEY_FILE"):
        ReloadingContext(cert, key)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"SMTP_TLS_CERT_FILE": "/tls/tls.crt"}, "SMTP_TLS_KEY_FILE"),
        ({"SMTP_TLS_KEY_FILE": "/k"}, "SMTP_TLS_CERT_FILE"),
    ],
)
def test_one_file_without_the_other_refuses_to_start(env, missing):
    with pytest.raises(ConfigError, match=f"{missing} is missing"):
        Config.from_env(env)


def test_both_or_neither_is_fine(tmp_path):
    assert ReloadingContext.from_config(Config()) is None
    cert, key = write_pair(tmp_path)
    config = Config.from_env({"SMTP_TLS_CERT_FILE": cert, "SMTP_TLS_KEY_FILE": key})
    assert isinstance(ReloadingContext.from_config(config), ReloadingContext)


def test_runbackend_checks_the_files_a_local_ray_will_read(tmp_path):
    cert, key = write_pair(tmp_path)
    check_local_files(Config(smtp_tls_cert_file=cert, smtp_tls_key_file=key))
    check_local_files(Config())
    Path(key).write_text("not a key")
    with pytest.raises(ConfigError, match="SMTP_TLS_KEY_FILE"):
        check_local_files(Config(smtp_tls_cert_file=cert, smtp_tls_key_file=key))
    # on a cluster the files are in the Ray pods, not where runbackend runs
    check_local_files(Config(smtp_tls_cert_file=cert, smtp_tls_key_file=key, ray_address="ray://head:10001"))


# --- reloading --------------------------------------------------------------------------------------------


def test_a_renewed_certificate_is_loaded_at_the_next_check(tmp_path):
    clock = Clock()
    holder = ReloadingContext(*write_pair(tmp_path), recheck_seconds=5.0, clock=clock)
    first = holder.current()
    write_pair(tmp_path)
    clock.now += 1.0
    assert holder.current() is first, "files are looked at no more than every recheck_seconds"
    clock.now += 5.0
    renewed = holder.current()
    assert renewed is not first and holder.reloads == 1
    clock.now += 5.0
    assert holder.current() is renewed and holder.reloads == 1, "unchanged files are not loaded again"


def test_broken_new_files_keep_the_old_context_until_good_ones_come(tmp_path, caplog):
    clock = Clock()
    cert, key = write_pair(tmp_path)
    holder = ReloadingContext(cert, key, recheck_seconds=0.0, clock=clock)
    first = holder.current()
    Path(cert).write_text("half a certificate")
    with caplog.at_level(logging.ERROR, logger="messaging.intake.smtp.tls"):
        assert holder.current() is first
    assert "keeping the previous one" in caplog.text and "SMTP_TLS_CERT_FILE" in caplog.text
    Path(key).unlink()  # a file gone for a moment: still the old context, no crash
    assert holder.current() is first
    write_pair(tmp_path)
    assert holder.current() is not first and holder.reloads == 1


# --- the sandbox's certificate ----------------------------------------------------------------------------


def test_sandbox_certificate_is_for_the_domain_and_reused(tmp_path):
    cert, key = selfsigned.certificate(tmp_path, "beaver.test")
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "beaver.test" in names.get_values_for_type(x509.DNSName)
    assert key.stat().st_mode & 0o077 == 0, "the key is readable by its owner only"
    server_context(str(cert), str(key))
    again = selfsigned.certificate(tmp_path, "beaver.test")
    assert again == (cert, key) and fingerprint(str(again[0])) == fingerprint(str(cert)), "reused, not remade"


def test_sandbox_certificate_is_remade_for_another_domain_or_when_expiring(tmp_path):
    cert, _ = selfsigned.certificate(tmp_path, "beaver.test")
    first = fingerprint(str(cert))
    selfsigned.certificate(tmp_path, "otter.test")
    second = fingerprint(str(cert))
    assert second != first
    later = dt.datetime.now(dt.UTC) + selfsigned.VALID_FOR - dt.timedelta(days=1)
    selfsigned.certificate(tmp_path, "otter.test", now=later)
    assert fingerprint(str(cert)) != second


def test_sandbox_certificate_is_remade_when_the_key_does_not_match(tmp_path):
    cert, key = selfsigned.certificate(tmp_path, "beaver.test")
    first = fingerprint(str(cert))
    key.write_bytes(selfsigned.make("beaver.test")[1])
    selfsigned.certificate(tmp_path, "beaver.test")
    assert fingerprint(str(cert)) != first
    server_context(str(cert), str(key))


def test_start_sandbox_offers_starttls_with_its_certificate(tmp_path):
    config, box = start_sandbox(Config(email_domain="beaver.test", sandbox="1"), tmp_path, ephemeral_ports=True)
    try:
        assert Path(config.smtp_tls_cert_file).parent == tmp_path / "tls"
        assert selfsigned.usable(Path(config.smtp_tls_cert_file), Path(config.smtp_tls_key_file), "beaver.test")
        assert ReloadingContext.from_config(config) is not None
    finally:
        box.stop()


def test_start_sandbox_keeps_a_configured_certificate_and_cleans_its_scratch(tmp_path):
    cert, key = write_pair(tmp_path)
    config, box = start_sandbox(
        Config(sandbox="1", smtp_tls_cert_file=cert, smtp_tls_key_file=key), ephemeral_ports=True
    )
    box.stop()
    assert (config.smtp_tls_cert_file, config.smtp_tls_key_file) == (cert, key)
    config, box = start_sandbox(Config(sandbox="1"), ephemeral_ports=True)  # no record dir: a temporary one
    assert Path(config.smtp_tls_cert_file).exists()
    box.stop()
    assert not Path(config.smtp_tls_cert_file).exists()


# --- through a real socket --------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path):
    """A mail server (real socket, real handler, real database) with STARTTLS from files in tmp_path/tls;
    every session looks at the files (recheck 0). Returns (port, handler, cert_file, key_file)."""
    dns = FakeDNS().start()
    cert, key = write_pair(tmp_path / "tls")
    config = Config(
        email_domain="beaver.test", dns_nameservers=dns.nameservers, smtp_tls_cert_file=cert, smtp_tls_key_file=key
    )
    handler = MailHandler(config, LocalUsers(config, {}))
    tls = ReloadingContext.from_config(config, recheck_seconds=0.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listening = asyncio.run_coroutine_threadsafe(
        loop.create_server(lambda: smtp_protocol(handler, config, tls), host="127.0.0.1", port=0), loop
    ).result(10)
    yield listening.sockets[0].getsockname()[1], handler, cert, key
    loop.call_soon_threadsafe(listening.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    dns.stop()


def mail(to: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "amy@example.org", to, "Trail"
    m.set_content("Snow at the pass, sent encrypted.")
    return m


def wait_for(condition, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_delivery_through_starttls_is_stored(tls_server, make_user):
    port, handler, cert, _ = tls_server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("mx.example.org")
        assert s.has_extn("starttls")
        assert s.starttls(context=client_context(cert))[0] == 220
        assert s.sock.version() in {"TLSv1.2", "TLSv1.3"}
        s.ehlo("mx.example.org")
        assert not s.has_extn("starttls"), "offered once per session"
        assert not s.has_extn("auth"), "an MX offers no login, encrypted or not"
        assert s.send_message(mail(f"{user.username}@beaver.test")) == {}
    row = Message.objects.get(user=user)
    assert "sent encrypted" in row.text
    wait_for(lambda: handler.sessions == 0 and not handler.sessions_by_client)  # one session, counted once


@pytest.mark.django_db(transaction=True)
def test_starttls_is_optional_for_the_sender(tls_server, make_user):
    port, _, _, _ = tls_server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:  # a sender that never asks for TLS still delivers
        assert s.send_message(mail(f"{user.username}@beaver.test")) == {}
    assert Message.objects.filter(user=user).count() == 1


def test_no_starttls_without_a_certificate():
    with FakeDNS() as dns:
        config = Config(email_domain="beaver.test", dns_nameservers=dns.nameservers)
        protocol = smtp_protocol(MailHandler(config, LocalUsers(config, {})), config)
    assert protocol.tls_context is None


def test_a_renewed_certificate_is_served_to_the_next_session_without_restart(tls_server, tmp_path):
    port, _, cert, key = tls_server

    def served() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.starttls(context=client_context(cert))
            return peer_fingerprint(s)

    first = served()
    assert first == fingerprint(cert)
    Path(cert).write_text("a renewal gone wrong")
    Path(key).write_text("")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:  # broken new files: the old certificate goes on
        s.starttls(context=ssl._create_unverified_context())
        assert peer_fingerprint(s) == first
    write_pair(tmp_path / "tls")
    renewed = served()
    assert renewed == fingerprint(cert) != first


@pytest.mark.django_db(transaction=True)
def test_a_failed_handshake_ends_the_session_quietly_and_counts_it_once(tls_server, caplog):
    port, handler, _, _ = tls_server
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("mx.example.org")
        assert s.has_extn("starttls")
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.maximum_version = ssl.TLSVersion.TLSv1_1  # refused: TLS 1.2 at least
        with pytest.raises((ssl.SSLError, OSError, smtplib.SMTPException)):
            s.starttls(context=old)
    wait_for(lambda: handler.sessions == 0 and not handler.sessions_by_client)
    assert "STARTTLS handshake failed" in caplog.text
    assert not [r for r in caplog.records if r.name == "messaging.intake.smtp.server" and r.levelno >= logging.ERROR]
