"""runbackend migrates while Ray starts; a database it cannot migrate stops the start, named in one line, and
leaves nothing running (runs ``manage.py runbackend`` as a subprocess with a Ray of its own)."""

from __future__ import annotations

import pytest

from .backend_proc import Backend, backend_env

pytestmark = pytest.mark.e2e


def test_a_database_that_cannot_be_migrated_stops_the_start_naming_it(tmp_path):
    # nothing listens on port 1: the migration's connection is refused at once
    env = backend_env(tmp_path / "data", DATABASE_URL="postgres://postgres@127.0.0.1:1/spacebeaver")
    backend = Backend(env, tmp_path / "runbackend.log")
    try:
        assert backend.wait() != 0, backend.output[-3000:]
    finally:
        backend.kill_all()
    out = backend.output
    assert "Database: applying migrations (while Ray starts) ..." in out and "Ray: up" in out, out
    assert "database migrations failed: OperationalError" in out, out
    assert "Traceback" not in out, out
    assert "Actors:" not in out and "Stopped." in out, out
