"""Who is a message for, and may it pass? Pure decisions over plain data, no I/O.

The user desk looks the facts up (user, device, blocked senders, contacts, the month's and the last hour's counts)
and asks these functions; the mail server maps the verdicts onto SMTP replies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from messaging.core.addresses import InvalidAddress, email_address
from messaging.core.phones import normalise_phone, parse_countries, sms_destination_refusal
from messaging.core.redact import mask_address
from messaging.core.types import Channel, CombinedMessage, Direction, Protocol


class Verdict(enum.StrEnum):
    ACCEPT = "accept"
    UNKNOWN_RECIPIENT = "unknown_recipient"  # no such mailbox / number / device
    INACTIVE_USER = "inactive_user"
    NO_DEVICE = "no_device"  # user has no active device to deliver to
    INACTIVE_DEVICE = "inactive_device"
    BLOCKED_SENDER = "blocked_sender"
    QUOTA_EXCEEDED = "quota_exceeded"  # the user's monthly quota of messages to the device
    BAD_DESTINATION = "bad_destination"  # a device named an address we cannot send to
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    REFUSED_DESTINATION = "refused_destination"  # a device named a number we never text (toll fraud)
    OUTBOUND_QUOTA_EXCEEDED = "outbound_quota_exceeded"  # the user's monthly quota of messages from the device
    DEVICE_RATE_LIMITED = "device_rate_limited"  # the device sent DEVICE_OUTBOUND_PER_HOUR in the last hour
    RATE_LIMITED = "rate_limited"  # temporary: this sender sent INBOUND_PER_SENDER_PER_HOUR to this user


# Verdicts whose message is not stored at all: the sender is told to try again later (SMTP 4xx, HTTP 503),
# so an honest sender's retry is stored once the hour has room again.
NOT_STORED = frozenset({Verdict.RATE_LIMITED})


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
    # The next three only answer a device's own messages, never an SMTP client; the words are stored.
    Verdict.REFUSED_DESTINATION: (550, "5.7.1 Destination number refused"),
    Verdict.OUTBOUND_QUOTA_EXCEEDED: (552, "5.2.2 Monthly quota of messages from the device is used up"),
    Verdict.DEVICE_RATE_LIMITED: (550, "5.7.1 Device is sending too many messages"),
    Verdict.RATE_LIMITED: (451, "4.7.1 Too many messages from you to this mailbox; try again later"),
}


@dataclass(frozen=True)
class Policy:
    """The operator's limits (from ``Config``). 0 turns an hourly limit off."""

    sms_allowed_countries: frozenset[str] = frozenset({"US", "CA"})
    device_outbound_per_hour: int = 0
    inbound_per_sender_per_hour: int = 0

    @classmethod
    def from_config(cls, config) -> Policy:
        return cls(
            sms_allowed_countries=parse_countries(config.sms_allowed_countries),
            device_outbound_per_hour=config.device_outbound_per_hour,
            inbound_per_sender_per_hour=config.inbound_per_sender_per_hour,
        )

    def hourly_limit(self, direction: Direction) -> int:
        """The limit on ``last_hour`` for a message in this direction (0: none)."""
        if direction is Direction.FROM_DEVICE:
            return self.device_outbound_per_hour
        return self.inbound_per_sender_per_hour


DEFAULT_POLICY = Policy()  # the default countries, no hourly limits (pure callers and tests)


@dataclass(frozen=True)
class ContactFacts:
    """One of the user's contacts: the short name the device may write, and the address it stands for."""

    name: str  # lower case
    protocol: Protocol  # EMAIL or SMS: how a message to this contact goes out, whatever the device asked for
    address: str  # normalised: an email address or an E.164 number


@dataclass(frozen=True)
class UserFacts:
    id: int
    username: str
    is_active: bool
    monthly_quota: int | None  # messages to the device per calendar month (None: unlimited)
    twilio_number: str | None
    inbound_this_month: int  # messages to the device stored (not refused) this month
    blocked: frozenset[str]  # normalised addresses
    monthly_outbound_quota: int | None = None  # messages from the device per calendar month (None: unlimited)
    outbound_this_month: int = 0  # messages from the device stored (not refused) this month
    contacts: tuple[ContactFacts, ...] = ()
    contacts_only: bool = False  # only contacts and ``own_email`` may reach the device
    own_email: str = ""  # the user's personal email, lower case, when confirmed (else "")

    def may_reach_device(self, address: str) -> bool:
        """In contacts-only mode: is ``address`` (an email address or E.164 number) one of those allowed?"""
        address = address.strip().lower()
        if not address:
            return False
        return address == self.own_email or any(address == c.address.lower() for c in self.contacts)


@dataclass(frozen=True)
class DeviceFacts:
    id: int
    device_id: int
    is_active: bool


def device_destination(msg: CombinedMessage, contacts: tuple[ContactFacts, ...] = ()) -> tuple[CombinedMessage, bool]:
    """A device's message with its recipient made canonical, and whether that is deliverable.

    A recipient that is one of the user's contacts' short names (case-insensitive) becomes the contact's address,
    on the contact's channel (an email contact goes out as email, a phone contact as SMS, whatever protocol the
    device used). Anything else is read as the device's protocol says: an E.164 number for SMS, an email address
    for email. Other directions pass unchanged.
    """
    if msg.direction is not Direction.FROM_DEVICE:
        return msg, True
    name = msg.recipient.strip().lower()
    for contact in contacts:
        if contact.name == name:
            return replace(msg, recipient=contact.address, protocol=contact.protocol), True
    if msg.protocol is Protocol.SMS:
        number = normalise_phone(msg.recipient)
        return (replace(msg, recipient=number), True) if number else (msg, False)
    try:
        email_address(msg.recipient)
    except InvalidAddress:
        return msg, False
    return msg, True


