"""A small fixed-window rate limit on Django's cache (the default cache: in-process memory, so each web process
counts on its own; with N processes a client gets at most N times the limit). Past a limit a page says so (429).

Limits per scope: (attempts, window in seconds). Keys are hashed, so no address or name sits in the cache.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache

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


def allow(scope: str, key: str) -> bool:
    """Count one attempt of ``key`` in ``scope``; False once the scope's limit for the window is passed."""
    limit, window = LIMITS[scope]
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]
    cache_key = f"portal-rl:{scope}:{digest}"
    if cache.add(cache_key, 1, window):
        return limit >= 1
    try:
        count = cache.incr(cache_key)
    except ValueError:  # expired between add and incr
        cache.add(cache_key, 1, window)
        count = 1
    return count <= limit


def client_ip(request) -> str:
    """The client's address. In production the web sits behind the Ingress, which appends the address it saw to
    X-Forwarded-For: the last entry is that one (the ones before it are whatever the client sent). Elsewhere (the
    sandbox, debug) the connection's own address."""
    if getattr(settings, "PRODUCTION", False):
        hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "") or "unknown"
