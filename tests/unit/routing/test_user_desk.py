"""UserDesk without Ray: who a message is for, what is stored, and why a message is refused."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.routing.decisions import Verdict
from messaging.routing.user_desk import UserDesk
from messaging.runtime.config import Config
from messaging.runtime.pool import stable_index
from web.delivery.models import Message

pytestmark = pytest.mark.django_db
CONFIG = Config(email_domain="beaver.test")


def to_device(recipient, sender="amy@example.org", key="smtp:1", protocol=Protocol.EMAIL):
    return CombinedMessage(
        direction=Direction.TO_DEVICE,
        protocol=protocol,
        sender=sender,
        recipient=recipient,
        text="hello",
        idempotency_key=key,
    )


def from_device(device_id, recipient, protocol=Protocol.EMAIL, key="hive:1:0"):
    return CombinedMessage(
        direction=Direction.FROM_DEVICE,
        protocol=protocol,
        sender=f"device:{device_id}",
        recipient=recipient,
        text="hi from the hills",
        idempotency_key=key,
        device_id=device_id,
    )


@pytest.fixture
def users():
    return UserDesk(CONFIG)


def test_mail_to_mailbox_is_stored_for_the_user_and_device(users, make_user):
    user = make_user()
    result = users.intake(to_device(f"{user.username}+trip@Beaver.Test"))
    assert result.verdict is Verdict.ACCEPT and result.created and result.stored
    row = Message.objects.get(id=result.message_id)
    assert (row.user_id, row.device_id, row.status) == (user.id, user.devices.get().id, "received")


def test_sms_to_twilio_number_finds_the_user(users, make_user):
    user = make_user()
    result = users.intake(to_device(user.twilio_number, sender="+15550009999", key="twilio:SM1", protocol=Protocol.SMS))
    assert result.verdict is Verdict.ACCEPT
    assert Message.objects.get(id=result.message_id).user_id == user.id


def test_device_message_normalises_the_phone_number(users, make_user):
    user = make_user()
    device = user.devices.get()
    result = users.intake(from_device(device.device_id, "+1 (415) 555-0142", protocol=Protocol.SMS))
    assert result.verdict is Verdict.ACCEPT
    assert Message.objects.get(id=result.message_id).recipient == "+14155550142"


def test_intake_twice_stores_once(users, make_user):
    user = make_user()
    first = users.intake(to_device(f"{user.username}@beaver.test"))
    second = users.intake(to_device(f"{user.username}@beaver.test"))
    assert first.created and not second.created and first.message_id == second.message_id
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("setup", "verdict"),
    [
        ({"active": False}, Verdict.INACTIVE_USER),
        ({"device": False}, Verdict.NO_DEVICE),
        ({"blocked": ["AMY@example.org"]}, Verdict.BLOCKED_SENDER),
        ({"quota": 0}, Verdict.QUOTA_EXCEEDED),
    ],
)
def test_refusals_are_stored_with_the_reason(users, make_user, setup, verdict):
    user = make_user(**setup)
    result = users.intake(to_device(f"{user.username}@beaver.test"))
    assert result.verdict is verdict and result.stored
    row = Message.objects.get(id=result.message_id)
    assert row.status == "rejected" and row.last_error == verdict.value


def test_unknown_mailbox_and_foreign_domain(users, make_user):
    assert users.intake(to_device("nobody@beaver.test")).verdict is Verdict.UNKNOWN_RECIPIENT
    assert users.intake(to_device("bob@elsewhere.test", key="smtp:2")).verdict is Verdict.UNKNOWN_RECIPIENT


def test_unknown_device(users):
    assert users.intake(from_device(123456789, "x@example.org")).verdict is Verdict.UNKNOWN_RECIPIENT


def test_device_naming_a_bad_address_is_refused(users, make_user):
    user = make_user()
    device_id = user.devices.get().device_id
    assert users.intake(from_device(device_id, "not an address")).verdict is Verdict.BAD_DESTINATION
    assert users.intake(from_device(device_id, "12", Protocol.SMS, key="hive:2:0")).verdict is Verdict.BAD_DESTINATION


def test_each_direction_has_its_own_quota(users, make_user):
    user = make_user(quota=2)
    device_id = user.devices.get().device_id
    assert users.intake(to_device(f"{user.username}@beaver.test", key="a")).verdict is Verdict.ACCEPT
    assert users.intake(from_device(device_id, "x@example.org", key="b")).verdict is Verdict.ACCEPT
    assert users.intake(to_device(f"{user.username}@beaver.test", key="c")).verdict is Verdict.ACCEPT, (
        "the device's own message does not use up the quota of messages to it"
    )
    assert users.intake(to_device(f"{user.username}@beaver.test", key="d")).verdict is Verdict.QUOTA_EXCEEDED
    user.monthly_outbound_quota = 2
    user.save()
    fresh = UserDesk(CONFIG)
    assert fresh.intake(from_device(device_id, "x@example.org", key="e")).verdict is Verdict.ACCEPT
    result = fresh.intake(from_device(device_id, "x@example.org", key="f"))
    assert result.verdict is Verdict.OUTBOUND_QUOTA_EXCEEDED
    row = Message.objects.get(id=result.message_id)
    assert row.status == "rejected" and "quota of 2 messages from the device is used up" in row.last_error


def test_check_recipient_for_rcpt(users, make_user):
    user = make_user(blocked=["pest@example.org"], quota=0)
    assert users.check_recipient(f"{user.username}@beaver.test", "amy@example.org") is Verdict.ACCEPT, (
        "quota is judged at DATA time, not at RCPT"
    )
    assert users.check_recipient(f"{user.username}@beaver.test", "Pest@Example.org") is Verdict.BLOCKED_SENDER
    assert users.check_recipient("ghost@beaver.test", "amy@example.org") is Verdict.UNKNOWN_RECIPIENT


def test_dead_letter(users, make_user):
    user = make_user()
    device_id = user.devices.get().device_id
    message_id = users.dead_letter("hive:77", f"device:{device_id}", "%%%", "bad base64", device_id)
    row = Message.objects.get(id=message_id)
    assert row.status == "dead" and row.device.device_id == device_id and "bad base64" in row.last_error


class KickRecorder:
    """Stands in for a sender pool: records the kicks a user actor sends."""

    def __init__(self, kind, size=2):
        self.kind = kind
        self.size = size
        self.kicks = []

    def notify(self, idx, method, *args):
        self.kicks.append((idx, method, *args))
        return True


def test_a_batch_is_stored_in_order_and_kicked_once_per_sender(make_user):
    pool = KickRecorder("satellite")
    users = UserDesk(CONFIG, pools={"satellite": pool})
    amy, bob = make_user(), make_user()
    batch = [
        to_device(f"{amy.username}@beaver.test", key="m1"),
        to_device("ghost@beaver.test", key="m2"),
        to_device(f"{bob.username}@beaver.test", key="m3"),
        to_device(f"{amy.username}@beaver.test", key="m4"),
        to_device(f"{amy.username}@beaver.test", key="m1"),
    ]
    results = users.intake_many(batch)
    assert [r.verdict for r in results] == [Verdict.ACCEPT, Verdict.UNKNOWN_RECIPIENT] + [Verdict.ACCEPT] * 3
    assert [r.created for r in results] == [True, True, True, True, False]
    ids = [r.message_id for r in results]
    assert ids[0] < ids[1] < ids[2] < ids[3] and ids[4] == ids[0]
    kicked = sorted(mid for _, method, mids in pool.kicks for mid in mids)
    assert kicked == sorted([ids[0], ids[2], ids[3]]), "accepted new messages only, each once"
    # a kind that sends one channel is not told which (as before the outbound kind: an old one still takes it)
    assert all(method == "deliver_many" for _, method, _ in pool.kicks)
    assert len(pool.kicks) <= 2, "one kick per sender member, not one per message"


def test_a_devices_email_and_text_go_to_one_sender_member_each_kick_naming_its_channel(make_user):
    from messaging.operations.kinds import sender_pools

    senders = KickRecorder("courier")
    users = UserDesk(CONFIG, pools=sender_pools({"courier": senders}))
    device_id = make_user().devices.get().device_id
    results = users.intake_many(
        [
            from_device(device_id, "mum@example.org", Protocol.EMAIL, key="hive:7:0"),
            from_device(device_id, "+14155550142", Protocol.SMS, key="hive:7:1"),
            from_device(device_id, "dad@example.org", Protocol.EMAIL, key="hive:7:2"),
        ]
    )
    mail, text, mail2 = (r.message_id for r in results)
    assert sorted(senders.kicks) == sorted(
        [
            (senders.kicks[0][0], "deliver_many", [mail, mail2], "mailout"),
            (senders.kicks[0][0], "deliver_many", [text], "sms"),
        ]
    ), "one member (the user's), one kick per channel, each channel's messages in order"


def test_a_caller_that_kicks_itself_is_told_whom_to_kick_and_nothing_is_kicked_here(make_user):
    """intake_many(msgs, False), as intake's UserStore calls it: stored alike, no kick from here; each new accepted
    message's result names the sender member (the user's, so their messages stay in order) and, for a kind that
    sends several channels, the channel."""
    from messaging.operations.kinds import sender_pools
    from messaging.routing.user_desk import Kick

    senders = KickRecorder("courier")
    users = UserDesk(CONFIG, pools=sender_pools({"courier": senders}))
    amy = make_user()
    device_id = amy.devices.get().device_id
    results = users.intake_many(
        [
            to_device(f"{amy.username}@beaver.test", key="k1"),
            to_device("ghost@beaver.test", key="k2"),
            to_device(f"{amy.username}@beaver.test", key="k1"),
            from_device(device_id, "+14155550142", Protocol.SMS, key="hive:8:0"),
        ],
        False,
    )
    assert senders.kicks == []
    member = stable_index(f"user:{amy.id}", 2)
    assert [r.kick for r in results] == [
        Kick("courier", member, "satellite"),
        None,  # refused
        None,  # a duplicate: kicked when it was new
        Kick("courier", member, "sms"),
    ]
    assert results[3].kick.arguments([5]) == ([5], "sms") and results[0].kick.arguments([4]) == ([4], "satellite")


def test_a_refusal_is_never_decided_on_cached_facts(make_user):
    from web.accounts.models import BlockedSender

    users = UserDesk(Config(email_domain="beaver.test", user_cache_seconds=60))
    user = make_user(blocked=["amy@example.org"])
    assert users.intake(to_device(f"{user.username}@beaver.test", key="x1")).verdict is Verdict.BLOCKED_SENDER
    BlockedSender.objects.filter(user=user).delete()
    assert users.intake(to_device(f"{user.username}@beaver.test", key="x2")).verdict is Verdict.ACCEPT, (
        "unblocked a moment ago: accepted at once, though the cached facts still list the block"
    )
    assert users.stats()["cache_misses"] >= 2


# -- toll fraud: where a device may text ----------------------------------------------------------------


def sms_pool_and_users(**config):
    pool = KickRecorder("courier")
    return pool, UserDesk(dataclasses.replace(CONFIG, **config), pools={"sms": pool})


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("+1 900 555 0123", "SMS to +1 900… refused: premium-rate numbers are not allowed"),
        ("+44 909 090 1234", "SMS to +44 909… refused: premium-rate numbers are not allowed"),
        ("+44 7400 123456", "GB is not an allowed country (SMS_ALLOWED_COUNTRIES: CA, US)"),
        ("+1 555 010 0998", "not a number in any allocated range (unknown type)"),
    ],
)
def test_a_device_text_to_a_refused_number_is_stored_with_the_reason_and_never_sent(make_user, number, why):
    pool, users = sms_pool_and_users()
    device_id = make_user().devices.get().device_id
    result = users.intake(from_device(device_id, number, Protocol.SMS))
    assert result.verdict is Verdict.REFUSED_DESTINATION and result.stored, "stored: the packet can be acked"
    row = Message.objects.get(id=result.message_id)
    assert row.status == "rejected" and row.next_attempt_at is None, "final: no sender or sweep ever takes it"
    assert row.last_error.startswith("refused_destination: ") and why in row.last_error
    assert pool.kicks == []


def test_a_device_text_to_a_mobile_in_an_allowed_country_goes_out(make_user):
    pool, users = sms_pool_and_users(sms_allowed_countries="US,CA,GB")
    device_id = make_user().devices.get().device_id
    ok = [
        users.intake(from_device(device_id, n, Protocol.SMS, key=f"hive:{i}:0"))
        for i, n in enumerate(["+14155550142", "+16135550123", "+447400123456"])
    ]
    assert [r.verdict for r in ok] == [Verdict.ACCEPT] * 3
    assert sorted(mid for _, _, mids, *_ in pool.kicks for mid in mids) == sorted(r.message_id for r in ok)


def test_a_runaway_device_is_capped_per_hour_and_the_rest_is_stored_not_sent(make_user):
    pool, users = sms_pool_and_users(device_outbound_per_hour=3)
    device_id = make_user().devices.get().device_id
    batch = [from_device(device_id, "+14155550142", Protocol.SMS, key=f"hive:run:{i}") for i in range(5)]
    first = users.intake_many(batch[:2])
    rest = users.intake_many(batch[2:])  # one batch: what it accepted counts before it is stored
    verdicts = [r.verdict for r in first + rest]
    assert verdicts == [Verdict.ACCEPT] * 3 + [Verdict.DEVICE_RATE_LIMITED] * 2
    assert all(r.stored for r in first + rest), "every device message is stored, so its packet can be acked"
    capped = Message.objects.get(id=rest[-1].message_id)
    assert capped.status == "rejected" and "DEVICE_OUTBOUND_PER_HOUR" in capped.last_error
    assert len([m for _, _, mids, *_ in pool.kicks for m in mids]) == 3
    Message.objects.filter(device__device_id=device_id).update(created_at=timezone.now() - timedelta(hours=2))
    later = users.intake(from_device(device_id, "+14155550142", Protocol.SMS, key="hive:run:later"))
    assert later.verdict is Verdict.ACCEPT, "an hour later it may send again (decided on fresh counts)"


def test_a_thousand_inbound_messages_never_refuse_the_devices_sos(make_user):
    users = UserDesk(dataclasses.replace(CONFIG, user_cache_seconds=60))
    user = make_user(quota=1000)
    mailbox = f"{user.username}@beaver.test"
    spam = [to_device(mailbox, sender=f"stranger{i}@spam.test", key=f"spam:{i}") for i in range(1000)]
    assert {r.verdict for r in users.intake_many(spam)} == {Verdict.ACCEPT}
    assert users.intake(to_device(mailbox, key="spam:more")).verdict is Verdict.QUOTA_EXCEEDED
    sos = users.intake(from_device(user.devices.get().device_id, "+14155550142", Protocol.SMS, key="hive:sos:0"))
    assert sos.verdict is Verdict.ACCEPT
    assert Message.objects.get(id=sos.message_id).status == "received"


# -- a sender flooding one mailbox or number --------------------------------------------------------------


def test_a_sender_over_its_hourly_limit_is_refused_for_now_and_nothing_is_stored(make_user):
    users = UserDesk(dataclasses.replace(CONFIG, inbound_per_sender_per_hour=3, user_cache_seconds=60))
    user, other = make_user(), make_user()
    mailbox = f"{user.username}@beaver.test"
    results = [users.intake(to_device(mailbox, sender="pest@spam.test", key=f"p{i}")) for i in range(4)]
    assert [r.verdict for r in results] == [Verdict.ACCEPT] * 3 + [Verdict.RATE_LIMITED]
    assert not results[3].stored and results[3].message_id is None
    assert not Message.objects.filter(idempotency_key="p3").exists(), "not stored: the retry is stored later"
    assert users.check_recipient(mailbox, "Pest@spam.test") is Verdict.RATE_LIMITED, "RCPT says it already"
    assert users.intake(to_device(mailbox, sender="friend@example.org", key="f0")).verdict is Verdict.ACCEPT
    assert users.intake(to_device(f"{other.username}@beaver.test", sender="pest@spam.test", key="o0")).stored
    sms = [
        users.intake(to_device(user.twilio_number, sender="+15550001234", key=f"twilio:SM{i}", protocol=Protocol.SMS))
        for i in range(4)
    ]
    assert [r.verdict for r in sms] == [Verdict.ACCEPT] * 3 + [Verdict.RATE_LIMITED], "per number as well"
    Message.objects.filter(sender="pest@spam.test").update(created_at=timezone.now() - timedelta(hours=2))
    retry = users.intake(to_device(mailbox, sender="pest@spam.test", key="p3"))
    assert retry.verdict is Verdict.ACCEPT and retry.created, "the hour passed: the retry is stored"


def test_the_hourly_limit_holds_within_one_batch(make_user):
    users = UserDesk(dataclasses.replace(CONFIG, inbound_per_sender_per_hour=2, user_cache_seconds=0))
    mailbox = f"{make_user().username}@beaver.test"
    batch = [to_device(mailbox, sender="pest@spam.test", key=f"b{i}") for i in range(4)]
    batch.insert(2, to_device(mailbox, sender="friend@example.org", key="friend"))
    results = users.intake_many(batch)
    assert [r.verdict for r in results] == [Verdict.ACCEPT] * 3 + [Verdict.RATE_LIMITED] * 2
    assert [r.stored for r in results] == [True] * 3 + [False] * 2
    assert set(Message.objects.values_list("idempotency_key", flat=True)) == {"b0", "b1", "friend"}


# -- several processes taking in for one user -----------------------------------------------------------------


def test_two_intakes_with_their_own_caches_never_pass_an_hourly_limit_together(make_user):
    config = dataclasses.replace(CONFIG, inbound_per_sender_per_hour=3, user_cache_seconds=60)
    here, there = UserDesk(config), UserDesk(config)  # two processes: each caches what it counted
    mailbox = f"{make_user().username}@beaver.test"
    here.intake(to_device(mailbox, sender="pest@spam.test", key="warm-here"))
    there.intake(to_device(mailbox, sender="pest@spam.test", key="warm-there"))  # both caches now hold a count
    results = [
        (here if i % 2 else there).intake(to_device(mailbox, sender="pest@spam.test", key=f"p{i}")) for i in range(4)
    ]
    assert [r.verdict for r in results] == [Verdict.ACCEPT] + [Verdict.RATE_LIMITED] * 3
    assert Message.objects.filter(sender="pest@spam.test").count() == 3, "the limit holds across both"


def test_two_intakes_with_their_own_caches_never_pass_a_monthly_quota_together(make_user):
    config = dataclasses.replace(CONFIG, user_cache_seconds=60)
    here, there = UserDesk(config), UserDesk(config)
    user = make_user(quota=2)
    mailbox = f"{user.username}@beaver.test"
    verdicts = [
        (here if i % 2 else there).intake(to_device(mailbox, sender=f"s{i}@example.org", key=f"m{i}")).verdict
        for i in range(4)
    ]
    assert verdicts == [Verdict.ACCEPT] * 2 + [Verdict.QUOTA_EXCEEDED] * 2
    assert Message.objects.filter(user=user).exclude(status="rejected").count() == 2


def test_a_devices_hourly_limit_holds_across_two_intakes(make_user):
    config = dataclasses.replace(CONFIG, device_outbound_per_hour=2, user_cache_seconds=60)
    here, there = UserDesk(config), UserDesk(config)
    device_id = make_user().devices.get().device_id
    verdicts = [
        (here if i % 2 else there).intake(from_device(device_id, "amy@example.org", key=f"hive:d:{i}")).verdict
        for i in range(4)
    ]
    assert verdicts == [Verdict.ACCEPT] * 2 + [Verdict.DEVICE_RATE_LIMITED] * 2


@pytest.mark.django_db(transaction=True)
def test_intakes_storing_at_the_same_moment_never_pass_an_hourly_limit(make_user):
    """Four intakes (each its own cache and database connection) take in one sender's flood at once."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    config = dataclasses.replace(CONFIG, inbound_per_sender_per_hour=5, user_cache_seconds=60)
    intakes = [UserDesk(config) for _ in range(4)]
    mailbox = f"{make_user().username}@beaver.test"

    def flood(n: int) -> list:
        try:
            batch = [to_device(mailbox, sender="pest@spam.test", key=f"t{n}:{i}") for i in range(3)]
            return [r.verdict for r in intakes[n].intake_many(batch)]
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as threads:
        verdicts = [v for batch in threads.map(flood, range(4)) for v in batch]
    assert verdicts.count(Verdict.ACCEPT) == 5
    assert Message.objects.filter(sender="pest@spam.test").count() == 5
