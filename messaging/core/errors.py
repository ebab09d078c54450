"""Delivery errors shared by every outbound hop (Hive, SMTP relay, Twilio).

Temporary errors are retried with backoff; permanent ones dead-letter the message.
"""

from __future__ import annotations

import email.utils
import time


class DeliveryError(Exception):
    """A send to a remote service did not succeed."""


class TemporaryDeliveryError(DeliveryError):
    """Try again later (timeouts, connection refused, 5xx, 429, SMTP 4xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Will never succeed as it is (bad recipient, unknown device, 4xx that is not about load)."""


class LeaseLost(Exception):
    """Another sender re-claimed the message mid-send (our lease ran out): stop, record nothing."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
