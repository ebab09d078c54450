"""Privacy: download my data as JSON (mine only), delete my account (messages anonymised, device released)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from web.accounts.models import BlockedSender, Device, DeviceAssignment, RetiredMailbox, User
from web.delivery.models import Message

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db


def owned_device(user, device_id):
    device = Device.objects.create(device_id=device_id, owner=user, is_active=True)
    DeviceAssignment.objects.create(device=device, user=user)
    return device


def msg(user, key, **fields):
    values = dict(
        direction="to_device",
        protocol="email",
        sender="anna@example.org",
        recipient="me@example.com",
        text="meet at the hut",
        subject="plan",
        status="sent",
        user=user,
        idempotency_key=key,
    )
    values.update(fields)
    return Message.objects.create(**values)


def test_download_my_data_is_json_with_my_account_devices_blocks_and_messages(client, person):
    me, other = person("owner1"), person("other1")
    owned_device(me, 8001)
    owned_device(other, 87654321)
    BlockedSender.objects.create(user=me, address="pest@example.org")
    BlockedSender.objects.create(user=other, address="their-foe@example.org")
    msg(me, "k1")
    msg(other, "k2", text="not yours")
    client.force_login(me)
    response = client.get(reverse("portal:export"))
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    assert "attachment" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["account"]["mailbox"] == "owner1@example.com"
    assert [d["device_id"] for d in data["devices"]] == [8001] and data["devices"][0]["active"]
    assert [b["address"] for b in data["blocked_senders"]] == ["pest@example.org"]
    assert [m["text"] for m in data["messages"]] == ["meet at the hut"]
    raw = response.content.decode()
    assert "not yours" not in raw and "their-foe" not in raw and "87654321" not in raw


def test_delete_my_account_anonymises_messages_releases_the_device_and_retires_the_name(client, person):
    me, other = person("leaver"), person("stayer")
    device = owned_device(me, 8101)
    owned_device(other, 8102)
    BlockedSender.objects.create(user=me, address="pest@example.org")
    done = msg(me, "smtp:<id@x>:leaver", last_error="", external_id="<id@x>")
    pending = msg(me, "k-pending", status="queued", direction="from_device", recipient="+14155550123")
    dead = msg(me, "k-dead", status="dead", last_error="permanent: relay said 550 <bob@example.net> unknown")
    theirs = msg(other, "k-theirs")
    client.force_login(me)
    page = client.post(reverse("portal:privacy"), {"password": "wrong", "confirm": "on"})
    assert "That is not your password" in page.content.decode() and User.objects.filter(pk=me.pk).exists()
    page = client.post(reverse("portal:privacy"), {"password": PASSWORD})
    assert "Tick this to confirm" in page.content.decode() and User.objects.filter(pk=me.pk).exists()
    page = client.post(reverse("portal:privacy"), {"password": PASSWORD, "confirm": "on"})
    assert page.status_code == 302
    assert not User.objects.filter(username="leaver").exists()
    assert "_auth_user_id" not in client.session
    device.refresh_from_db()
    assert (device.owner, device.is_active) == (None, False)
    assert not BlockedSender.objects.filter(address="pest@example.org").exists()
    for row in (done, pending, dead):
        row.refresh_from_db()
        assert row.user is None and row.text == "" and row.subject == ""
        assert row.sender == row.recipient == "(deleted)" and row.external_id == ""
        assert "leaver" not in row.idempotency_key
    assert pending.status == "dead" and pending.last_error == "account deleted before delivery"
    assert "bob@example.net" not in dead.last_error and "550" in dead.last_error
    theirs.refresh_from_db()
    assert theirs.user == other and theirs.text == "meet at the hut"
    assert Device.objects.get(device_id=8102).owner == other
    assert RetiredMailbox.is_retired("leaver")
    signup = Client().post(
        reverse("portal:signup"),
        {"username": "leaver", "contact_email": "x@example.org", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert "is taken" in signup.content.decode(), "the name is never given out again"


def test_privacy_pages_need_a_login(client):
    assert client.get(reverse("portal:privacy")).status_code == 302
    assert client.get(reverse("portal:export")).status_code == 302
    assert client.post(reverse("portal:privacy"), {"password": "x", "confirm": "on"}).status_code == 302
