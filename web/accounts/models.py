"""Users, their satellite devices, their contacts, and senders they have blocked."""

from __future__ import annotations

import hashlib
import re
import secrets

from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from messaging.core.addresses import MAILBOX_NAME, InvalidAddress, email_address
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
    contact_email_verified = models.BooleanField(
        "personal email verified",
        default=False,
        help_text="The owner opened the link mailed to the personal email; password resets go only there.",
    )
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

    contacts_only = models.BooleanField(
        "contacts only",
        default=False,
        help_text=(
            "Only the user's contacts and their own confirmed personal email can reach the device; everyone else "
            "is refused as a blocked sender is."
        ),
    )

    def clean(self) -> None:
        super().clean()
        self.username = (self.username or "").strip().lower()
        if self.contact_email:  # the address rule every sender uses (on top of EmailField's own check)
            try:
                email_address(self.contact_email)
            except InvalidAddress as exc:
                raise ValidationError({"contact_email": f"Not an address mail can be sent to: {exc}"}) from None
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


CLAIM_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a label without mistakes
CLAIM_CODE_LENGTH = 12  # 31**12, about 2**59
CLAIM_HASH_ITERATIONS = 60_000  # PBKDF2-SHA256: codes are random, and claims are rate limited


def generate_claim_code() -> str:
    """A fresh random claim code, grouped for a label: ``ABCD-EFGH-JKMN``."""
    raw = "".join(secrets.choice(CLAIM_ALPHABET) for _ in range(CLAIM_CODE_LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, CLAIM_CODE_LENGTH, 4))


def normalise_claim_code(code: str) -> str:
    """What is compared: upper case, without spaces and dashes (people type labels loosely)."""
    return "".join(ch for ch in (code or "").upper() if ch not in " -\t")


_HASHER = PBKDF2PasswordHasher()
# Checked when no device matches, so an unknown id takes as long to refuse as a wrong code.
_DUMMY_HASH = _HASHER.encode("not-a-code", "dummysalt0000000", iterations=CLAIM_HASH_ITERATIONS)


NETWORK_LABELS = {"swarm": "Swarm", "rockblock": "RockBLOCK (Iridium SBD)"}


