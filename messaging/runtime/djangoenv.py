"""Bring up Django inside a Ray worker process (once per process)."""

from __future__ import annotations

import os
import time

_ready = False

# Seconds between two checks of one connection (unless an error occurred on it since: then at once). With
# CONN_HEALTH_CHECKS a check makes the connection's next query ask the database first whether it is alive (a
# ``SELECT 1`` on PostgreSQL); checked on every batch stored or claimed, that was a round trip per batch.
CHECK_EVERY = 1.0


def ensure_django() -> None:
    global _ready
    if _ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    import django  # Django loads only in the workers that use it (the mail servers never do)

    django.setup()
    _ready = True


def refresh_connections(clock=time.monotonic) -> None:
    """Drop this thread's database connections that are too old or broken (long-lived actor threads have no
    request cycle to do it): each checked at most every ``CHECK_EVERY`` seconds, and at once after an error on
    it. Never inside a transaction, where closing would lose it."""
    from django.db import connections  # (likewise)

    open_now = connections.all(initialized_only=True)
    if any(conn.in_atomic_block for conn in open_now):
        return
    now = clock()
    for conn in open_now:
        if conn.errors_occurred or now - getattr(conn, "checked_at", float("-inf")) >= CHECK_EVERY:
            conn.close_if_unusable_or_obsolete()
            conn.checked_at = now
