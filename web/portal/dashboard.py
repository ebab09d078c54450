"""What the operators' dashboard shows, read from the Message table: plain functions over the ORM, no view code.

Each is a few grouped queries (counts and sums in SQL, ``TruncHour`` for the hours, so SQLite and PostgreSQL alike),
bounded to the last ``days`` by ``created_at`` (indexed), but for the backlog, which is every message not finished
yet whatever its age (``status`` is indexed, and unfinished rows are few).

A message belongs to the channel that delivers it (``routing.decisions.outbound_channel``): to a device over the
satellite, from a device as email through the relay or as a text through Twilio; a device message of a kind we do
not deliver (an undecodable packet) is "other".
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import Left, TruncHour
from django.utils import timezone

from messaging.core.redact import scrub
from messaging.core.types import Channel, Direction, Protocol, Status
from messaging.outbox.store import due_filter
from web.accounts.models import NETWORK_LABELS
from web.delivery.models import Message

DAYS = 7
OTHER = "other"
CHANNELS = (Channel.SATELLITE.value, Channel.MAILOUT.value, Channel.SMS.value, OTHER)
CHANNEL_LABELS = {
    Channel.SATELLITE.value: "To devices (satellite)",
    Channel.MAILOUT.value: "Email from devices (relay)",
    Channel.SMS.value: "Texts from devices (Twilio)",
    OTHER: "Other device messages (undeliverable kinds)",
}
# A message's outcome so far, from its status.
OUTCOMES = ("sent", "on its way", "refused", "dead")
OUTCOME_OF = {
    Status.SENT: "sent",
    Status.RECEIVED: "on its way",
    Status.QUEUED: "on its way",
    Status.SENDING: "on its way",
    Status.FAILED: "on its way",
    Status.REJECTED: "refused",
    Status.DEAD: "dead",
}
OPEN_STATES = (Status.RECEIVED, Status.QUEUED, Status.SENDING, Status.FAILED)
RELAY, TWILIO, NO_DEVICE = "SMTP relay", "Twilio", "Satellite (no device)"
REASON_CHARS = 200  # reasons are grouped on their start: the part that says what went wrong


def channel_of(direction: str, protocol: str) -> str:
    """The channel value of a stored (direction, protocol), or ``other``."""
    if direction == Direction.TO_DEVICE:
        return Channel.SATELLITE.value
    if protocol == Protocol.EMAIL.key:
        return Channel.MAILOUT.value
    if protocol == Protocol.SMS.key:
        return Channel.SMS.value
    return OTHER


def window_start(now: datetime, days: int = DAYS) -> datetime:
    """The first hour of the window: ``days`` × 24 whole hours ending with the current one."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=days * 24 - 1)


