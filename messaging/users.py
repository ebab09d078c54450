"""User actors: find the user and device of each message, decide, store, and hand it to a sender.

``UserBase`` holds the logic and runs without Ray (unit tests call it directly); ``UserActor`` is the
thin Ray shell. Sync on purpose: the Django ORM is sync.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass

import ray

from . import metrics
from .config import Config
from .djangoenv import ensure_django, refresh_connections
from .mailparse import mailbox_username
from .pool import NamedPool
from .routing import DeviceFacts, UserFacts, Verdict, decide, outbound_channel, stable_index
from .types import CombinedMessage, Direction, Protocol

log = logging.getLogger("messaging.users")


@dataclass(frozen=True)
class IntakeResult:
    verdict: Verdict
    message_id: int | None
    created: bool

    @property
    def stored(self) -> bool:
        """True when the message is durably recorded (accepted, rejected or duplicate)."""
        return self.message_id is not None


class UserBase:
    def __init__(self, config: Config, pools: dict[str, NamedPool] | None = None):
        ensure_django()
        self.config = config
        self.pools = pools or {}
        self._lock = threading.Lock()
        self.in_flight = 0
        self.handled = 0

    # -- lookups (ORM) -------------------------------------------------------------------------
    def _user_facts(self, user) -> UserFacts:
        from .outbox import count_this_month

        blocked = frozenset(user.blocked_senders.values_list("address", flat=True))
        used = count_this_month(user.id) if user.monthly_quota is not None else 0
        return UserFacts(
            id=user.id,
            username=user.username,
            is_active=user.is_active,
            monthly_quota=user.monthly_quota,
            twilio_number=user.twilio_number,
            messages_this_month=used,
            blocked=blocked,
        )

    @staticmethod
    def _device_facts(device) -> DeviceFacts | None:
        if device is None:
            return None
        return DeviceFacts(id=device.id, device_id=device.device_id, is_active=device.is_active)

    def _resolve(self, msg: CombinedMessage):
        """(user, device) model instances for a message, either may be None."""
        from web.accounts.models import Device, User

        if msg.direction is Direction.FROM_DEVICE:
            device = Device.objects.select_related("owner").filter(device_id=msg.device_id).first()
            return (device.owner if device else None), device
        if msg.protocol is Protocol.EMAIL:
            username = mailbox_username(msg.recipient, self.config.email_domain)
            user = User.objects.filter(username=username).first() if username else None
        else:
            user = User.objects.filter(twilio_number=msg.recipient).first()
        device = user.devices.filter(is_active=True).first() if user else None
        return user, device

    @staticmethod
    def _normalise_destination(msg: CombinedMessage) -> tuple[CombinedMessage, bool]:
        """For a device's message: the recipient in canonical form, and whether it is deliverable."""
        from django.core.exceptions import ValidationError
        from django.core.validators import validate_email

        from .phones import normalise_phone

        if msg.direction is not Direction.FROM_DEVICE:
            return msg, True
        if msg.protocol is Protocol.SMS:
            number = normalise_phone(msg.recipient)
            return (dataclasses.replace(msg, recipient=number), True) if number else (msg, False)
        try:
            validate_email(msg.recipient)
        except ValidationError:
            return msg, False
        return msg, True

    # -- the actor's methods ---------------------------------------------------------------------
    def check_recipient(self, address: str, sender: str) -> Verdict:
        """For SMTP RCPT: would mail from ``sender`` to ``address`` be accepted (quota aside)?"""
        probe = CombinedMessage(
            direction=Direction.TO_DEVICE,
            protocol=Protocol.EMAIL,
            sender=sender.lower(),
            recipient=address,
            text="",
            idempotency_key="probe",
        )
        user, device = self._resolve(probe)
        facts = self._user_facts(user) if user else None
        if facts is not None:
            facts = dataclasses.replace(facts, monthly_quota=None)
        return decide(probe, facts, self._device_facts(device))

    def intake(self, msg: CombinedMessage) -> IntakeResult:
        """Decide and store one message (idempotent by key); kick its delivery. Returns once stored."""
        with self._lock:
            self.in_flight += 1
        try:
            return self._intake(msg)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.handled += 1

    def _intake(self, msg: CombinedMessage) -> IntakeResult:
        from .outbox import record

        refresh_connections()

        msg, destination_ok = self._normalise_destination(msg)
        user, device = self._resolve(msg)
        verdict = decide(
            msg,
            self._user_facts(user) if user else None,
            self._device_facts(device),
            destination_ok=destination_ok,
        )
        accepted = verdict is Verdict.ACCEPT
        rec = record(
            msg,
            user_id=user.id if user else None,
            device_id=device.id if device else None,
            accepted=accepted,
            reason="" if accepted else verdict.value,
        )
        outcome = "duplicate" if not rec.created else ("accepted" if accepted else "rejected")
        metrics.count(msg.protocol.name.lower(), msg.direction.value, outcome)
        if rec.created and accepted:
            self.kick(rec.message_id, msg, user.id)
        return IntakeResult(verdict=verdict, message_id=rec.message_id, created=rec.created)

    def kick(self, message_id: int, msg: CombinedMessage, user_id: int) -> None:
        """Ask the right sender to deliver now. If none is up, the outbox sweep delivers later."""
        channel = outbound_channel(msg.direction, msg.protocol)
        pool = self.pools.get(channel)
        if pool is None:
            return
        idx = stable_index(f"user:{user_id}", pool.size)
        if not pool.notify(idx, "deliver", message_id):
            log.info("message %s queued: %s not up, the sweep will deliver it", message_id, channel)

    def dead_letter(self, key: str, sender: str, raw: str, reason: str, device_id: int | None = None) -> int:
        """Store an input that can never be delivered, so that its source may be acknowledged."""
        from web.accounts.models import Device

        from .outbox import record_dead_letter

        device = Device.objects.filter(device_id=device_id).first() if device_id is not None else None
        rec = record_dead_letter(key, sender=sender, raw=raw, reason=reason, device_id=device.id if device else None)
        if rec.created:
            metrics.count("unknown", Direction.FROM_DEVICE.value, "dead")
        return rec.message_id

    def ping(self) -> str:
        return "ok"

    def stats(self) -> dict:
        return {"in_flight": self.in_flight, "handled": self.handled}

    def drain(self) -> dict:
        """User actors have no intake of their own: drained when their callers are and in_flight is 0."""
        return self.stats()


@ray.remote(max_restarts=-1, max_task_retries=3, max_concurrency=4)
class UserActor(UserBase):
    """Ray shell: intake is idempotent by key, so retried tasks store nothing twice."""
