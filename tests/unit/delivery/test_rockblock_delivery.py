"""RockBLOCK devices in the outbox, without Ray: messages to a RockBLOCK device go out through the MT API (fake
RockBLOCK over a real socket); a device on a network that is not enabled gets a dead letter saying why."""

from __future__ import annotations

import dataclasses

import pytest

from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.delivery.satellite import SatelliteBase
from messaging.outbox import store as outbox
from messaging.runtime.config import Config
from tests.unit.delivery.test_senders import deliver
from web.accounts.models import Device
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)
IMEI = 300434063180550
BASE = Config(email_domain="beaver.test")


@pytest.fixture
def fake():
    from messaging.sandbox.fake_rockblock import FakeRockBlock

    with FakeRockBlock() as fake:
        yield fake


def rockblock_user(make_user, imei=IMEI):
    user = make_user(device=False)
    Device.objects.create(network="rockblock", device_id=imei, owner=user)
    return user


def to_device(user, text="hello", key=None) -> int:
    msg = CombinedMessage(
        direction=Direction.TO_DEVICE,
        protocol=Protocol.EMAIL,
        sender="amy@example.org",
        recipient=f"{user.username}@beaver.test",
        text=text,
        idempotency_key=key or f"k-{user.username}",
    )
    return outbox.record(msg, user_id=user.id, device_id=user.devices.get().id, accepted=True).message_id


def test_a_rockblock_device_gets_its_message_through_the_mt_api_with_the_mt_ids_recorded(fake, make_user):
    config = dataclasses.replace(
        BASE, rockblock_api_url=fake.base_url, rockblock_username="sandbox", rockblock_password="sandbox"
    )
    user = rockblock_user(make_user)
    mid = to_device(user, "word " * 120)
    assert deliver(SatelliteBase(config), mid) == "sent"
    sent = fake.to_device(IMEI)
    assert len(sent) >= 2 and all(len(bytes.fromhex(m["data"])) <= 270 for m in sent)
    texts = []
    for m in sent:
        packet = pb.MessageDataPB()
        packet.ParseFromString(bytes.fromhex(m["data"]))
        texts.append(packet.message[0].text)
    assert texts[0].startswith("(1/") and "word word" in texts[0]
    assert Message.objects.get(pk=mid).remote_id == ",".join(str(m["mtId"]) for m in sent)


def test_a_device_on_a_network_that_is_not_enabled_is_a_dead_letter_saying_why(fake, make_user):
    user = rockblock_user(make_user)
    mid = to_device(user)
    assert deliver(SatelliteBase(BASE), mid) == "dead"  # no RockBLOCK login: only Swarm is enabled
    row = Message.objects.get(pk=mid)
    assert "rockblock" in row.last_error and "not enabled" in row.last_error
    assert fake.to_device() == []


def test_the_imei_is_checked_when_a_device_is_registered(make_user):
    from django.core.exceptions import ValidationError

    owner = make_user(device=False)
    with pytest.raises(ValidationError) as err:
        Device(network="rockblock", device_id=4242, owner=owner).full_clean()
    assert "device_id" in err.value.message_dict and "15 digits" in str(err.value)
    Device(network="rockblock", device_id=IMEI, owner=owner).full_clean()
    Device(network="swarm", device_id=4242, owner=owner).full_clean()
    assert Device(device_id=1, owner=owner).network == "swarm"
