"""Who is a message for: the user and device facts behind each routing decision, from the database (the user's
facts include their contacts and contacts-only mode, so a device's short names resolve without a query).

A user desk keeps what it looked up for a few seconds (``USER_CACHE_SECONDS``), so a busy mailbox or
device costs no queries per message. The cache only ever speeds up an acceptance: the desk decides
again on fresh facts before it refuses anything, so a mailbox created or a sender unblocked a moment ago
is never refused from a stale entry. What a stale entry can do is accept for at most that long after an
operator blocked a sender or disabled a user or device (the satellite sender checks the device again
when it sends).

Counts work the same way. The month's counts (to the device, from the device: each has its own quota) are
counted when the user's entry is loaded; the last hour's count of a message's rate-limit key (its sender
to its user, or its device) is counted when first needed and kept for ``USER_CACHE_SECONDS``. Both are
then advanced by what this desk stores (``accepted``), and what a batch accepted but has not stored yet is
added by the caller (``pending``). Another process's acceptances show when the count is next refreshed; a
count too high can only cause a refusal, and refusals are decided on fresh counts. A count too low could let an
acceptance pass a limit, so an acceptance that a count may refuse is decided once more on exact counts
(``exact``), in the transaction that stores it, with its user locked: limits hold however many processes take
in for one user at once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from messaging.core.addresses import mailbox_username
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.routing.decisions import DEFAULT_POLICY, ContactFacts, DeviceFacts, Policy, UserFacts

HOUR_COUNTS_KEPT = 10_000  # rate-limit keys kept at most (one per recent sender and mailbox, per device)


@dataclass(frozen=True)
class Found:
    user: UserFacts | None
    device: DeviceFacts | None
    cached: bool  # True when anything came from the cache (the caller re-checks fresh before refusing)
    last_hour: int = 0  # stored in the last hour on this message's rate-limit key (0 when no limit is set)


def lookup_key(msg: CombinedMessage, email_domain: str) -> tuple[str, object] | None:
    """What identifies the user of this message: its device, mailbox or number (None: cannot be ours)."""
    if msg.direction is Direction.FROM_DEVICE:
        return ("device", msg.device_id)
    if msg.protocol is Protocol.EMAIL:
        username = mailbox_username(msg.recipient, email_domain)
        return ("mailbox", username) if username else None
    return ("number", msg.recipient)


def count_keys(msg: CombinedMessage, user: UserFacts | None, device: DeviceFacts | None) -> tuple[tuple, tuple]:
    """The counts an accepted ``msg`` adds one to: the user's month in its direction, and its hourly key
    (from this sender to this user, or from this device)."""
    month = ("month", user.id if user else None, msg.direction.value)
    if msg.direction is Direction.FROM_DEVICE:
        return month, ("device", device.id if device else None)
    return month, ("sender", user.id if user else None, msg.sender.lower())


class Directory:
    def __init__(
        self,
        email_domain: str,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        policy: Policy = DEFAULT_POLICY,
    ):
        self.email_domain = email_domain
        self.ttl = ttl
        self.clock = clock
        self.policy = policy
        self._entries: dict[tuple[str, object], tuple[float, UserFacts | None, DeviceFacts | None]] = {}
        self._month_counts: dict[tuple, int] = {}  # ("month", user id, direction) -> as last counted + since
        self._hour_counts: dict[tuple, tuple[float, int]] = {}  # hourly key -> (when counted, count + since)
        self._lock = threading.Lock()  # the desk is called from several threads
        self.hits = 0
        self.misses = 0

    def find(self, msg: CombinedMessage, *, fresh: bool = False, pending: Counter | None = None) -> Found:
        """The facts for ``msg``; ``pending`` counts what the caller accepted but has not stored yet."""
        key = lookup_key(msg, self.email_domain)
        if key is None:
            return Found(None, None, cached=False)
        now = self.clock()
        entry = None if fresh or self.ttl <= 0 else self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl and entry[1] is not None:
            self.hits += 1
            user, device, cached = entry[1], entry[2], True
        else:
            self.misses += 1
            user, device = self._load(key)
            cached = False
            if user is not None:
                with self._lock:
                    self._month_counts[("month", user.id, Direction.TO_DEVICE.value)] = user.inbound_this_month
                    self._month_counts[("month", user.id, Direction.FROM_DEVICE.value)] = user.outbound_this_month
                if self.ttl > 0:
                    self._entries[key] = (now, user, device)
            else:
                self._entries.pop(key, None)  # nobody: never cached, a new user must not wait for an expiry
        if user is None:
            return Found(None, device, cached=False)
        pending = pending or Counter()
        user = self._with_counts(user, pending)
        last_hour, hour_cached = self._last_hour(msg, user, device, now, fresh)
        last_hour += pending[count_keys(msg, user, device)[1]]
        return Found(user, device, cached=cached or hour_cached, last_hour=last_hour)

    def accepted(self, msg: CombinedMessage, user: UserFacts, device: DeviceFacts | None) -> None:
        """``msg`` was stored as accepted: one more on its counts (keeps the cached counts honest)."""
        month, hour = count_keys(msg, user, device)
        with self._lock:
            if month in self._month_counts:
                self._month_counts[month] += 1
            if hour in self._hour_counts:
                when, count = self._hour_counts[hour]
                self._hour_counts[hour] = (when, count + 1)

    def limits(self, msg: CombinedMessage, found: Found) -> bool:
        """Does a count limit this message (its direction's monthly quota is set, or its hourly limit is on)?"""
        user = found.user
        if user is None:
            return False
        if msg.direction is Direction.FROM_DEVICE:
            quota = user.monthly_outbound_quota
            hourly = self.policy.hourly_limit(msg.direction) and found.device is not None
        else:
            quota, hourly = user.monthly_quota, self.policy.hourly_limit(msg.direction)
        return quota is not None or bool(hourly)

    def exact(self, msg: CombinedMessage, found: Found, counted: dict[tuple, int], pending: Counter) -> Found:
        """``found`` with its counts taken from the database now (each key once per ``counted``, which the caller
        keeps for one transaction) plus ``pending``. Called with the users locked, in the transaction that then
        stores: what another process stored is counted, so no limit is passed however many processes take in.
        The cache takes the exact counts too."""
        from messaging.outbox.store import count_this_month  # Django models: loaded after ensure_django()

        user, device = found.user, found.device
        month_key, hour_key = count_keys(msg, user, device)
        quota = user.monthly_outbound_quota if msg.direction is Direction.FROM_DEVICE else user.monthly_quota
        now = self.clock()
        if month_key not in counted:
            counted[month_key] = count_this_month(user.id, direction=msg.direction) if quota is not None else 0
            if quota is not None:
                with self._lock:
                    self._month_counts[month_key] = counted[month_key]
        last_hour = 0
        if self.policy.hourly_limit(msg.direction) and not (msg.direction is Direction.FROM_DEVICE and device is None):
            if hour_key not in counted:
                counted[hour_key] = self._count_last_hour(hour_key)
                with self._lock:
                    self._hour_counts[hour_key] = (now, counted[hour_key])
            last_hour = counted[hour_key] + pending[hour_key]
        month = counted[month_key] + pending[month_key]
        if msg.direction is Direction.FROM_DEVICE:
            user = replace(user, outbound_this_month=month)
        else:
            user = replace(user, inbound_this_month=month)
        return Found(user, device, cached=False, last_hour=last_hour)

    def _with_counts(self, user: UserFacts, pending: Counter) -> UserFacts:
        inbound_key = ("month", user.id, Direction.TO_DEVICE.value)
        outbound_key = ("month", user.id, Direction.FROM_DEVICE.value)
        inbound = self._month_counts.get(inbound_key, user.inbound_this_month) + pending[inbound_key]
        outbound = self._month_counts.get(outbound_key, user.outbound_this_month) + pending[outbound_key]
        if (inbound, outbound) == (user.inbound_this_month, user.outbound_this_month):
            return user
        return replace(user, inbound_this_month=inbound, outbound_this_month=outbound)

    def _last_hour(
        self, msg: CombinedMessage, user: UserFacts, device: DeviceFacts | None, now: float, fresh: bool
    ) -> tuple[int, bool]:
        """(count, from the cache?) for the message's hourly key; (0, False) when that limit is off."""
        if not self.policy.hourly_limit(msg.direction) or (msg.direction is Direction.FROM_DEVICE and device is None):
            return 0, False
        key = count_keys(msg, user, device)[1]
        kept = None if fresh or self.ttl <= 0 else self._hour_counts.get(key)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1], True
        count = self._count_last_hour(key)
        if self.ttl > 0:
            with self._lock:
                if len(self._hour_counts) >= HOUR_COUNTS_KEPT:
                    self._hour_counts = {k: v for k, v in self._hour_counts.items() if now - v[0] < self.ttl}
                self._hour_counts[key] = (now, count)
        return count, False

    # -- the database -------------------------------------------------------------------------------
    @staticmethod
    def _count_last_hour(key: tuple) -> int:
        # Django models: loaded after ensure_django() in the worker
        from messaging.outbox.store import count_last_hour_from_device, count_last_hour_from_sender

        if key[0] == "device":
            return count_last_hour_from_device(key[1])
        return count_last_hour_from_sender(key[1], key[2])

    def _load(self, key: tuple[str, object]) -> tuple[UserFacts | None, DeviceFacts | None]:
        from web.accounts.models import Device, User  # Django models: loaded after ensure_django() in the worker

        kind, value = key
        if kind == "device":
            device = Device.objects.select_related("owner").filter(device_id=value).first()
            user = device.owner if device else None
        else:
            query = {"username": value} if kind == "mailbox" else {"twilio_number": value}
            user = User.objects.filter(**query).first()
            device = user.devices.filter(is_active=True).first() if user else None
        return (user_facts(user) if user else None), device_facts(device)


