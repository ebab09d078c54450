"""Shared fixtures: plain factories for users and devices (real rows in the test database)."""

from __future__ import annotations

import itertools

import pytest

_ids = itertools.count(1)


def pytest_ignore_collect(collection_path, config):
    """Without Chromium, chromedriver or Selenium the browser tests are not collected (one line says so below)."""
    from tests.browser import BROWSER_TEST_FILES, MISSING

    return True if MISSING and collection_path.name in BROWSER_TEST_FILES else None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests.browser import MISSING, SKIP_REASON

    if MISSING:
        terminalreporter.write_line(SKIP_REASON, yellow=True)


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """The test database, always (the end-to-end tests use it from Ray workers without a db marker)."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    yield
    with django_db_blocker.unblock():
        _let_go_of_the_test_database()
        teardown_databases(config, verbosity=0)


def _let_go_of_the_test_database(timeout: float = 30.0) -> None:
    """PostgreSQL refuses to drop a database others are connected to: wait (bounded) for the Ray workers of the
    end-to-end tests, which die with their Ray, to let go; then end whatever session is left."""
    import time

    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(f"SELECT count(*) {others}")
            if not cursor.fetchone()[0]:
                break
            time.sleep(0.2)
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")
    connection.close()


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
