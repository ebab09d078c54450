"""The one internal message type, shared by every actor and by the codec."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Protocol(enum.IntEnum):
    """Same numbers as ``Protocol`` in proto/MessageDataPB.proto (the wire value); ``key`` is the stored one."""

    UNKNOWN = 0
    EMAIL = 1
    SMS = 2
    TWITTER = 3

    @property
    def key(self) -> str:
        """The name a Message row stores: ``email``, ``sms``; anything we do not deliver is ``unknown``."""
        return self.name.lower() if self in STORED_PROTOCOLS else "unknown"

    @classmethod
    def from_key(cls, key: str) -> Protocol:
        """The protocol a Message row names (``email`` -> ``EMAIL``)."""
        return cls[key.upper()]


STORED_PROTOCOLS = (Protocol.EMAIL, Protocol.SMS, Protocol.UNKNOWN)  # what a Message row can name


class Direction(enum.StrEnum):
    TO_DEVICE = "to_device"
    FROM_DEVICE = "from_device"


class Status(enum.StrEnum):
    """Where a stored message is on its way. Only messaging/outbox changes it."""

    RECEIVED = "received"  # stored, not yet handed to a sender
    QUEUED = "queued"  # due for (re)delivery at next_attempt_at
    SENDING = "sending"  # a sender holds the lease until lease_until
    SENT = "sent"  # final: the remote accepted it (remote_id)
    REJECTED = "rejected"  # final: refused at intake (reason in last_error)
    FAILED = "failed"  # last attempt failed temporarily; will be retried
    DEAD = "dead"  # final: permanent error or out of attempts


class Channel(enum.StrEnum):
    """How a stored message goes out, and so which sender delivers it (``operations/kinds.py`` says which actor
    kind has that sender: ``satellite``, or ``outbound`` for email and SMS alike)."""

    SATELLITE = "satellite"  # to a device, over the satellite network
    MAILOUT = "mailout"  # from a device, as email through the relay
    SMS = "sms"  # from a device, as a text through Twilio


def utf8_text(value: str) -> str:
    """``value`` encodable as UTF-8: surrogate pairs joined into their character, lone surrogates (from bytes
    that were not UTF-8, e.g. an SMTP envelope) replaced with U+FFFD. Well-formed text comes back unchanged."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def storable_text(value: str) -> str:
    """Text any database stores: UTF-8 (see ``utf8_text``) without NUL (PostgreSQL refuses it in text)."""
    return utf8_text(value.replace("\x00", "") if "\x00" in value else value)


_TEXT_FIELDS = ("sender", "recipient", "text", "idempotency_key", "subject", "external_id")
_TEXT_FIELDS += ("authentication", "match_sender")


@dataclass(frozen=True)
class CombinedMessage:
    """A message on its way through the system, in either direction.

    ``sender`` / ``recipient`` are addresses in the protocol's own form:
    an email address, an E.164 phone number, or ``device:<id>`` for a device.
    For a message to a device, ``recipient`` is the user's mailbox
    (``username@domain``) or the user's Twilio number; for a message from a
    device, ``recipient`` is the email address / phone number the device named.
    ``idempotency_key`` is unique per accepted message (``hive:<packetId>:<i>``,
    ``twilio:<MessageSid>``, ``smtp:<Message-ID or digest>:<rcpt>``).
    """

    direction: Direction
    protocol: Protocol
    sender: str
    recipient: str
    text: str
    idempotency_key: str
    device_id: int | None = None
    subject: str = ""
    external_id: str = ""
    received_at: float = field(default_factory=time.time)
    authentication: str = ""  # inbound mail: the SPF/DKIM/DMARC verdict (``Authentication-Results`` style)
    match_sender: str = ""  # inbound mail: the address blocked senders are matched on (else ``sender``)
    # from a device, where its network tells: roughly where it was (degrees) and how roughly (CEP radius, km)
    latitude: float | None = None
    longitude: float | None = None
    location_cep_km: float | None = None

    def __post_init__(self) -> None:
        # Every intake builds one of these, so this is the boundary where text enters: one bad character
        # must never make the batch it is stored with fail.
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            clean = storable_text(value)
            if clean is not value:
                object.__setattr__(self, name, clean)

    def routing_key(self) -> str:
        """Key that keeps one user's stream in one lane, in order (sticky hashing)."""
        if self.direction is Direction.FROM_DEVICE:
            return f"device:{self.device_id}"
        return self.recipient.lower()
