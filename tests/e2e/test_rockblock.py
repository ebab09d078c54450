"""RockBLOCK end to end on a real local Ray: mail and texts reach a RockBLOCK through the (fake) MT API; what
the modem sends comes in through POST /rockblock, signed as Ground Control signs it, and goes out as email or
SMS, with a map link where its owner shares their location. Only RockBLOCK itself is the fake."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from email.message import EmailMessage
from itertools import count

import pytest
import requests

from messaging.core.codec import encode_from_device
from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Protocol
from messaging.sms.twilio import sign

from .conftest import wait_until

pytestmark = pytest.mark.e2e
LINK = "https://www.openstreetmap.org/?mlat=52.3867&mlon=0.2938#map=12/52.3867/0.2938"
_imeis = count(1)


@pytest.fixture
def sailor(new_user):
    """A user whose device is a RockBLOCK (a fresh IMEI each time)."""
    from web.accounts.models import Device

    def make(*, share_location: bool = False):
        user = new_user(device=False)
        user.share_location = share_location
        user.save()
        imei = int(f"3004{int(time.time()) % 10**6:06d}{next(_imeis):05d}")
        Device.objects.create(network="rockblock", device_id=imei, owner=user)
        return user, imei

    return make


def rows(user):
    from web.delivery.models import Message

    return list(Message.objects.filter(user=user).order_by("id"))


def received(e2e, imei: int) -> list:
    """The messages the fake RockBLOCK queued for ``imei`` (MT), decoded."""
    out = []
    for mt in e2e.box.rockblock.to_device(imei):
        packet = pb.MessageDataPB()
        packet.ParseFromString(bytes.fromhex(mt["data"]))
        out.extend(packet.message)
    return out


def send_mail(e2e, to: str, subject: str, body: str) -> None:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "Alice <alice@example.org>", to, subject
    m.set_content(body)
    with smtplib.SMTP("127.0.0.1", e2e.config.smtp_listen_port, timeout=30) as s:
        s.send_message(m)


def test_email_reaches_a_rockblock_through_the_mt_api(e2e, sailor):
    user, imei = sailor()
    send_mail(e2e, f"{user.username}@beaver.test", "Weather", "A front comes in Thursday.")
    (message,) = wait_until(lambda: received(e2e, imei), what="MT message at the fake RockBLOCK")
    assert message.to == "alice@example.org" and message.protocol == pb.EMAIL
    assert "Weather" in message.text and "A front comes in Thursday." in message.text
    (row,) = wait_until(lambda: [r for r in rows(user) if r.status == "sent"], what="message marked sent")
    assert row.remote_id == str(e2e.box.rockblock.to_device(imei)[0]["mtId"])


def test_a_text_reaches_a_rockblock(e2e, sailor):
    user, imei = sailor()
    params = {
        "MessageSid": "SM" + "b" * 30 + f"{imei % 100:02d}",
        "AccountSid": e2e.config.twilio_account_sid,
        "From": "+15551230000",
        "To": user.twilio_number,
        "Body": "Are you safe?",
        "NumMedia": "0",
    }
    public = e2e.config.twilio_webhook_public_url
    signature = sign(auth_token=e2e.config.twilio_auth_token, public_url=public, params=params)
    r = requests.post(f"{e2e.base_url}/sms", data=params, headers={"X-Twilio-Signature": signature}, timeout=30)
    assert r.status_code == 200
    (message,) = wait_until(lambda: received(e2e, imei), what="the text at the fake RockBLOCK")
    assert (message.text, message.to, message.protocol) == ("Are you safe?", "+15551230000", pb.SMS)


@pytest.mark.parametrize("share", [True, False], ids=["sharing", "not sharing"])
def test_a_rockblock_mails_and_texts_with_its_position_only_when_its_owner_shares_it(e2e, sailor, share):
    user, imei = sailor(share_location=share)
    mum, phone = f"mum-{imei}@example.org", f"+141555501{imei % 100:02d}"
    data = encode_from_device([("Anchored off the point", Protocol.EMAIL, mum), ("Home Friday", Protocol.SMS, phone)])
    e2e.box.rockblock.device_send(imei, data)
    (mail,) = wait_until(lambda: [m for m in e2e.box.relay.messages if mum in m["rcpt_tos"]], what="the email")
    e2e.box.twilio.wait_for(lambda ms: any(m["to"] == phone for m in ms), timeout=30)
    (sms,) = [m for m in e2e.box.twilio.messages if m["to"] == phone]
    assert mail["headers"]["From"] == f"{user.username}@beaver.test" and sms["from"] == user.twilio_number
    body = email.message_from_bytes(mail["raw"], policy=email.policy.default).get_body(("plain",)).get_content()
    assert body.startswith("Anchored off the point") and sms["body"].startswith("Home Friday")
    assert (LINK in body, LINK in sms["body"]) == (share, share)
    assert ("±8 km" in body, "±8 km" in sms["body"]) == (share, share)
    for row in rows(user):
        assert (row.latitude, row.longitude, row.location_cep_km) == (52.3867, 0.2938, 8.0), "kept either way"


def test_a_redelivered_post_is_stored_once_and_a_forged_one_refused(e2e, sailor):
    from web.delivery.models import Message

    user, imei = sailor()
    fake = e2e.box.rockblock
    fields = fake.mo_fields(imei, encode_from_device([("Once only", Protocol.EMAIL, "pat@example.org")]), momsn=41)
    for _ in range(3):  # Ground Control posts again when it missed our answer
        assert requests.post(f"{e2e.base_url}/rockblock", data=fields, timeout=30).status_code == 200
    assert len(rows(user)) == 1 and rows(user)[0].text == "Once only", "stored before the first 200, once"
    forged = {**fields, "data": encode_from_device([("Pay me", Protocol.EMAIL, "pat@example.org")]).hex()}
    r = requests.post(f"{e2e.base_url}/rockblock", data={**forged, "momsn": "42"}, timeout=30)
    assert r.status_code == 403 and len(rows(user)) == 1
    bad = fake.mo_fields(imei, b"\xff\xff\x01\x02", momsn=43)
    assert requests.post(f"{e2e.base_url}/rockblock", json=bad, timeout=30).status_code == 200
    assert requests.post(f"{e2e.base_url}/rockblock", json=bad, timeout=30).status_code == 200
    dead = Message.objects.filter(device__device_id=imei, status="dead")
    assert dead.count() == 1 and "undecodable" in dead.get().last_error


@pytest.mark.parametrize("status", [99, 503, 0], ids=["FAILED,99", "HTTP 503", "timeout"])
def test_rockblock_system_errors_are_retried_until_delivered(e2e, sailor, status):
    user, imei = sailor()
    fake = e2e.box.rockblock
    fake.set_faults(error_rate=1.0, status=status, delay=4 * e2e.config.rockblock_timeout)
    try:
        send_mail(e2e, f"{user.username}@beaver.test", "Retry", "Through in the end.")
        wait_until(lambda: [r for r in rows(user) if r.attempts >= 2 and r.status != "dead"], what="retries")
    finally:
        fake.clear_faults()
    (row,) = wait_until(lambda: [r for r in rows(user) if r.status == "sent"], what="delivered after the faults")
    assert row.error_history and len(received(e2e, imei)) == 1
    expected = {99: "RockBLOCK system error", 503: "HTTP 503", 0: "Timeout"}[status]
    assert expected in row.error_history[0]["error"]


def test_no_credit_is_a_dead_letter_with_a_readable_reason(e2e, sailor):
    user, imei = sailor()
    fake = e2e.box.rockblock
    with fake._cond:
        fake.credits = 0
    try:
        send_mail(e2e, f"{user.username}@beaver.test", "Credit", "Nobody pays for this.")
        (row,) = wait_until(lambda: [r for r in rows(user) if r.status == "dead"], what="a dead letter")
    finally:
        with fake._cond:
            fake.credits = None
    assert "no credit left" in row.last_error and "FAILED,13" in row.last_error
    assert fake.to_device(imei) == [], "nothing was charged"
