"""Who is a message for: the user and device facts behind each routing decision, from the database.

A user actor keeps what it looked up for a few seconds (``USER_CACHE_SECONDS``), so a busy mailbox or
device costs no queries per message. The cache only ever speeds up an acceptance: the user actor decides
again on fresh facts before it refuses anything, so a mailbox created or a sender unblocked a moment ago
is never refused from a stale entry. What a stale entry can do is accept for at most that long after an
operator blocked a sender or disabled a user or device (the satellite sender checks the device again
when it sends). The month's message count for a quota is counted once per entry and then advanced by
what this actor accepts; another actor's acceptances show when the entry is next refreshed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .mailparse import mailbox_username
from .routing import DeviceFacts, UserFacts
from .types import CombinedMessage, Direction, Protocol


@dataclass(frozen=True)
class Found:
    user: UserFacts | None
    device: DeviceFacts | None
    cached: bool  # True when served from the cache (the caller re-checks fresh before refusing)


def lookup_key(msg: CombinedMessage, email_domain: str) -> tuple[str, object] | None:
    """What identifies the user of this message: its device, mailbox or number (None: cannot be ours)."""
    if msg.direction is Direction.FROM_DEVICE:
        return ("device", msg.device_id)
    if msg.protocol is Protocol.EMAIL:
        username = mailbox_username(msg.recipient, email_domain)
        return ("mailbox", username) if username else None
    return ("number", msg.recipient)


class Directory:
    def __init__(self, email_domain: str, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.email_domain = email_domain
        self.ttl = ttl
        self.clock = clock
        self._entries: dict[tuple[str, object], tuple[float, UserFacts | None, DeviceFacts | None]] = {}
        self._month_counts: dict[int, int] = {}  # user id -> messages this month, as last counted + since
        self._lock = threading.Lock()  # the user actor calls from several threads
        self.hits = 0
        self.misses = 0

    def find(self, msg: CombinedMessage, *, fresh: bool = False) -> Found:
        key = lookup_key(msg, self.email_domain)
        if key is None:
            return Found(None, None, cached=False)
        now = self.clock()
        entry = None if fresh or self.ttl <= 0 else self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl and entry[1] is not None:
            self.hits += 1
            return Found(self._with_count(entry[1]), entry[2], cached=True)
        self.misses += 1
        user, device = self._load(key)
        if user is not None:
            self._month_counts[user.id] = user.messages_this_month
            if self.ttl > 0:
                self._entries[key] = (now, user, device)
        else:
            self._entries.pop(key, None)  # nobody: never cached, a new user must not wait for an expiry
        return Found(user, device, cached=False)

    def accepted(self, user: UserFacts) -> None:
        """One more message this month for ``user`` (keeps a cached quota count honest)."""
        with self._lock:
            if user.id in self._month_counts:
                self._month_counts[user.id] += 1

    def _with_count(self, user: UserFacts) -> UserFacts:
        count = self._month_counts.get(user.id, user.messages_this_month)
        return user if count == user.messages_this_month else replace(user, messages_this_month=count)

    # -- the database -------------------------------------------------------------------------------
    def _load(self, key: tuple[str, object]) -> tuple[UserFacts | None, DeviceFacts | None]:
        from web.accounts.models import Device, User

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
    from .outbox import count_this_month

    return UserFacts(
        id=user.id,
        username=user.username,
        is_active=user.is_active,
        monthly_quota=user.monthly_quota,
        twilio_number=user.twilio_number,
        messages_this_month=count_this_month(user.id) if user.monthly_quota is not None else 0,
        blocked=frozenset(user.blocked_senders.values_list("address", flat=True)),
    )


def device_facts(device) -> DeviceFacts | None:
    if device is None:
        return None
    return DeviceFacts(id=device.id, device_id=device.device_id, is_active=device.is_active)