def messages_per_hour(now: datetime | None = None, days: int = DAYS) -> dict:
    """Messages stored per hour (by ``created_at``) in the last ``days``, per channel and outcome so far.

    ``{"hours": [start of each hour, oldest first], "channels": {channel: {outcome: [count per hour]}}}``;
    every channel and outcome is there, zeros included.
    """
    now = now or timezone.now()
    first = window_start(now, days)
    hours = [first + timedelta(hours=n) for n in range(days * 24)]
    index = {hour: n for n, hour in enumerate(hours)}
    channels = {channel: {outcome: [0] * len(hours) for outcome in OUTCOMES} for channel in CHANNELS}
    rows = (
        Message.objects.filter(created_at__gte=first)
        .annotate(hour=TruncHour("created_at"))
        .order_by()
        .values("hour", "direction", "protocol", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        n = index.get(row["hour"])
        if n is not None:
            channels[channel_of(row["direction"], row["protocol"])][OUTCOME_OF[Status(row["status"])]][n] += row["n"]
    return {"hours": hours, "channels": channels}


def backlog(now: datetime | None = None) -> dict:
    """Messages not finished yet, per channel and state, and the oldest of those a sender should take now.

    ``{"states": {channel: {state: count}}, "total": n, "oldest_due": None or {"id", "channel", "status",
    "created_at", "age"}}``: due as the senders' sweep sees it (``outbox.store.due_filter``: fresh rows past their
    grace, retries whose time came, leases that ran out); its age counts from when it was stored.
    """
    now = now or timezone.now()
    states = {channel: {state.value: 0 for state in OPEN_STATES} for channel in CHANNELS}
    rows = (
        Message.objects.filter(status__in=OPEN_STATES)
        .order_by()
        .values("direction", "protocol", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        states[channel_of(row["direction"], row["protocol"])][row["status"]] += row["n"]
    oldest = (
        Message.objects.filter(due_filter(now))
        .order_by("created_at", "id")
        .values("id", "direction", "protocol", "status", "created_at")
        .first()
    )
    if oldest is not None:
        oldest = {
            "id": oldest["id"],
            "channel": channel_of(oldest["direction"], oldest["protocol"]),
            "status": oldest["status"],
            "created_at": oldest["created_at"],
            "age": now - oldest["created_at"],
        }
    total = sum(sum(by_state.values()) for by_state in states.values())
    return {"states": states, "total": total, "oldest_due": oldest}


def dead_letter_reasons(now: datetime | None = None, days: int = DAYS, limit: int = 10) -> list[tuple[str, int]]:
    """The commonest reasons (``last_error``) of messages stored in the last ``days`` that ended dead, most first.

    Addresses and numbers are taken out (``redact.scrub``) before grouping, so reasons that differed only in them
    count as one and none is shown. SQL groups on the first ``REASON_CHARS`` characters and returns at most
    ``10 * limit`` groups to merge.
    """
    now = now or timezone.now()
    rows = (
        Message.objects.filter(status=Status.DEAD, created_at__gte=window_start(now, days))
        .annotate(reason=Left("last_error", REASON_CHARS))
        .order_by()
        .values("reason")
        .annotate(n=Count("id"))
        .order_by("-n", "reason")[: 10 * limit]
    )
    merged: Counter[str] = Counter()
    for row in rows:
        merged[scrub(row["reason"] or "").strip() or "(no reason recorded)"] += row["n"]
    return sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:limit]


def send_error_rates(now: datetime | None = None, days: int = DAYS) -> list[dict]:
    """Send attempts and failed attempts per remote, for messages stored in the last ``days`` that were tried.

    Every claim by a sender is an attempt (``attempts``); every attempt but the one that succeeded (``sent``) or is
    still under way (``sending``) failed, so failed = attempts - sent - sending. The remote is the device's network
    (Swarm Hive, RockBLOCK) for messages to devices, the SMTP relay for email, Twilio for texts. ``rate`` is failed
    over finished attempts (None when there were none). Remotes without attempts are left out.
    """
    now = now or timezone.now()
    rows = (
        Message.objects.filter(created_at__gte=window_start(now, days), attempts__gt=0)
        .order_by()
        .values("direction", "protocol", "device__network")
        .annotate(
            messages=Count("id"),
            attempts=Sum("attempts"),
            sent=Count("id", filter=Q(status=Status.SENT)),
            sending=Count("id", filter=Q(status=Status.SENDING)),
            dead=Count("id", filter=Q(status=Status.DEAD)),
        )
    )
    remotes: dict[str, Counter] = {}
    for row in rows:
        channel = channel_of(row["direction"], row["protocol"])
        if channel == Channel.SATELLITE.value:
            network = row["device__network"]
            remote = NETWORK_LABELS.get(network, network) if network else NO_DEVICE
        else:
            remote = {Channel.MAILOUT.value: RELAY, Channel.SMS.value: TWILIO}.get(channel, channel)
        remotes.setdefault(remote, Counter()).update(
            {key: row[key] or 0 for key in ("messages", "attempts", "sent", "sending", "dead")}
        )
    result = []
    for remote, c in sorted(remotes.items()):
        finished = c["attempts"] - c["sending"]
        failed = max(0, finished - c["sent"])
        result.append(
            {
                "remote": remote,
                "messages": c["messages"],
                "attempts": c["attempts"],
                "failed": failed,
                "sent": c["sent"],
                "dead": c["dead"],
                "rate": failed / finished if finished > 0 else None,
            }
        )
    return result
