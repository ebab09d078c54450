"""Delivery errors shared by every outbound hop (Hive, SMTP relay, Twilio).

Temporary errors are retried with backoff; permanent ones dead-letter the message.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A send to a remote service did not succeed."""


class TemporaryDeliveryError(DeliveryError):
    """Try again later (timeouts, connection refused, 5xx, 429, SMTP 4xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Will never succeed as it is (bad recipient, unknown device, 4xx that is not about load)."""
