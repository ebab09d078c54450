"""The user desk: find the user and device of each message, decide, store, and say which sender delivers it.

Every intake process runs its own (``intake/user_store.py`` ``LocalUsers``, in threads): a message is durable
without a Ray hop. Limits hold across those processes: an acceptance a count may refuse is decided again on
counts from the database, in the transaction that stores it, with its user locked (``_recounted``). Sync on
purpose: the Django ORM is sync. Unit tests call it directly.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass

from messaging.core.redact import mask_address, mask_key
from messaging.core.types import Channel, CombinedMessage, Direction, Protocol, Status
from messaging.routing.decisions import (
    NOT_STORED,
    Policy,
    Verdict,
    decide,
    device_destination,
    outbound_channel,
    refusal_reason,
)
from messaging.routing.directory import Directory, Found, count_keys
from messaging.runtime import metrics
from messaging.runtime.config import Config
from messaging.runtime.djangoenv import ensure_django, refresh_connections
from messaging.runtime.pool import NamedPool, stable_index

log = logging.getLogger("messaging.routing.user_desk")


@dataclass(frozen=True)
class Kick:
    """Which sender to ask to deliver a stored message now: member ``member`` of the pool of kind ``kind``, told
    the ``channel`` when that kind sends several (else None)."""

    kind: str
    member: int
    channel: Channel | None = None

    def arguments(self, message_ids: list[int]) -> tuple:
        """The arguments of the sender's ``deliver_many`` for these messages."""
        return (message_ids, self.channel) if self.channel else (message_ids,)

    def send(self, pool: NamedPool, message_ids: list[int]) -> None:
        """Ask the member of ``pool`` (the pool of kind ``kind``) to deliver these now. If it is not up, the
        outbox sweep delivers them later."""
        if not pool.notify(self.member, "deliver_many", *self.arguments(message_ids)):
            log.info("messages %s queued: %s not up, the sweep will deliver them", message_ids, self.kind)


@dataclass(frozen=True)
class IntakeResult:
    verdict: Verdict
    message_id: int | None
    created: bool
    kick: Kick | None = None  # set when the caller asked to kick deliveries itself (``intake_many(..., False)``)

    @property
    def stored(self) -> bool:
        """True when the message is durably recorded (accepted, rejected or duplicate). False for a temporary
        refusal (``RATE_LIMITED``): nothing was stored, the sender must be told to try again later."""
        return self.message_id is not None


