"""The Message table: the durable outbox every delivery works from."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from messaging.core.types import STORED_PROTOCOLS, Direction, Protocol, Status

# Choices come from the one enum of each concept (messaging.core.types); the labels are what the admin shows.
DIRECTION_CHOICES = [(d.value, d.value.replace("_", " ")) for d in Direction]
PROTOCOL_LABELS = {Protocol.SMS: "SMS"}  # the others show their stored name
PROTOCOL_CHOICES = [(p.key, PROTOCOL_LABELS.get(p, p.key)) for p in STORED_PROTOCOLS]
STATUS_CHOICES = [(s.value, s.value) for s in Status]


class Message(models.Model):
    """One message in either direction. Its ``status`` changes only through messaging.outbox.store."""

    direction = models.CharField(max_length=12, choices=DIRECTION_CHOICES)
    protocol = models.CharField(max_length=8, choices=PROTOCOL_CHOICES)
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
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=Status.RECEIVED.value, db_index=True)
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
