"""Shared fixtures: plain factories for users and devices (real rows in the test database)."""

from __future__ import annotations

import itertools

import pytest

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """The test database, always (the end-to-end tests use it from Ray workers without a db marker)."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        teardown_databases(config, verbosity=0)


@pytest.fixture
def make_user(db):
    """Create a user (and by default an active device) with unique names and numbers."""
    from web.accounts.models import BlockedSender, Device, User

    def make(username=None, *, device=True, twilio=True, active=True, quota=None, blocked=()):
        n = next(_ids)
        user = User.objects.create(
            username=username or f"user{n}",
            twilio_number=f"+1415555{n:04d}" if twilio else None,
            is_active=active,
            monthly_quota=quota,
        )
        if device:
            Device.objects.create(device_id=900_000 + n, owner=user, nickname=f"dev{n}")
        for address in blocked:
            BlockedSender.objects.create(user=user, address=address)
        return user

    return make
