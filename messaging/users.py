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
from .directory import Directory, Found
from .djangoenv import ensure_django, refresh_connections
from .pool import NamedPool
from .routing import Verdict, decide, outbound_channel, stable_index
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
        self.directory = Directory(config.email_domain, ttl=config.user_cache_seconds)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.handled = 0

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

    def _decide(self, msg: CombinedMessage, destination_ok: bool = True) -> tuple[Verdict, Found]:
        """The verdict for one message; a refusal is always decided on fresh facts, never on cached ones."""
        found = self.directory.find(msg)
        verdict = decide(msg, found.user, found.device, destination_ok=destination_ok)
        if verdict is not Verdict.ACCEPT and found.cached:
            found = self.directory.find(msg, fresh=True)
            verdict = decide(msg, found.user, found.device, destination_ok=destination_ok)
        return verdict, found

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
        refresh_connections()
        verdict, _ = self._decide(probe)
        return Verdict.ACCEPT if verdict is Verdict.QUOTA_EXCEEDED else verdict

    def intake(self, msg: CombinedMessage) -> IntakeResult:
        """Decide and store one message (idempotent by key); kick its delivery. Returns once stored."""
        return self.intake_many([msg])[0]

    def intake_many(self, msgs: list[CombinedMessage]) -> list[IntakeResult]:
        """Decide and store a batch in one transaction, in order; kick deliveries. Returns once stored."""
        with self._lock:
            self.in_flight += len(msgs)
        try:
            return self._intake_many(msgs)
        finally:
            with self._lock:
                self.in_flight -= len(msgs)
                self.handled += len(msgs)

    def _intake_many(self, msgs: list[CombinedMessage]) -> list[IntakeResult]:
        from .outbox import ToRecord, record_many

        refresh_connections()
        items, verdicts, users = [], [], []
        for original in msgs:
            msg, destination_ok = self._normalise_destination(original)
            verdict, found = self._decide(msg, destination_ok)
            accepted = verdict is Verdict.ACCEPT
            if accepted:
                self.directory.accepted(found.user)
            items.append(
                ToRecord(
                    msg,
                    user_id=found.user.id if found.user else None,
                    device_id=found.device.id if found.device else None,
                    accepted=accepted,
                    reason="" if accepted else verdict.value,
                )
            )
            verdicts.append(verdict)
            users.append(found.user)
        recs = record_many(items)
        kicks: dict[tuple[str, int], list[int]] = {}
        results = []
        for item, verdict, user, rec in zip(items, verdicts, users, recs, strict=True):
            msg = item.msg
            outcome = "duplicate" if not rec.created else ("accepted" if item.accepted else "rejected")
            metrics.count(msg.protocol.name.lower(), msg.direction.value, outcome)
            if rec.created and item.accepted:
                channel = outbound_channel(msg.direction, msg.protocol)
                pool = self.pools.get(channel)
                if pool is not None:
                    kicks.setdefault((channel, stable_index(f"user:{user.id}", pool.size)), []).append(rec.message_id)
            results.append(IntakeResult(verdict=verdict, message_id=rec.message_id, created=rec.created))
        for (channel, idx), ids in kicks.items():
            self.kick(channel, idx, ids)
        return results

    def kick(self, channel: str, idx: int, message_ids: list[int]) -> None:
        """Ask the right sender to deliver now. If none is up, the outbox sweep delivers later."""
        if not self.pools[channel].notify(idx, "deliver_many", message_ids):
            log.info("messages %s queued: %s not up, the sweep will deliver them", message_ids, channel)

    def dead_letter(self, key: str, sender: str, raw: str, reason: str, device_id: int | None = None) -> int:
        """Store an input that can never be delivered, so that its source may be acknowledged."""
        from web.accounts.models import Device

        from .outbox import record_dead_letter

        refresh_connections()
        device = Device.objects.filter(device_id=device_id).first() if device_id is not None else None
        rec = record_dead_letter(key, sender=sender, raw=raw, reason=reason, device_id=device.id if device else None)
        if rec.created:
            metrics.count("unknown", Direction.FROM_DEVICE.value, "dead")
        return rec.message_id

    def ping(self) -> str:
        return "ok"

    def stats(self) -> dict:
        return {
            "in_flight": self.in_flight,
            "handled": self.handled,
            "cache_hits": self.directory.hits,
            "cache_misses": self.directory.misses,
        }

    def drain(self) -> dict:
        """User actors have no intake of their own: drained when their callers are and in_flight is 0."""
        return self.stats()


@ray.remote(max_restarts=-1, max_task_retries=3, max_concurrency=4)
class UserActor(UserBase):
    """Ray shell: intake is idempotent by key, so retried tasks store nothing twice."""
