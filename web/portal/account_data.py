"""A person's data: everything we hold about them as JSON, and deleting the account (messages anonymised, devices
released, the mailbox name retired)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging.outbox import store as outbox
from web.accounts.models import Device, DeviceAssignment, RetiredMailbox, User
from web.delivery.models import Message

from .words import reason_words, state_words

log = logging.getLogger(__name__)

DELETED = "(deleted)"
BATCH = 500


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def export_data(user: User) -> dict:
    """Everything the service holds about ``user`` (their account, devices, blocks and messages)."""
    assignments = DeviceAssignment.objects.filter(user=user).select_related("device").order_by("claimed_at", "pk")
    messages = Message.objects.filter(user=user).order_by("created_at", "pk")
    return {
        "exported_at": timezone.now().isoformat(),
        "account": {
            "mailbox": f"{user.username}@{settings.EMAIL_DOMAIN}",
            "personal_email": user.contact_email,
            "personal_email_confirmed": user.contact_email_verified,
            "phone_number": user.twilio_number,
            "monthly_quota_to_device": user.monthly_quota,
            "monthly_quota_from_device": user.monthly_outbound_quota,
            "contacts_only": user.contacts_only,
            "joined": _iso(user.date_joined),
            "last_login": _iso(user.last_login),
        },
        "devices": [
            {
                "device_id": a.device.device_id,
                "claimed_at": _iso(a.claimed_at),
                "released_at": _iso(a.released_at),
                "active": a.released_at is None and a.device.owner_id == user.pk and a.device.is_active,
            }
            for a in assignments
        ],
        "contacts": [
            {"name": c.name, "address": c.address, "kind": c.kind, "since": _iso(c.created_at)}
            for c in user.contacts.order_by("name")
        ],
        "blocked_senders": [
            {"address": b.address, "kind": b.kind, "since": _iso(b.created_at)}
            for b in user.blocked_senders.order_by("address")
        ],
        "messages": [
            {
                "direction": m.direction,
                "channel": m.protocol,
                "from": m.sender,
                "to": m.recipient,
                "subject": m.subject,
                "text": m.text,
                "state": m.status,
                "state_in_words": state_words(m.direction, m.status),
                "reason": reason_words(m.last_error) if m.last_error else "",
                "created_at": _iso(m.created_at),
                "sent_at": _iso(m.sent_at),
            }
            for m in messages.iterator(chunk_size=BATCH)
        ],
    }


def delete_account(user: User) -> int:
    """Delete ``user``: their messages stay for the service's counts but lose everything personal (text, subject,
    addresses, ids of the remote services) and their owner; messages not yet delivered are stopped (dead);
    their devices go back to the inventory; blocks, contacts and device history go with the account; the mailbox name is
    retired so nobody else receives mail meant for them. Returns how many messages were anonymised."""
    user_id, name = user.pk, user.username
    with transaction.atomic():
        Device.objects.filter(owner=user).update(owner=None, is_active=False, nickname="", claimed_at=None)
        count = outbox.forget_user_messages(user_id, DELETED)
        RetiredMailbox.retire(name)
        user.delete()
    log.info("account deleted user_id=%s messages_anonymised=%d", user_id, count)
    return count
