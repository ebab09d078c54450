"""Inbound SMS that Twilio has and we never stored: found in Twilio's message list, stored late, once.

Twilio posts each incoming text to ``/sms`` once; it retries only as the URL's connection overrides
(``#rc=..&rp=..``) allow, and gives up after 15 s in all. A text whose webhook met an outage or a
``503`` would be lost. So every ``TWILIO_RECONCILE_INTERVAL`` seconds one sender actor lists, for each of
our users' numbers, the messages Twilio received in the last ``TWILIO_RECONCILE_WINDOW_HOURS``, and
stores those whose ``twilio:<MessageSid>`` key is not in the database yet, with the user desk like any
other intake (idempotent by key: a webhook that lands meanwhile stores nothing twice).

:func:`missing_inbound` is the decision (pure); :class:`Reconciler` does the I/O (Twilio, the database,
the store callable) and runs without Ray; the first sender actor (``delivery/senders.py``) runs it periodically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from messaging.core.phones import normalise_phone
from messaging.core.redact import mask_phone
from messaging.core.types import CombinedMessage
from messaging.runtime.config import Config
from messaging.runtime.djangoenv import refresh_connections
from messaging.sms.twilio import BadWebhook, ListedMessage, TwilioInbox, TwilioUnavailable, parse_inbound_sms

log = logging.getLogger("messaging.intake.sms_reconcile")

STORE_BATCH = 64  # messages per intake call
GIVE_UP_AFTER = 3  # numbers whose list failed in a row before a sweep stops asking Twilio
Store = Callable[[list[CombinedMessage]], list[Any]]  # -> an IntakeResult per message, same order


def missing_inbound(
    listed: Iterable[ListedMessage], our_numbers: set[str], since: datetime, stored: Callable[[list[str]], set[str]]
) -> tuple[list[CombinedMessage], list[tuple[str, str]]]:
    """Of the messages Twilio listed: the inbound ones to one of ``our_numbers``, sent at or after ``since``
    and not stored yet (``stored(keys)`` names the keys already in the database), made into the very
    message the webhook would have made. Also returns ``(sid, reason)`` for those the webhook parser
    refuses (it would have answered 400 to them too)."""
    wanted: dict[str, CombinedMessage] = {}
    refused: list[tuple[str, str]] = []
    for item in listed:
        if item.direction != "inbound" or normalise_phone(item.to) not in our_numbers:
            continue
        if item.date_sent is not None and item.date_sent < since:
            continue
        try:
            msg = parse_inbound_sms(item.webhook_fields())
        except BadWebhook as exc:
            refused.append((item.sid, str(exc)))
            continue
        wanted.setdefault(msg.idempotency_key, msg)
    have = stored(list(wanted)) if wanted else set()
    return [msg for key, msg in wanted.items() if key not in have], refused


@dataclass
class SweepReport:
    numbers: int = 0
    listed: int = 0
    missing: int = 0
    stored: int = 0
    failed: list[str] = field(default_factory=list)  # masked numbers whose list failed, and store failures


def stored_keys(keys: list[str]) -> set[str]:
    """The keys among ``keys`` that the database has (one query per 500)."""
    from web.delivery.models import Message  # Django models: loaded after ensure_django() in the worker

    found: set[str] = set()
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        found.update(Message.objects.filter(idempotency_key__in=chunk).values_list("idempotency_key", flat=True))
    return found


def user_numbers() -> set[str]:
    """Every user's Twilio number (inactive users too: the webhook would store their texts as refused)."""
    from web.accounts.models import User  # Django models: loaded after ensure_django() in the worker

    numbers = User.objects.exclude(twilio_number__isnull=True).exclude(twilio_number="")
    return {n for raw in numbers.values_list("twilio_number", flat=True) if (n := normalise_phone(raw))}


def pool_store(users: Any, timeout: float) -> Store:
    """A :data:`Store` that stores messages with the user desk as every intake does (lane by routing key)."""

    def store(msgs: list[CombinedMessage]) -> list[Any]:
        results: list[Any] = [None] * len(msgs)
        groups: dict[int, list[int]] = {}
        for i, msg in enumerate(msgs):
            groups.setdefault(users.index_for(msg.routing_key()), []).append(i)
        for idx, positions in groups.items():
            out = users.call(idx, "intake_many", [msgs[i] for i in positions], timeout=timeout)
            for i, result in zip(positions, out, strict=True):
                results[i] = result
        return results

    return store


class Reconciler:
    """One sweep: list what Twilio received for our numbers, store what we do not have. Thread-bound (sync)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        inbox: TwilioInbox | None = None,
        numbers: Callable[[], set[str]] = user_numbers,
        known: Callable[[list[str]], set[str]] = stored_keys,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.inbox = inbox or TwilioInbox(
            config.twilio_account_sid, config.twilio_auth_token, config.twilio_api_base_url
        )
        self.numbers = numbers
        self.known = known
        self.clock = clock
        self._refused_logged: set[str] = set()

    def sweep(self) -> SweepReport:
        """Never raises for one number's or one batch's trouble: that is logged, and the next sweep tries again."""

        refresh_connections()
        report = SweepReport()
        since = datetime.fromtimestamp(self.clock(), UTC) - timedelta(hours=self.config.twilio_reconcile_window_hours)
        ours = self.numbers()
        report.numbers = len(ours)
        listed: list[ListedMessage] = []
        in_a_row = 0
        for number in sorted(ours):
            try:
                listed.extend(self.inbox.sent_to(number, since))
                in_a_row = 0
            except TwilioUnavailable as exc:
                log.warning("sms reconcile: %s", exc)
                report.failed.append(mask_phone(number))
                in_a_row += 1
                if in_a_row >= GIVE_UP_AFTER:  # Twilio is away: not a timeout per number, the next sweep
                    log.warning("sms reconcile: Twilio unavailable, the other numbers wait for the next sweep")
                    break
        report.listed = len(listed)
        missing, refused = missing_inbound(listed, ours, since, self.known)
        for sid, reason in refused:
            if sid not in self._refused_logged:
                self._refused_logged.add(sid)
                log.warning("sms twilio:%s listed by twilio but not storable: %s", sid, reason)
        report.missing = len(missing)
        for i in range(0, len(missing), STORE_BATCH):
            batch = missing[i : i + STORE_BATCH]
            try:
                results = self.store(batch)
            except Exception as exc:  # database trouble: Twilio keeps it, the next sweep
                log.warning("sms reconcile: %d messages not stored yet: %s: %s", len(batch), type(exc).__name__, exc)
                report.failed.append(f"store x{len(batch)}")
                continue
            for msg, result in zip(batch, results, strict=True):
                if getattr(result, "message_id", None) is None:
                    continue
                report.stored += 1
                if getattr(result, "created", True):
                    verdict = getattr(getattr(result, "verdict", None), "value", "?")
                    log.info(
                        "sms %s reconciled from twilio -> message %s (%s) to=%s",
                        msg.idempotency_key,
                        result.message_id,
                        verdict,
                        mask_phone(msg.recipient),
                    )
        if report.missing or report.failed:
            log.info(
                "sms reconcile: %d numbers, %d listed, %d missing, %d stored, failed: %s",
                report.numbers,
                report.listed,
                report.missing,
                report.stored,
                ", ".join(report.failed) or "none",
            )
        return report
