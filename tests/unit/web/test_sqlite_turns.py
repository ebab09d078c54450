"""The SQLite backend whose writers of one process take turns (web/db/sqlite3): a turn is held exactly while a
connection writes, a write with results is finished inside it, and a wait past the connection's timeout is SQLite's
own error."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from django.db import OperationalError, connection, transaction

from web.db.sqlite3.base import turn_for, writes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's backend")


def turn_taken() -> bool:
    return turn_for(connection.settings_dict["NAME"]).locked()


def test_what_writes():
    for sql in ("INSERT INTO t VALUES (1)", "  update t SET a = 1", "DELETE FROM t", "BEGIN IMMEDIATE", "REPLACE t"):
        assert writes(sql), sql
    for sql in ("SELECT 1", "PRAGMA foreign_keys = ON", "SAVEPOINT s1", "RELEASE SAVEPOINT s1", "", "   "):
        assert not writes(sql), sql


def test_a_turn_is_held_while_a_transaction_writes_and_given_back_at_its_end():
    assert connection.settings_dict["ENGINE"] == "web.db.sqlite3"
    with transaction.atomic():
        assert turn_taken()  # BEGIN IMMEDIATE: the transaction writes
        with connection.cursor() as cursor:
            cursor.execute("UPDATE accounts_user SET last_login = NULL WHERE id = -1")
        assert turn_taken()
    assert not turn_taken()
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        assert turn_taken()
        1 / 0  # noqa: B018 - rolled back
    assert not turn_taken()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_user SET last_login = NULL WHERE id = -1")  # autocommit
        assert not turn_taken()
        cursor.execute("SELECT count(*) FROM accounts_user")
        assert not turn_taken()


def test_a_connection_closed_inside_its_transaction_gives_its_turn_back():
    connection.ensure_connection()
    connection.set_autocommit(True)
    with transaction.atomic():
        assert turn_taken()
        connection.close()  # e.g. a broken connection dropped: SQLite rolls the transaction back
        assert not turn_taken()
    connection.close()


def test_a_write_with_results_is_finished_inside_its_turn():
    """``INSERT ... RETURNING`` outside a transaction holds SQLite's lock until its rows are read: they are read at
    once, so another connection writes as soon as the statement returns, and the rows are still handed out."""
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO django_content_type (app_label, model) VALUES (%s, %s), (%s, %s) RETURNING model",
                ["turns", "one", "turns", "two"],
            )
            other.execute("UPDATE accounts_user SET last_login = NULL WHERE id = -1")  # not "database is locked"
            assert not turn_taken()
            assert cursor.fetchone() == ("one",)
            assert cursor.fetchall() == [("two",)]
            assert cursor.fetchone() is None
            cursor.execute("SELECT model FROM django_content_type WHERE app_label = %s ORDER BY id", ["turns"])
            assert list(cursor) == [("one",), ("two",)]  # a read is read as it comes
    finally:
        other.close()


def test_a_writer_that_waits_longer_than_its_timeout_gets_sqlites_error(settings):
    """Another thread of this process holds the turn (an open transaction): a write waits for it no longer than the
    connection's timeout, then fails as SQLite itself would have (``database is locked``)."""
    options = connection.settings_dict["OPTIONS"]
    holding, release, failed = threading.Event(), threading.Event(), []

    def hold():
        from django.db import connection as own

        try:
            with transaction.atomic():
                holding.set()
                release.wait(30)
        finally:
            own.close()

    def write():
        from django.db import connection as own

        try:
            with own.cursor() as cursor:
                cursor.execute("UPDATE accounts_user SET last_login = NULL WHERE id = -1")
        except OperationalError as exc:
            failed.append(str(exc))
        finally:
            own.close()

    holder = threading.Thread(target=hold)
    holder.start()
    saved = options["timeout"]
    try:
        assert holding.wait(30)
        options["timeout"] = 0.2
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(30)
    finally:
        options["timeout"] = saved
        release.set()
        holder.join(30)
    assert len(failed) == 1 and "database is locked" in failed[0]
    assert not turn_taken()
