"""The portal's email backend: our relay client, with the relay settings of Config (the sandbox sink in the sandbox)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from messaging.core.errors import DeliveryError
from messaging.runtime.config import Config
from web.portal.mail import RelayEmailBackend, relay_sessions


def test_the_configured_relay_is_used():
    sessions = relay_sessions(Config(email_relay_host="relay.example.net", email_relay_port=587), sandbox=False)
    assert (sessions.host, sessions.port) == ("relay.example.net", 587)


def test_the_sandbox_uses_the_relay_sink_port_whatever_is_configured():
    sessions = relay_sessions(Config(sandbox_relay_port=2626), sandbox=True)
    assert (sessions.host, sessions.port) == ("127.0.0.1", 2626)
    sessions = relay_sessions(Config(email_relay_host="relay.example.net", sandbox_relay_port=2626), sandbox=True)
    assert (sessions.host, sessions.port) == ("127.0.0.1", 2626), "SANDBOX=1: every remote is faked"


def test_outside_the_sandbox_a_missing_relay_is_an_error_naming_it():
    with pytest.raises(ImproperlyConfigured, match="EMAIL_RELAY_HOST"):
        relay_sessions(Config(), sandbox=False)


def test_each_recipient_gets_the_message_through_the_sink(relay):
    message = EmailMessage("Hi", "Body text", "noreply@example.com", ["a@example.org", "b@example.org"])
    assert RelayEmailBackend().send_messages([message]) == 1
    records = relay.wait_for(lambda ms: len(ms) == 2)
    assert sorted(r["rcpt_tos"][0] for r in records) == ["a@example.org", "b@example.org"]
    assert all(r["headers"]["To"] == r["rcpt_tos"][0] for r in records)


def test_a_refusing_relay_raises_unless_silent(relay):
    relay.fail_next(2, code=550, stage="rcpt")
    message = EmailMessage("Hi", "Body", "noreply@example.com", ["a@example.org"])
    with pytest.raises(DeliveryError):
        RelayEmailBackend().send_messages([message])
    assert RelayEmailBackend(fail_silently=True).send_messages([message]) == 0


def test_outside_the_sandbox_the_configured_relay_gets_the_mail(relay, settings, monkeypatch):
    settings.SANDBOX = False
    monkeypatch.setenv("SANDBOX_RELAY_PORT", "1")  # not used outside the sandbox
    monkeypatch.setenv("EMAIL_RELAY_HOST", "127.0.0.1")
    monkeypatch.setenv("EMAIL_RELAY_PORT", str(relay.port))
    message = EmailMessage("Hi", "Body", "noreply@example.com", ["c@example.org"])
    assert RelayEmailBackend().send_messages([message]) == 1
    assert relay.wait_for(lambda ms: len(ms) == 1)[0]["rcpt_tos"] == ["c@example.org"]


def test_sandbox_mail_shows_the_last_recorded_mail_with_its_link(tmp_path, settings):
    import io
    import smtplib

    from django.core.management import CommandError, call_command

    from messaging.sandbox.relay_sink import RelaySink

    settings.DATA_DIR = tmp_path
    with pytest.raises(CommandError, match="no mail recorded yet"):
        call_command("sandbox_mail")
    with RelaySink(port=0, record_path=tmp_path / "sandbox" / "relay.jsonl") as sink:
        (tmp_path / "sandbox").mkdir(exist_ok=True)
        for to, link in (("a@example.org", "http://x/verify/AAA/"), ("b@example.org", "http://x/verify/BBB/")):
            with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
                smtp.sendmail("noreply@example.com", [to], f"To: {to}\r\nSubject: Confirm\r\n\r\nOpen {link}\r\n")
    out = io.StringIO()
    call_command("sandbox_mail", to="A@example.org", stdout=out)
    assert "http://x/verify/AAA/" in out.getvalue() and "BBB" not in out.getvalue()
    out = io.StringIO()
    call_command("sandbox_mail", stdout=out)
    assert "http://x/verify/BBB/" in out.getvalue()
