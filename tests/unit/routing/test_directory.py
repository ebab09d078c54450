"""Directory: user and device facts from the database, kept for USER_CACHE_SECONDS, never for a refusal."""

from __future__ import annotations

from collections import Counter

import pytest

from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.routing.decisions import Policy
from messaging.routing.directory import Directory, lookup_key
from web.accounts.models import BlockedSender

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def mail_to(recipient, sender="amy@example.org"):
    return CombinedMessage(Direction.TO_DEVICE, Protocol.EMAIL, sender, recipient, "hi", "k")


def test_lookup_keys():
    assert lookup_key(mail_to("Bob+trip@Beaver.Test"), "beaver.test") == ("mailbox", "bob")
    assert lookup_key(mail_to("bob@elsewhere.test"), "beaver.test") is None
    sms = CombinedMessage(Direction.TO_DEVICE, Protocol.SMS, "+15550001111", "+14155550001", "hi", "k")
    assert lookup_key(sms, "beaver.test") == ("number", "+14155550001")
    dev = CombinedMessage(Direction.FROM_DEVICE, Protocol.EMAIL, "device:7", "x@y.test", "hi", "k", device_id=7)
    assert lookup_key(dev, "beaver.test") == ("device", 7)


def test_facts_are_cached_until_they_expire(make_user, django_assert_num_queries):
    user = make_user()
    clock = Clock()
    directory = Directory("beaver.test", ttl=5.0, clock=clock)
    msg = mail_to(f"{user.username}@beaver.test")
    first = directory.find(msg)
    assert not first.cached and first.user.id == user.id and first.device.is_active
    BlockedSender.objects.create(user=user, address="amy@example.org")
    with django_assert_num_queries(0):
        again = directory.find(msg)
    assert again.cached and again.user.blocked == frozenset(), "within the TTL the cached facts serve"
    assert directory.find(msg, fresh=True).user.blocked == {"amy@example.org"}, "fresh always asks the database"
    clock.now += 5.0
    assert not directory.find(msg).cached, "expired"
    assert (directory.hits, directory.misses) == (1, 3)


def test_nobody_is_never_cached(make_user):
    directory = Directory("beaver.test", ttl=60.0, clock=Clock())
    assert directory.find(mail_to("newbie@beaver.test")).user is None
    make_user("newbie")
    assert directory.find(mail_to("newbie@beaver.test")).user is not None, "a new user is found at once"


def test_quota_count_advances_with_what_this_actor_accepts(make_user):
    user = make_user(quota=10)
    directory = Directory("beaver.test", ttl=60.0, clock=Clock())
    msg = mail_to(f"{user.username}@beaver.test")
    assert directory.find(msg).user.inbound_this_month == 0
    found = directory.find(msg)
    directory.accepted(msg, found.user, found.device)
    directory.accepted(msg, found.user, found.device)
    assert directory.find(msg).user.inbound_this_month == 2
    assert directory.find(msg).user.outbound_this_month == 0, "each direction is counted apart"


def test_each_month_count_is_of_its_own_direction(make_user):
    from messaging.outbox import store as outbox

    user = make_user(quota=10)
    user.monthly_outbound_quota = 10
    user.save()
    device = user.devices.get()
    for i in range(3):
        outbox.record(mail_to(f"{user.username}@beaver.test"), user_id=user.id, device_id=device.id, accepted=True)
        outbox.record(
            CombinedMessage(Direction.FROM_DEVICE, Protocol.SMS, "device:1", "+14155550142", "hi", f"d{i}"),
            user_id=user.id,
            device_id=device.id,
            accepted=True,
        )
    facts = Directory("beaver.test", ttl=0).find(mail_to(f"{user.username}@beaver.test")).user
    assert (facts.inbound_this_month, facts.outbound_this_month) == (1, 3)


def test_hourly_counts_are_cached_advanced_and_recounted_fresh(make_user):
    from messaging.outbox import store as outbox

    user = make_user()
    clock = Clock()
    directory = Directory("beaver.test", ttl=5.0, clock=clock, policy=Policy(inbound_per_sender_per_hour=20))
    device = user.devices.get()

    def pest(key):
        return CombinedMessage(
            Direction.TO_DEVICE, Protocol.EMAIL, "pest@spam.test", f"{user.username}@beaver.test", "x", key
        )

    first = directory.find(pest("k0"))
    assert (first.last_hour, first.cached) == (0, False)
    outbox.record(pest("k1"), user_id=user.id, device_id=device.id, accepted=True)
    outbox.record(pest("k2"), user_id=user.id, device_id=device.id, accepted=False, reason="blocked_sender")
    cached = directory.find(pest("k3"))
    assert (cached.last_hour, cached.cached) == (0, True), "another actor's message shows on the next count"
    assert directory.find(pest("k3"), fresh=True).last_hour == 1, "fresh recounts; refused ones do not count"
    found = directory.find(pest("k3"))
    directory.accepted(pest("k3"), found.user, found.device)
    assert directory.find(pest("k4")).last_hour == 2
    assert directory.find(pest("k4"), pending=Counter({("sender", user.id, "pest@spam.test"): 3})).last_hour == 5
    friend = CombinedMessage(
        Direction.TO_DEVICE, Protocol.EMAIL, "amy@example.org", f"{user.username}@beaver.test", "x", "f"
    )
    assert directory.find(friend).last_hour == 0, "per sender"
    assert Directory("beaver.test", ttl=5.0).find(pest("k5")).last_hour == 0, "no limit set: nothing counted"


def test_ttl_zero_turns_the_cache_off(make_user):
    user = make_user()
    directory = Directory("beaver.test", ttl=0, clock=Clock())
    msg = mail_to(f"{user.username}@beaver.test")
    directory.find(msg)
    assert not directory.find(msg).cached