class Device(models.Model):
    """A satellite device on one network (Swarm, RockBLOCK). In the inventory (no owner, inactive) until someone
    claims it with its id and claim code; a user has at most one active device at a time."""

    network = models.CharField(
        "satellite network",
        max_length=16,
        choices=[(name, NETWORK_LABELS.get(name, name)) for name in NETWORKS],
        default=DEFAULT_NETWORK,
    )
    device_id = models.PositiveBigIntegerField(
        "device id", unique=True, help_text="Swarm: the Hive's device id. RockBLOCK: the modem's 15-digit IMEI."
    )
    owner = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="devices", null=True, blank=True, help_text="Empty: in inventory."
    )
    nickname = models.CharField(max_length=64, blank=True)
    is_active = models.BooleanField("active", default=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    claim_code = models.CharField(
        "claim code (hashed)",
        max_length=128,
        blank=True,
        editable=False,
        help_text="Only a hash is kept; the code itself is shown once, when it is made. Empty: cannot be claimed.",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner"], condition=Q(is_active=True), name="one_active_device_per_user"),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(owner__isnull=False),
                name="an_active_device_has_an_owner",
                violation_error_message="A device without an owner (in inventory) cannot be active.",
            ),
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

    def set_claim_code(self, code: str) -> None:
        """Keep the hash of ``code`` (call save)."""
        normal = normalise_claim_code(code)
        if len(normal) < 8:
            raise ValidationError({"claim_code": "A claim code has at least 8 letters or digits."})
        self.claim_code = _HASHER.encode(normal, _HASHER.salt(), iterations=CLAIM_HASH_ITERATIONS)

    def check_claim_code(self, code: str) -> bool:
        """Does ``code`` match (compared in constant time)? Never for a device without a code."""
        normal = normalise_claim_code(code)
        if not self.claim_code or not normal:
            _HASHER.verify(normal or "-", _DUMMY_HASH)
            return False
        return _HASHER.verify(normal, self.claim_code)

    @staticmethod
    def no_such_device(code: str) -> bool:
        """The work of a code check for an id that matches nothing (always False): unknown ids and wrong codes take
        the same time."""
        _HASHER.verify(normalise_claim_code(code) or "-", _DUMMY_HASH)
        return False


class DeviceAssignment(models.Model):
    """Who had which device when: one row per claim, closed when the device is released."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="assignments")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="device_assignments")
    claimed_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-claimed_at", "-pk"]

    def __str__(self) -> str:
        return f"device {self.device.device_id} with {self.user.username}"


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


CONTACT_NAME = re.compile(r"[a-z0-9_-]{1,20}")


def contact_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a contact's short name (None: it can). A short name is what the device writes instead
    of an address, so it must never be mistaken for one: no ``@``, and at least one letter (digits alone look like
    a phone number)."""
    if "@" in name:
        return "A short name has no '@' (it stands for an address; it is not one)."
    if not CONTACT_NAME.fullmatch(name):
        return "1 to 20 lower-case letters, digits, '-' or '_'."
    if not any(ch.isalpha() for ch in name) or normalise_phone(name) is not None:
        return "A short name needs a letter: digits alone look like a phone number."
    return None


def validate_contact_name(name: str) -> None:
    problem = contact_name_problem(name)
    if problem:
        raise ValidationError(problem)


class ShortNameField(models.CharField):
    """A contact's short name, stripped and lower-cased before it is validated (``Mom`` in the admin is ``mom``)."""

    def to_python(self, value):
        value = super().to_python(value)
        return value.strip().lower() if isinstance(value, str) else value


class Contact(models.Model):
    """A short name the device can write instead of an address (``mom`` -> an email address or a phone number)."""

    EMAIL = "email"
    PHONE = "phone"
    KIND_CHOICES = [(EMAIL, "email"), (PHONE, "phone")]

    owner = models.ForeignKey(User, on_delete=models.CASCADE, related_name="contacts")
    name = ShortNameField(
        "short name",
        max_length=20,
        validators=[validate_contact_name],
        help_text="What the device writes instead of the address: 1 to 20 lower-case letters, digits, '-' or '_'.",
    )
    address = models.CharField(max_length=254, help_text="Email address or phone number; normalised on save.")
    kind = models.CharField(max_length=8, choices=KIND_CHOICES, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="unique_contact_name_per_owner")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} of {self.owner.username}"

    @staticmethod
    def normalise(address: str) -> tuple[str, str]:
        """(kind, normalised address): an email address by the one address rule (``email_address``), or E.164."""
        address = (address or "").strip()
        if "@" in address:
            try:
                return Contact.EMAIL, email_address(address)
            except InvalidAddress as exc:
                raise ValidationError({"address": f"Not an address mail can be sent to: {exc}"}) from None
        number = normalise_phone(address)
        if number is None:
            raise ValidationError({"address": "Neither an email address nor a valid phone number."})
        return Contact.PHONE, number

    def clean(self) -> None:
        self.name = (self.name or "").strip().lower()
        self.kind, self.address = self.normalise(self.address)

    def save(self, *args, **kwargs) -> None:
        self.name = (self.name or "").strip().lower()
        validate_contact_name(self.name)
        self.kind, self.address = self.normalise(self.address)
        super().save(*args, **kwargs)


class RetiredMailbox(models.Model):
    """A mailbox name whose account was deleted: never given out again, so nobody receives mail meant for the
    person who had it. Only a hash of the name is kept (the name itself is personal data)."""

    name_hash = models.CharField(max_length=64, unique=True)
    retired_at = models.DateTimeField(auto_now_add=True)

    @staticmethod
    def hash(name: str) -> str:
        return hashlib.sha256((name or "").strip().lower().encode()).hexdigest()

    @classmethod
    def retire(cls, name: str) -> None:
        cls.objects.get_or_create(name_hash=cls.hash(name))

    @classmethod
    def is_retired(cls, name: str) -> bool:
        return cls.objects.filter(name_hash=cls.hash(name)).exists()
