"""What the self-service web keeps of its own: the rate-limit counters (web/portal/ratelimit.py)."""

from __future__ import annotations

from django.db import models


class RateLimitWindow(models.Model):
    """Attempts of one key in one scope within a fixed window. In the database, so every web process (Serve
    replicas, pods) counts against the same limit. The key is a hash: no address or name is stored."""

    key = models.CharField(max_length=80, unique=True)
    window_ends = models.DateTimeField(db_index=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "rate-limit window"

    def __str__(self) -> str:
        return f"{self.key.split(':')[0]}: {self.attempts} until {self.window_ends:%Y-%m-%d %H:%M}"
