"""Bring up Django inside a Ray worker process (once per process)."""

from __future__ import annotations

import os

_ready = False


def ensure_django() -> None:
    global _ready
    if _ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    import django  # Django loads only in the workers that use it (the mail servers never do)

    django.setup()
    _ready = True


def refresh_connections() -> None:
    """Drop database connections that are too old or broken (long-lived actor threads have no request
    cycle to do it). Never inside a transaction, where closing would lose it."""
    from django.db import close_old_connections, connections  # (likewise)

    if not any(conn.in_atomic_block for conn in connections.all(initialized_only=True)):
        close_old_connections()