def user_facts(user) -> UserFacts:
    """The user's facts; each month's count only when its quota is set (else it is never looked at)."""
    from messaging.outbox.store import count_this_month  # Django models: loaded after ensure_django() in the worker

    def month(quota: int | None, direction: Direction) -> int:
        return count_this_month(user.id, direction=direction) if quota is not None else 0

    return UserFacts(
        id=user.id,
        username=user.username,
        is_active=user.is_active,
        monthly_quota=user.monthly_quota,
        twilio_number=user.twilio_number,
        inbound_this_month=month(user.monthly_quota, Direction.TO_DEVICE),
        blocked=frozenset(user.blocked_senders.values_list("address", flat=True)),
        monthly_outbound_quota=user.monthly_outbound_quota,
        outbound_this_month=month(user.monthly_outbound_quota, Direction.FROM_DEVICE),
        contacts=contact_facts(user),
        contacts_only=user.contacts_only,
        own_email=user.contact_email.strip().lower() if user.contact_email and user.contact_email_verified else "",
    )


def contact_facts(user) -> tuple[ContactFacts, ...]:
    """The user's contacts (short name, channel, address), by name."""
    channel = {"email": Protocol.EMAIL, "phone": Protocol.SMS}
    rows = user.contacts.order_by("name").values_list("name", "kind", "address")
    return tuple(ContactFacts(name=name, protocol=channel[kind], address=address) for name, kind, address in rows)


def device_facts(device) -> DeviceFacts | None:
    if device is None:
        return None
    return DeviceFacts(id=device.id, device_id=device.device_id, is_active=device.is_active)
