"""A small fixed-window rate limit kept in the database (``RateLimitWindow``), so every web process counts against
the same limit (Serve replicas on several nodes, several pods). Past a limit a page says so (429).

Limits per scope: (attempts, window in seconds). Keys are hashed, so no address or name is stored.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .models import RateLimitWindow

LIMITS: dict[str, tuple[int, int]] = {
    "login-ip": (30, 900),  # login attempts per client address per 15 minutes
    "login-name": (10, 900),  # login attempts per mailbox name per 15 minutes
    "signup-try-ip": (60, 3600),  # sign-up form posts per client address per hour (names probed, typos)
    "signup-ip": (10, 3600),  # accounts made per client address per hour
    "reset-ip": (5, 3600),  # password-reset requests per client address per hour
    "reset-email": (3, 3600),  # password-reset requests per email address per hour
    "verify-user": (5, 3600),  # verification mails a user may ask for per hour
    "claim-user": (10, 3600),  # device claims (id + code) a user may try per hour
    "lookup-ip": (30, 3600),  # device look-ups (provisioning API) per client address per hour
}


def window_key(scope: str, key: str) -> str:
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]
    return f"{scope}:{digest}"


def allow(scope: str, key: str) -> bool:
    """Count one attempt of ``key`` in ``scope``; False once the scope's limit for the window is passed."""
    limit, window = LIMITS[scope]
    name, now = window_key(scope, key), timezone.now()
    with transaction.atomic():
        counted = RateLimitWindow.objects.filter(key=name, window_ends__gt=now).update(attempts=F("attempts") + 1)
        if counted:
            return RateLimitWindow.objects.get(key=name).attempts <= limit
        fresh = {"window_ends": now + timedelta(seconds=window), "attempts": 1}
        if RateLimitWindow.objects.filter(key=name).update(**fresh) == 0:  # none yet (or expired: a new window)
            try:
                with transaction.atomic():
                    RateLimitWindow.objects.create(key=name, **fresh)
            except IntegrityError:  # another process made it just now: count against that window
                RateLimitWindow.objects.filter(key=name).update(attempts=F("attempts") + 1)
                return RateLimitWindow.objects.get(key=name).attempts <= limit
            RateLimitWindow.objects.filter(window_ends__lt=now - timedelta(days=1)).delete()  # old windows go
    return limit >= 1


def client_ip(request) -> str:
    """The client's address. In production the web sits behind the Ingress, which appends the address it saw to
    X-Forwarded-For: the last entry is that one (the ones before it are whatever the client sent). Elsewhere (the
    sandbox, debug) the connection's own address."""
    if getattr(settings, "PRODUCTION", False):
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "") or "unknown"
