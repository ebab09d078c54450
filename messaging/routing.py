"""Who is a message for, and may it pass? Pure decisions over plain data, no I/O.

The user actor looks the facts up (user, device, blocked senders, month's count) and asks these
functions; the mail server maps the verdicts onto SMTP replies.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

from .types import CombinedMessage, Direction, Protocol


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    UNKNOWN_RECIPIENT = "unknown_recipient"  # no such mailbox / number / device
    INACTIVE_USER = "inactive_user"
    NO_DEVICE = "no_device"  # user has no active device to deliver to
    INACTIVE_DEVICE = "inactive_device"
    BLOCKED_SENDER = "blocked_sender"
    QUOTA_EXCEEDED = "quota_exceeded"
    BAD_DESTINATION = "bad_destination"  # a device named an address we cannot send to
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"


# What the sending side is told (SMTP reply for email; the same words are stored as the reason).
SMTP_REPLIES: dict[Verdict, tuple[int, str]] = {
    Verdict.ACCEPT: (250, "2.0.0 OK"),
    Verdict.UNKNOWN_RECIPIENT: (550, "5.1.1 No such mailbox here"),
    Verdict.INACTIVE_USER: (550, "5.2.1 Mailbox disabled"),
    Verdict.NO_DEVICE: (550, "5.2.1 Mailbox has no active device"),
    Verdict.INACTIVE_DEVICE: (550, "5.2.1 Mailbox has no active device"),
    Verdict.BLOCKED_SENDER: (550, "5.7.1 Sender refused by recipient"),
    Verdict.QUOTA_EXCEEDED: (552, "5.2.2 Recipient's monthly message quota is used up"),
    Verdict.BAD_DESTINATION: (550, "5.1.3 Bad destination address"),
    Verdict.UNSUPPORTED_PROTOCOL: (550, "5.6.0 Unsupported protocol"),
}


@dataclass(frozen=True)
class UserFacts:
    id: int
    username: str
    is_active: bool
    monthly_quota: int | None
    twilio_number: str | None
    messages_this_month: int
    blocked: frozenset[str]  # normalised addresses


@dataclass(frozen=True)
class DeviceFacts:
    id: int
    device_id: int
    is_active: bool


def decide(
    msg: CombinedMessage,
    user: UserFacts | None,
    device: DeviceFacts | None,
    *,
    destination_ok: bool = True,
) -> Verdict:
    """May this message be accepted for this user and device?

    ``device`` is the user's active device (to-device) or the sending device (from-device).
    ``destination_ok`` says whether a from-device recipient is a deliverable address.
    """
    if user is None:
        return Verdict.UNKNOWN_RECIPIENT
    if not user.is_active:
        return Verdict.INACTIVE_USER
    if msg.protocol not in (Protocol.EMAIL, Protocol.SMS):
        return Verdict.UNSUPPORTED_PROTOCOL
    if device is None:
        return Verdict.NO_DEVICE
    if not device.is_active:
        return Verdict.INACTIVE_DEVICE
    if msg.direction is Direction.TO_DEVICE and msg.sender.lower() in user.blocked:
        return Verdict.BLOCKED_SENDER
    if msg.direction is Direction.FROM_DEVICE:
        if not destination_ok:
            return Verdict.BAD_DESTINATION
        if msg.protocol is Protocol.SMS and not user.twilio_number:
            return Verdict.BAD_DESTINATION
    if user.monthly_quota is not None and user.messages_this_month >= user.monthly_quota:
        return Verdict.QUOTA_EXCEEDED
    return Verdict.ACCEPT


def outbound_channel(direction: Direction, protocol: Protocol) -> str:
    """Which sender pool delivers a stored message: ``satellite``, ``mailout`` or ``sms``."""
    if direction is Direction.TO_DEVICE:
        return "satellite"
    if protocol is Protocol.EMAIL:
        return "mailout"
    if protocol is Protocol.SMS:
        return "sms"
    raise ValueError(f"no channel for {direction.value} {protocol.name}")


def stable_index(key: str, size: int) -> int:
    """Sticky pool index for a routing key: the same key always lands on the same member."""
    if size <= 0:
        raise ValueError("pool size must be positive")
    return zlib.crc32(key.encode("utf-8")) % size
