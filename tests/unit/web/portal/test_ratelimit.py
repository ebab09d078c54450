"""The portal's rate limits count in the database, so every web process (Serve replicas, pods) shares them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from web.portal import ratelimit
from web.portal.models import RateLimitWindow

pytestmark = pytest.mark.django_db


def test_a_limit_holds_across_processes_and_stores_no_address(monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "login-ip", (3, 900))
    assert [ratelimit.allow("login-ip", "203.0.113.7") for _ in range(4)] == [True, True, True, False]
    cache.clear()  # a process's own memory is not where the count lives
    assert not ratelimit.allow("login-ip", "203.0.113.7")
    assert ratelimit.allow("login-ip", "203.0.113.8"), "another address counts on its own"
    assert ratelimit.allow("login-name", "203.0.113.7"), "another scope counts on its own"
    [row] = RateLimitWindow.objects.filter(key__startswith="login-ip:").exclude(
        key=ratelimit.window_key("login-ip", "203.0.113.8")
    )
    assert row.attempts == 5 and "203.0.113" not in row.key


def test_a_new_window_starts_when_the_old_one_ends(monkeypatch):
    monkeypatch.setitem(ratelimit.LIMITS, "claim-user", (1, 3600))
    assert ratelimit.allow("claim-user", "42") and not ratelimit.allow("claim-user", "42")
    RateLimitWindow.objects.update(window_ends=timezone.now() - timedelta(seconds=1))
    assert ratelimit.allow("claim-user", "42") and not ratelimit.allow("claim-user", "42")


def test_windows_ended_a_day_ago_are_cleared_away():
    RateLimitWindow.objects.create(key="login-ip:old", window_ends=timezone.now() - timedelta(days=2), attempts=9)
    ratelimit.allow("login-ip", "198.51.100.1")
    assert not RateLimitWindow.objects.filter(key="login-ip:old").exists()
