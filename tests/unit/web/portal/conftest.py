"""Portal fixtures: people with passwords, logged-in clients, and a real relay sink for the portal's mail."""

from __future__ import annotations

import itertools

import pytest

PASSWORD = "correct-horse-battery-42"
_n = itertools.count(1)


@pytest.fixture
def person(db):
    """A person who signed up: password, confirmed personal email, no device."""
    from web.accounts.models import User

    def make(name: str | None = None, *, verified: bool = True, **fields):
        n = next(_n)
        name = name or f"hiker{n}"
        user = User.objects.create_user(
            username=name,
            password=PASSWORD,
            contact_email=f"{name}@personal.example.org",
            contact_email_verified=verified,
            **fields,
        )
        return user

    return make


@pytest.fixture
def login_as(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def relay(monkeypatch, settings):
    """A real SMTP relay sink on loopback; the portal's mail backend sends to it through our relay client, as in the
    sandbox of `make run` (SANDBOX_RELAY_PORT)."""
    from messaging.sandbox.relay_sink import RelaySink

    sink = RelaySink(port=0).start()
    settings.EMAIL_BACKEND = "web.portal.mail.RelayEmailBackend"
    settings.SANDBOX = True
    monkeypatch.setenv("SANDBOX_RELAY_PORT", str(sink.port))
    yield sink
    sink.stop()