class UserDesk:
    def __init__(self, config: Config, pools: dict[Channel, NamedPool] | None = None):
        ensure_django()
        self.config = config
        self.pools = pools or {}
        # Kinds that send several channels (the sender actor: satellite, email, SMS): their kicks say which.
        kinds = Counter(pool.kind for pool in self.pools.values())
        self.pools_by_kind = {pool.kind: pool for pool in self.pools.values()}  # whom a Kick names, by kind
        self._shared_kinds = {kind for kind, channels in kinds.items() if channels > 1}
        self.policy = Policy.from_config(config)
        self.directory = Directory(config.email_domain, ttl=config.user_cache_seconds, policy=self.policy)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.handled = 0

    @staticmethod
    def _normalise_destination(msg: CombinedMessage, found: Found | None = None) -> tuple[CombinedMessage, bool]:
        """For a device's message: the recipient in canonical form (a contact's short name resolved to the contact's
        address and channel, with the user's contacts in ``found``), and whether it is deliverable."""
        return device_destination(msg, found.user.contacts if found is not None and found.user else ())

    def _decide(self, msg: CombinedMessage, pending: Counter | None = None) -> tuple[CombinedMessage, Verdict, Found]:
        """The message as it will be stored (a device's recipient resolved) and its verdict; a refusal is always
        decided on fresh facts, never on cached ones (a contact added a moment ago resolves).
        ``pending``: what this batch accepted so far (not stored yet), added to the counts."""

        def verdict_on(found: Found) -> tuple[CombinedMessage, Verdict]:
            resolved, destination_ok = self._normalise_destination(msg, found)
            verdict = decide(
                resolved,
                found.user,
                found.device,
                destination_ok=destination_ok,
                policy=self.policy,
                last_hour=found.last_hour,
            )
            return resolved, verdict

        found = self.directory.find(msg, pending=pending)
        resolved, verdict = verdict_on(found)
        if verdict is not Verdict.ACCEPT and found.cached:
            found = self.directory.find(msg, fresh=True, pending=pending)
            resolved, verdict = verdict_on(found)
        return resolved, verdict, found

    # -- what intake calls (by name, through LocalUsers) ---------------------------------------------
    def check_recipient(self, address: str, sender: str) -> Verdict:
        """For SMTP RCPT: would mail from ``sender`` to ``address`` be accepted (quota aside)? A sender over
        its hourly limit for this mailbox hears ``RATE_LIMITED`` (a 4xx: try again later) already here."""
        probe = CombinedMessage(
            direction=Direction.TO_DEVICE,
            protocol=Protocol.EMAIL,
            sender=sender.lower(),
            recipient=address,
            text="",
            idempotency_key="probe",
        )
        refresh_connections()
        _, verdict, _ = self._decide(probe)
        return Verdict.ACCEPT if verdict is Verdict.QUOTA_EXCEEDED else verdict

    def intake(self, msg: CombinedMessage) -> IntakeResult:
        """Decide and store one message (idempotent by key); kick its delivery. Returns once stored."""
        return self.intake_many([msg])[0]

    def intake_many(self, msgs: list[CombinedMessage], kick: bool = True) -> list[IntakeResult]:
        """Decide and store a batch in one transaction, in order; kick deliveries (``kick`` False: each new
        accepted message's result says whom to kick, and the caller does, gathering kicks across calls).
        Returns once stored."""
        with self._lock:
            self.in_flight += len(msgs)
        try:
            return self._intake_many(msgs, kick)
        finally:
            with self._lock:
                self.in_flight -= len(msgs)
                self.handled += len(msgs)

    def _intake_many(self, msgs: list[CombinedMessage], kick: bool = True) -> list[IntakeResult]:
        from django.db import transaction

        # Django models: loaded after ensure_django() in the worker
        from messaging.outbox.store import lock_users, record_many

        refresh_connections()
        decided: list[tuple[CombinedMessage, Verdict, Found]] = []
        pending: Counter = Counter()  # counts of what this batch accepted, before it is stored
        for original in msgs:
            msg, verdict, found = self._decide(original, pending)
            if verdict is Verdict.ACCEPT:
                pending.update(count_keys(msg, found.user, found.device))
            decided.append((msg, verdict, found))
        limited = {
            found.user.id
            for msg, verdict, found in decided
            if verdict is Verdict.ACCEPT and self.directory.limits(msg, found)
        }
        if limited:  # an acceptance a count may still refuse: counted again and stored in one transaction
            with transaction.atomic():
                lock_users(limited)
                decided = self._recounted(decided)
                recs = iter(record_many(self._to_record(decided)))
        else:
            recs = iter(record_many(self._to_record(decided)))
        return self._answer(decided, recs, kick)

    def _recounted(
        self, decided: list[tuple[CombinedMessage, Verdict, Found]]
    ) -> list[tuple[CombinedMessage, Verdict, Found]]:
        """Each count-limited acceptance decided again on counts from the database (the users locked): the
        cached counts miss what other processes stored since, and an acceptance must not pass a limit."""
        counted: dict[tuple, int] = {}
        pending: Counter = Counter()
        out = []
        for msg, verdict, found in decided:
            if verdict is Verdict.ACCEPT and self.directory.limits(msg, found):
                found = self.directory.exact(msg, found, counted, pending)
                verdict = decide(msg, found.user, found.device, policy=self.policy, last_hour=found.last_hour)
            if verdict is Verdict.ACCEPT:
                pending.update(count_keys(msg, found.user, found.device))
            out.append((msg, verdict, found))
        return out

    def _to_record(self, decided: list[tuple[CombinedMessage, Verdict, Found]]) -> list:
        from messaging.outbox.store import ToRecord  # Django models: loaded after ensure_django() in the worker

        return [
            ToRecord(
                msg,
                user_id=found.user.id if found.user else None,
                device_id=found.device.id if found.device else None,
                accepted=verdict is Verdict.ACCEPT,
                reason=refusal_reason(verdict, msg, found.user, policy=self.policy, last_hour=found.last_hour),
            )
            for msg, verdict, found in decided
            if verdict not in NOT_STORED
        ]

    def _answer(self, decided: list[tuple[CombinedMessage, Verdict, Found]], recs, kick: bool) -> list[IntakeResult]:
        """One result per message, in order (``recs``: the stored rows of those not refused for now); kicks."""
        kicks: dict[Kick, list[int]] = {}
        results = []
        for msg, verdict, found in decided:
            if verdict in NOT_STORED:
                metrics.count(msg.protocol.name.lower(), msg.direction.value, verdict.value)
                log.info(
                    "%s key=%s from %s to user %s not stored: %s (%d in the last hour), sender to retry later",
                    msg.protocol.name.lower(),
                    mask_key(msg.idempotency_key),
                    mask_address(msg.sender),
                    found.user.id if found.user else "?",
                    verdict.value,
                    found.last_hour,
                )
                results.append(IntakeResult(verdict=verdict, message_id=None, created=False))
                continue
            rec = next(recs)
            accepted = verdict is Verdict.ACCEPT
            outcome = "duplicate" if not rec.created else ("accepted" if accepted else "rejected")
            metrics.count(msg.protocol.name.lower(), msg.direction.value, outcome)
            to_kick = None
            if rec.created and accepted:
                self.directory.accepted(msg, found.user, found.device)
                to_kick = self._kick_for(outbound_channel(msg.direction, msg.protocol), found.user.id)
                if to_kick is not None and kick:
                    kicks.setdefault(to_kick, []).append(rec.message_id)
            results.append(
                IntakeResult(
                    verdict=verdict,
                    message_id=rec.message_id,
                    created=rec.created,
                    kick=None if kick else to_kick,
                )
            )
        for to_kick, ids in kicks.items():
            self.kick(to_kick, ids)
        return results

    def _kick_for(self, channel: Channel, user_id: int) -> Kick | None:
        """Whom to kick for a new message of ``user_id`` on ``channel`` (each user's always the same member, so
        their messages go in order); None when no pool sends that channel."""
        pool = self.pools.get(channel)
        if pool is None:
            return None
        # A one-channel sender is kicked as before this kind shared: during an upgrade, an old one still takes it.
        named = channel if pool.kind in self._shared_kinds else None
        return Kick(pool.kind, stable_index(f"user:{user_id}", pool.size), named)

    def kick(self, to_kick: Kick, message_ids: list[int]) -> None:
        """Ask the right sender to deliver now. If none is up, the outbox sweep delivers later."""
        to_kick.send(self.pools_by_kind[to_kick.kind], message_ids)

    def dead_letter(self, key: str, sender: str, raw: str, reason: str, device_id: int | None = None) -> int:
        """Store an input that can never be delivered, so that its source may be acknowledged."""
        # Django models: loaded after ensure_django() in the worker
        from messaging.outbox.store import record_dead_letter
        from web.accounts.models import Device  # Django models: loaded after ensure_django() in the worker

        refresh_connections()
        device = Device.objects.filter(device_id=device_id).first() if device_id is not None else None
        rec = record_dead_letter(key, sender=sender, raw=raw, reason=reason, device_id=device.id if device else None)
        if rec.created:
            metrics.count(Protocol.UNKNOWN.key, Direction.FROM_DEVICE.value, Status.DEAD.value)
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
        """The desk has no intake of its own: drained when its process's intake is and in_flight is 0."""
        return self.stats()
