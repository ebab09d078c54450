"""Users, their Swarm devices, and senders they have blocked."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from messaging.core.addresses import MAILBOX_NAME
from messaging.core.phones import normalise_phone
from messaging.satellite.networks import DEFAULT_NETWORK, NETWORKS

MAILBOX_VALIDATOR = RegexValidator(
    rf"^{MAILBOX_NAME.pattern}$",
    "Lower-case letters, digits, '.', '_' and '-' only; it is the mailbox name (username@domain).",
)


class User(AbstractUser):
    """A person with a satellite device. ``username`` is the mailbox: ``username@EMAIL_DOMAIN``."""

    username = models.CharField(
        "mailbox name",
        max_length=64,
        unique=True,
        validators=[MAILBOX_VALIDATOR],
        help_text="Mail to <mailbox name>@the email domain reaches this user's device.",
    )
    contact_email = models.EmailField("personal contact email", blank=True)
    twilio_number = models.CharField(
        "Twilio number",
        max_length=20,
        unique=True,
        null=True,
        blank=True,
        help_text="E.164, e.g. +14155550100. Texts to this number reach the user's device.",
    )
    monthly_quota = models.PositiveIntegerField(
        "monthly quota to the device",
        null=True,
        blank=True,
        help_text=(
            "Messages TO the device (email and SMS in) per calendar month; more are refused. "
            "The device's own messages never count here. Empty: unlimited."
        ),
    )
    monthly_outbound_quota = models.PositiveIntegerField(
        "monthly quota from the device",
        null=True,
        blank=True,
        help_text=(
            "Messages FROM the device (email and SMS out) per calendar month; more are stored, not sent. "
            "Empty: unlimited (recommended: an SOS must never be refused)."
        ),
    )

    share_location = models.BooleanField(
        "share my location",
        default=False,
        help_text=(
            "Emails and texts from the device carry a map link to its approximate position (where its network "
            "tells it, e.g. RockBLOCK) and the accuracy. Off: the position is never sent to anyone."
        ),
    )

    def clean(self) -> None:
        super().clean()
        self.username = (self.username or "").strip().lower()
        if self.twilio_number:
            number = normalise_phone(self.twilio_number)
            if number is None:
                raise ValidationError({"twilio_number": "Not a valid phone number (use E.164, e.g. +14155550100)."})
            self.twilio_number = number
        else:
            self.twilio_number = None

    @property
    def mailbox(self) -> str:
        return f"{self.username}@{settings.EMAIL_DOMAIN}"


NETWORK_LABELS = {"swarm": "Swarm", "rockblock": "RockBLOCK (Iridium SBD)"}


class Device(models.Model):
    """A satellite device on one network (Swarm, RockBLOCK). A user has at most one active device at a time."""

    network = models.CharField(
        "satellite network",
        max_length=16,
        choices=[(name, NETWORK_LABELS.get(name, name)) for name in NETWORKS],
        default=DEFAULT_NETWORK,
    )
    device_id = models.PositiveBigIntegerField(
        "device id", unique=True, help_text="Swarm: the Hive's device id. RockBLOCK: the modem's 15-digit IMEI."
    )
    owner = models.ForeignKey(User, on_delete=models.PROTECT, related_name="devices")
    nickname = models.CharField(max_length=64, blank=True)
    is_active = models.BooleanField("active", default=True)
    registered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner"], condition=Q(is_active=True), name="one_active_device_per_user"),
        ]
        ordering = ["device_id"]

    def __str__(self) -> str:
        label = f" ({self.nickname})" if self.nickname else ""
        return f"device {self.device_id}{label}"

    def clean(self) -> None:
        super().clean()
        network = NETWORKS.get(self.network)
        if network is not None and self.device_id is not None:
            try:
                network.parse_device_id(str(self.device_id))
            except ValueError as exc:
                raise ValidationError({"device_id": str(exc)}) from None


class BlockedSender(models.Model):
    """An email address or phone number whose messages a user refuses."""

    EMAIL = "email"
    PHONE = "phone"
    KIND_CHOICES = [(EMAIL, "email"), (PHONE, "phone")]

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blocked_senders")
    address = models.CharField(max_length=254, help_text="Email address or phone number; normalised on save.")
    kind = models.CharField(max_length=8, choices=KIND_CHOICES, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "address"], name="unique_block_per_user")]

    def __str__(self) -> str:
        return f"{self.address} blocked by {self.user.username}"

    @staticmethod
    def normalise(address: str) -> tuple[str, str]:
        """(kind, normalised address): lower-cased email, or E.164 phone."""
        address = (address or "").strip()
        if "@" in address:
            return BlockedSender.EMAIL, address.lower()
        number = normalise_phone(address)
        if number is None:
            raise ValidationError({"address": "Neither an email address nor a valid phone number."})
        return BlockedSender.PHONE, number

    def clean(self) -> None:
        self.kind, self.address = self.normalise(self.address)

    def save(self, *args, **kwargs) -> None:
        self.kind, self.address = self.normalise(self.address)
        super().save(*args, **kwargs)
