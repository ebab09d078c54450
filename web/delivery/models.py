"""The Message table: the durable outbox every delivery works from."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Message(models.Model):
    class Direction(models.TextChoices):
        TO_DEVICE = "to_device", "to device"
        FROM_DEVICE = "from_device", "from device"

    class Protocol(models.TextChoices):
        EMAIL = "email", "email"
        SMS = "sms", "SMS"
        UNKNOWN = "unknown", "unknown"  # dead letters that could not be decoded

    class Status(models.TextChoices):
        RECEIVED = "received", "received"  # stored, not yet handed to a sender
        QUEUED = "queued", "queued"  # due for (re)delivery at next_attempt_at
        SENDING = "sending", "sending"  # a sender holds the lease until lease_until
        SENT = "sent", "sent"  # final: the remote accepted it (remote_id)
        REJECTED = "rejected", "rejected"  # final: refused at intake (reason in last_error)
        FAILED = "failed", "failed"  # last attempt failed temporarily; will be retried
        DEAD = "dead", "dead"  # final: permanent error or out of attempts

    FINAL = (Status.SENT, Status.REJECTED, Status.DEAD)

    direction = models.CharField(max_length=12, choices=Direction.choices)
    protocol = models.CharField(max_length=8, choices=Protocol.choices)
    sender = models.CharField(max_length=320)
    recipient = models.CharField(max_length=320)
    subject = models.CharField(max_length=255, blank=True)
    text = models.TextField(blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="messages"
    )
    device = models.ForeignKey(
        "accounts.Device", null=True, blank=True, on_delete=models.PROTECT, related_name="messages"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    error_history = models.JSONField(default=list, blank=True)
    idempotency_key = models.CharField(max_length=255, unique=True)
    external_id = models.CharField(
        "inbound id", max_length=255, blank=True, help_text="Hive packet, Twilio SID, Message-ID"
    )
    remote_id = models.CharField(
        "outbound id", max_length=255, blank=True, help_text="Hive packet ids, Twilio SID, relay id"
    )
    authentication = models.CharField(
        "sender authentication",
        max_length=500,
        blank=True,
        help_text="inbound mail: SPF, DKIM and DMARC verdicts, Authentication-Results style",
    )
    # From a device whose network tells where it was (RockBLOCK): degrees, and the accuracy as a CEP radius in km.
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    location_cep_km = models.FloatField("position accuracy (km)", null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True, help_text="which claim holds the lease")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.direction} {self.protocol} {self.sender} -> {self.recipient} [{self.status}]"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL
