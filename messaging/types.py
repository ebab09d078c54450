"""The one internal message type, shared by every actor and by the codec."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class Protocol(enum.IntEnum):
    """Same numbers as ``Protocol`` in proto/MessageDataPB.proto."""

    UNKNOWN = 0
    EMAIL = 1
    SMS = 2
    TWITTER = 3


class Direction(enum.StrEnum):
    TO_DEVICE = "to_device"
    FROM_DEVICE = "from_device"


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

    def routing_key(self) -> str:
        """Key that keeps one user's stream on one user actor (sticky hashing)."""
        if self.direction is Direction.FROM_DEVICE:
            return f"device:{self.device_id}"
        return self.recipient.lower()
