"""Bring up Django inside a Ray worker process (once per process)."""

from __future__ import annotations

import os

_ready = False


def ensure_django() -> None:
    global _ready
    if _ready:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "web.settings")
    import django

    django.setup()
    _ready = True
