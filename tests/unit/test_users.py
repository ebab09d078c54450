"""UserBase without Ray: who a message is for, what is stored, and why a message is refused."""

from __future__ import annotations

import pytest

from messaging.config import Config
from messaging.routing import Verdict
from messaging.types import CombinedMessage, Direction, Protocol
from messaging.users import UserBase
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
    return UserBase(CONFIG)


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
    result = users.intake(from_device(device.device_id, "+44 7700 900123", protocol=Protocol.SMS))
    assert result.verdict is Verdict.ACCEPT
    assert Message.objects.get(id=result.message_id).recipient == "+447700900123"


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


def test_quota_counts_both_directions(users, make_user):
    user = make_user(quota=2)
    device_id = user.devices.get().device_id
    assert users.intake(to_device(f"{user.username}@beaver.test", key="a")).verdict is Verdict.ACCEPT
    assert users.intake(from_device(device_id, "x@example.org", key="b")).verdict is Verdict.ACCEPT
    assert users.intake(to_device(f"{user.username}@beaver.test", key="c")).verdict is Verdict.QUOTA_EXCEEDED


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

    def __init__(self, size=2):
        self.size = size
        self.kicks = []

    def notify(self, idx, method, *args):
        self.kicks.append((idx, method, *args))
        return True


def test_a_batch_is_stored_in_order_and_kicked_once_per_sender(make_user):
    pool = KickRecorder()
    users = UserBase(CONFIG, pools={"satellite": pool})
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
    assert all(method == "deliver_many" for _, method, _ in pool.kicks)
    assert len(pool.kicks) <= 2, "one kick per sender member, not one per message"


def test_a_refusal_is_never_decided_on_cached_facts(make_user):
    from web.accounts.models import BlockedSender

    users = UserBase(Config(email_domain="beaver.test", user_cache_seconds=60))
    user = make_user(blocked=["amy@example.org"])
    assert users.intake(to_device(f"{user.username}@beaver.test", key="x1")).verdict is Verdict.BLOCKED_SENDER
    BlockedSender.objects.filter(user=user).delete()
    assert users.intake(to_device(f"{user.username}@beaver.test", key="x2")).verdict is Verdict.ACCEPT, (
        "unblocked a moment ago: accepted at once, though the cached facts still list the block"
    )
    assert users.stats()["cache_misses"] >= 2
