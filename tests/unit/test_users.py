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
