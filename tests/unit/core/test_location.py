"""A device's position: stored with its messages, and sent with its email or SMS only when its owner shares it."""

from __future__ import annotations

import dataclasses
import email

import pytest

from messaging.core.location import accuracy_text, map_link, position_line, with_position
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.delivery.senders import MailOutSender, SmsSender
from messaging.outbox import store as outbox
from messaging.runtime.config import Config
from messaging.satellite.transport import DevicePacket
from tests.unit.delivery.test_senders import deliver
from web.delivery.models import Message

LINK = "https://www.openstreetmap.org/?mlat=52.3867&mlon=0.2938#map=12/52.3867/0.2938"


def test_the_map_link_marks_the_position_zoomed_to_its_accuracy():
    assert map_link(52.3867, 0.2938, 8) == LINK
    assert map_link(-33.86791, 151.20732, 0.3).endswith("#map=15/-33.8679/151.2073")
    assert "#map=6/" in map_link(0, 0, 500)
    assert map_link(1, 2) == "https://www.openstreetmap.org/?mlat=1.0000&mlon=2.0000#map=12/1.0000/2.0000"


def test_the_accuracy_reads_as_plus_or_minus_kilometres():
    assert (accuracy_text(8), accuracy_text(8.0), accuracy_text(2.5), accuracy_text(123.4)) == (
        "±8 km",
        "±8 km",
        "±2.5 km",
        "±123 km",
    )
    assert accuracy_text(None) == "" and accuracy_text(float("nan")) == ""


def test_the_position_goes_out_only_when_shared_and_known():
    assert with_position("Made camp", share=True, latitude=52.3867, longitude=0.2938, cep_km=8) == (
        f"Made camp\n\nPosition (±8 km): {LINK}"
    )
    assert with_position("Made camp", share=False, latitude=52.3867, longitude=0.2938, cep_km=8) == "Made camp"
    assert with_position("Made camp", share=True, latitude=None, longitude=None) == "Made camp"
    assert with_position("Made camp", share=True, latitude=95.0, longitude=0.0) == "Made camp"
    assert position_line(52.3867, 0.2938, None) == f"Position: {LINK}"


def test_a_packet_with_a_position_gives_it_to_every_message_in_it():
    from messaging.core.codec import encode_from_device

    data = encode_from_device([("one", Protocol.EMAIL, "a@b.c"), ("two", Protocol.SMS, "+14155550142")]).hex()
    packet = DevicePacket(
        key="rockblock:1:2:3", device_id=1, packet_id=2, data=data, encoding="hex", latitude=1.5, longitude=-2.5
    )
    assert [(m.latitude, m.longitude) for m in packet.messages()] == [(1.5, -2.5), (1.5, -2.5)]
    assert packet.messages()[0].location_cep_km is None
    plain = dataclasses.replace(packet, latitude=None, longitude=None)
    assert all(m.latitude is None for m in plain.messages())


def from_device(user, protocol, recipient, key) -> int:
    msg = CombinedMessage(
        direction=Direction.FROM_DEVICE,
        protocol=protocol,
        sender="device:1",
        recipient=recipient,
        text="Made camp at the lake",
        idempotency_key=key,
        latitude=52.3867,
        longitude=0.2938,
        location_cep_km=8.0,
    )
    return outbox.record(msg, user_id=user.id, device_id=user.devices.get().id, accepted=True).message_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("share", [True, False], ids=["shared", "not shared"])
def test_the_email_and_the_sms_carry_the_map_link_only_when_the_owner_shares_their_location(make_user, share):
    from messaging.sandbox.fake_twilio import FakeTwilio
    from messaging.sandbox.relay_sink import RelaySink

    user = make_user()
    user.share_location = share
    user.save()
    mail_id = from_device(user, Protocol.EMAIL, "mum@example.org", "mail")
    sms_id = from_device(user, Protocol.SMS, "+14155550142", "sms")
    row = Message.objects.get(pk=mail_id)
    assert (row.latitude, row.longitude, row.location_cep_km) == (52.3867, 0.2938, 8.0), "stored either way"
    sink, twilio = RelaySink(), FakeTwilio()
    sink.start()
    twilio.start()
    try:
        config = Config(
            email_domain="beaver.test",
            email_relay_host="127.0.0.1",
            email_relay_port=sink.port,
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=twilio.auth_token,
            twilio_api_base_url=twilio.base_url,
        )
        assert deliver(MailOutSender(config), mail_id) == "sent"
        assert deliver(SmsSender(config), sms_id) == "sent"
        [mail] = sink.messages
        [sms] = twilio.messages
    finally:
        sink.stop()
        twilio.stop()
    body = email.message_from_bytes(mail["raw"]).get_payload(decode=True).decode()
    assert "Made camp at the lake" in body and sms["body"].startswith("Made camp at the lake")
    assert (LINK in body, LINK in sms["body"]) == (share, share)
    assert email.message_from_bytes(mail["raw"])["Subject"] == "Made camp at the lake", "the device's words only"
    assert ("±8 km" in body, "±8 km" in sms["body"]) == (share, share)