def contacts_only_refuses(msg: CombinedMessage, user: UserFacts) -> bool:
    """Does the user's contacts-only mode refuse this message to the device?

    Like a block, it holds on the address sender authentication vouches for: for mail that went through the checks
    (``authentication`` set), ``match_sender`` (the From when DMARC passed, else the envelope sender) must be allowed,
    and so must the From the device shows; a null envelope sender without DMARC vouches for nobody and is refused.
    Elsewhere (a text, the mail server's RCPT probe) the sender itself must be allowed.
    """
    if not user.contacts_only or msg.direction is not Direction.TO_DEVICE:
        return False
    vouched = msg.match_sender if msg.authentication else msg.sender
    return not all(user.may_reach_device(address) for address in {msg.sender, vouched})


def decide(
    msg: CombinedMessage,
    user: UserFacts | None,
    device: DeviceFacts | None,
    *,
    destination_ok: bool = True,
    policy: Policy = DEFAULT_POLICY,
    last_hour: int = 0,
) -> Verdict:
    """May this message be accepted for this user and device?

    ``device`` is the user's active device (to-device) or the sending device (from-device).
    ``destination_ok`` says whether a from-device recipient is a deliverable address.
    ``last_hour`` counts the messages stored (not refused) in the last hour from this message's sender to
    this user (to-device), or from this device (from-device).

    Each direction is judged on its own counts: however much arrives for a device, its own messages
    (an SOS among them) are never refused for it.
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
    limit = policy.hourly_limit(msg.direction)
    if msg.direction is Direction.TO_DEVICE:
        # A block holds on the From and on the address sender authentication vouches for (the envelope sender
        # unless DMARC passed): a blocked sender who forges another From is still caught by the envelope.
        if any(address.lower() in user.blocked for address in (msg.sender, msg.match_sender) if address):
            return Verdict.BLOCKED_SENDER
        if contacts_only_refuses(msg, user):  # refused the way a blocked sender is
            return Verdict.BLOCKED_SENDER
        if user.monthly_quota is not None and user.inbound_this_month >= user.monthly_quota:
            return Verdict.QUOTA_EXCEEDED
        if limit and last_hour >= limit:
            return Verdict.RATE_LIMITED
        return Verdict.ACCEPT
    if not destination_ok:
        return Verdict.BAD_DESTINATION
    if msg.protocol is Protocol.SMS:
        if not user.twilio_number:
            return Verdict.BAD_DESTINATION
        if sms_destination_refusal(msg.recipient, policy.sms_allowed_countries) is not None:
            return Verdict.REFUSED_DESTINATION
    if user.monthly_outbound_quota is not None and user.outbound_this_month >= user.monthly_outbound_quota:
        return Verdict.OUTBOUND_QUOTA_EXCEEDED
    if limit and last_hour >= limit:
        return Verdict.DEVICE_RATE_LIMITED
    return Verdict.ACCEPT


def refusal_reason(
    verdict: Verdict,
    msg: CombinedMessage,
    user: UserFacts | None,
    *,
    policy: Policy = DEFAULT_POLICY,
    last_hour: int = 0,
) -> str:
    """What is stored (``last_error``) with a refused message: the verdict, and for the refusals of a
    device's own messages a sentence its owner can read. Empty for an acceptance."""
    if verdict is Verdict.ACCEPT:
        return ""
    if verdict is Verdict.BAD_DESTINATION and msg.direction is Direction.FROM_DEVICE:
        no_number = user is not None and not user.twilio_number
        if msg.protocol is Protocol.SMS and no_number and normalise_phone(msg.recipient):
            return f"{verdict.value}: not sent, this account has no number to text from"
        return f"{verdict.value}: not sent, no contact or address '{_as_written(msg.recipient)}'"
    if verdict is Verdict.REFUSED_DESTINATION:
        why = sms_destination_refusal(msg.recipient, policy.sms_allowed_countries)
        return f"{verdict.value}: {why}"
    if verdict is Verdict.OUTBOUND_QUOTA_EXCEEDED and user is not None:
        quota = user.monthly_outbound_quota
        return f"{verdict.value}: not sent, this month's quota of {quota} messages from the device is used up"
    if verdict is Verdict.DEVICE_RATE_LIMITED:
        limit = policy.device_outbound_per_hour
        return (
            f"{verdict.value}: not sent, the device already sent {last_hour} messages in the last hour "
            f"(limit {limit}, DEVICE_OUTBOUND_PER_HOUR)"
        )
    return verdict.value


def _as_written(recipient: str) -> str:
    """A device's unusable recipient for a stored reason (which is logged too): a name as written, anything like an
    address or a number masked (the owner sees the whole recipient beside the reason anyway)."""
    text = recipient.strip()
    if "@" in text or sum(ch.isdigit() for ch in text) > 4:
        return mask_address(text)
    return text if len(text) <= 40 else text[:40] + "…"


def outbound_channel(direction: Direction, protocol: Protocol) -> Channel:
    """Which sender pool delivers a stored message."""
    if direction is Direction.TO_DEVICE:
        return Channel.SATELLITE
    if protocol is Protocol.EMAIL:
        return Channel.MAILOUT
    if protocol is Protocol.SMS:
        return Channel.SMS
    raise ValueError(f"no channel for {direction.value} {protocol.name}")
