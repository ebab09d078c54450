"""runbackend migrates in a thread beside Ray's start; a migration that fails is named, not a traceback."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from web.delivery.management.commands import runbackend

pytestmark = pytest.mark.django_db(transaction=True)


def test_migrations_run_beside_and_are_waited_for():
    migrating = runbackend.Migrating()
    migrating.wait()  # the test database is migrated already: nothing to apply, and no error
    assert migrating.error is None and migrating.seconds > 0


def test_a_failed_migration_is_named_when_waited_for(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError('connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused')

    monkeypatch.setattr(runbackend, "call_command", unreachable)
    migrating = runbackend.Migrating()
    with pytest.raises(runbackend.MigrationsFailed, match="database migrations failed: OperationalError: connection"):
        migrating.wait()
