"""refresh_connections: a thread's connections are checked at most once a CHECK_EVERY (a check makes the next query
ask the database first, a round trip on PostgreSQL), at once after an error, never inside a transaction."""

from __future__ import annotations

import time

import pytest
from django.db import connection, transaction

from messaging.runtime.djangoenv import CHECK_EVERY, refresh_connections

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    """Far later than any check made before, by the real clock or another test's (the connection outlives a test)."""

    later = time.monotonic()

    def __init__(self):
        Clock.later += 1e6
        self.now = Clock.later

    def __call__(self):
        return self.now


@pytest.fixture(autouse=True)
def forget_the_test_clock():
    """The connection outlives the test: its last check is forgotten, so the real clock's checks go on after."""
    yield
    if hasattr(connection, "checked_at"):
        del connection.checked_at


def used(conn):
    """Run a query, as a store or a claim does; its connection's health is known afterwards."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    return conn


def test_a_connection_is_checked_once_per_interval_not_before_every_batch():
    clock = Clock()
    used(connection)
    refresh_connections(clock)  # first time: checked
    assert used(connection).health_check_done
    clock.now += CHECK_EVERY / 2
    refresh_connections(clock)
    assert connection.health_check_done, "checked again within CHECK_EVERY: a health query per batch"
    clock.now += CHECK_EVERY
    refresh_connections(clock)
    assert not connection.health_check_done, "not checked again after CHECK_EVERY"


def test_a_connection_with_an_error_is_checked_at_once():
    clock = Clock()
    refresh_connections(clock)
    used(connection).errors_occurred = True
    refresh_connections(clock)  # within the interval, but an error occurred: checked (and usable: kept)
    assert not connection.errors_occurred


def test_an_obsolete_connection_is_dropped_once_the_interval_is_over():
    clock = Clock()
    used(connection)
    refresh_connections(clock)
    connection.close_at = 0  # its CONN_MAX_AGE is over
    clock.now += CHECK_EVERY
    refresh_connections(clock)
    assert connection.connection is None


def test_never_inside_a_transaction():
    clock = Clock()
    used(connection)
    with transaction.atomic():
        connection.close_at = 0
        refresh_connections(clock)
        assert connection.connection is not None  # closing it would lose the transaction
