"""The admin as a person uses it: log in, create a user and a device, see them listed, work the message log."""

from __future__ import annotations

import pytest
from django.urls import reverse

from messaging.core.types import Direction, Protocol, Status
from messaging.outbox import store as outbox
from web.accounts.models import BlockedSender, Device, User
from web.delivery.models import Message

pytestmark = pytest.mark.django_db


INLINES = {
    f"{prefix}-{field}": value
    for prefix in ("devices", "contacts", "blocked_senders")
    for field, value in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"))
}


@pytest.fixture
def staff(client):
    User.objects.create_superuser(username="ops", password="a-long-pass-phrase", email="ops@example.org")
    client.login(username="ops", password="a-long-pass-phrase")
    return client


def test_admin_requires_staff_login(client):
    response = client.get(reverse("admin:accounts_user_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_create_user_and_device_then_see_them_listed(staff):
    response = staff.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "hiker",
            "password1": "a-long-pass-phrase-2",
            "password2": "a-long-pass-phrase-2",
            "twilio_number": "+1 (415) 555-0100",
            "monthly_quota": "",
            "contact_email": "hiker@example.org",
            "usable_password": "true",
            **INLINES,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(username="hiker")
    assert user.twilio_number == "+14155550100", "stored as E.164"
    response = staff.post(
        reverse("admin:accounts_device_add"),
        {"network": "swarm", "device_id": "4242", "owner": user.pk, "nickname": "orange one", "is_active": "on"},
    )
    assert response.status_code == 302, response.content[:2000]
    listing = staff.get(reverse("admin:accounts_user_changelist")).content.decode()
    assert "hiker@example.com" in listing, "the mailbox is listed"
    devices = staff.get(reverse("admin:accounts_device_changelist")).content.decode()
    assert "4242" in devices and "orange one" in devices


def test_the_two_quotas_are_set_apart_in_the_admin(staff):
    response = staff.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "quoted",
            "password1": "a-long-pass-phrase-2",
            "password2": "a-long-pass-phrase-2",
            "monthly_quota": "300",
            "monthly_outbound_quota": "",
            "usable_password": "true",
            **INLINES,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    user = User.objects.get(username="quoted")
    assert (user.monthly_quota, user.monthly_outbound_quota) == (300, None)
    page = staff.get(reverse("admin:accounts_user_change", args=[user.pk])).content.decode()
    assert "monthly quota to the device" in page.lower() and "monthly quota from the device" in page.lower()
    assert "own messages never count here" in page


def test_invalid_twilio_number_is_refused(staff):
    response = staff.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "hiker2",
            "password1": "a-long-pass-phrase-2",
            "password2": "a-long-pass-phrase-2",
            "twilio_number": "not a number",
            "usable_password": "true",
            **INLINES,
        },
    )
    assert response.status_code == 200 and "valid phone number" in response.content.decode()
    assert not User.objects.filter(username="hiker2").exists()


def test_second_active_device_is_refused(staff):
    user = User.objects.create(username="two")
    Device.objects.create(device_id=1, owner=user)
    response = staff.post(reverse("admin:accounts_device_add"), {"device_id": "2", "owner": user.pk, "is_active": "on"})
    assert response.status_code == 200
    assert Device.objects.filter(owner=user).count() == 1


def test_blocked_sender_is_normalised():
    user = User.objects.create(username="blocker")
    assert BlockedSender.objects.create(user=user, address=" Pest@Example.ORG ").address == "pest@example.org"
    assert BlockedSender.objects.create(user=user, address="+44 7700 900123").address == "+447700900123"


def _message(user, key, status):
    return Message.objects.create(
        direction=Direction.TO_DEVICE,
        protocol=Protocol.EMAIL.key,
        sender="amy@example.org",
        recipient=f"{user.username}@x",
        user=user,
        idempotency_key=key,
        status=status,
    )


def test_message_log_filters_search_and_retry_now(staff):
    user = User.objects.create(username="logged")
    dead = _message(user, "k-dead", "dead")
    sent = _message(user, "k-sent", "sent")
    url = reverse("admin:delivery_message_changelist")
    page = staff.get(url, {"status__exact": "dead"}).content.decode()
    assert "k-dead" not in page  # keys are not listed, but rows are: check by id link
    assert f"/admin/delivery/message/{dead.pk}/change/" in page
    assert f"/admin/delivery/message/{sent.pk}/change/" not in page
    found = staff.get(url, {"q": "logged"}).content.decode()
    assert f"/admin/delivery/message/{dead.pk}/change/" in found
    response = staff.post(url, {"action": "retry_now", "_selected_action": [dead.pk, sent.pk]})
    assert response.status_code == 302
    dead.refresh_from_db()
    sent.refresh_from_db()
    assert dead.status == "queued" and dead.next_attempt_at is not None
    assert sent.status == "sent", "a sent message is never re-sent by the action"


def test_message_history_is_read_only(staff):
    user = User.objects.create(username="history")
    msg = _message(user, "k-ro", "sent")
    page = staff.get(reverse("admin:delivery_message_change", args=[msg.pk])).content.decode()
    assert 'name="text"' not in page and 'name="sender"' not in page
    assert staff.get(reverse("admin:delivery_message_add")).status_code == 403


def test_the_sender_authentication_verdict_is_shown_read_only(staff):
    user = User.objects.create(username="checked")
    msg = _message(user, "k-auth", "sent")
    msg.authentication = (
        "spf=fail smtp.mailfrom=evil.test; dkim=none; dmarc=fail (p=quarantine) header.from=example.org"
    )
    msg.save(update_fields=["authentication"])
    listing = staff.get(reverse("admin:delivery_message_changelist")).content.decode()
    assert "dmarc=fail (p=quarantine)" in listing
    found = staff.get(reverse("admin:delivery_message_changelist"), {"q": "dmarc=fail"}).content.decode()
    assert f"/admin/delivery/message/{msg.pk}/change/" in found
    page = staff.get(reverse("admin:delivery_message_change", args=[msg.pk])).content.decode()
    assert "spf=fail smtp.mailfrom=evil.test; dkim=none;" in page
    assert 'name="authentication"' not in page  # shown, not editable


@pytest.fixture
def outbox_calls(monkeypatch):
    """The outbox functions the admin calls, recorded on their way through (they still do their work)."""
    calls = []
    for name in ("retry_now", "set_status_by_hand"):
        real = getattr(outbox, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, args))
            return _real(*args, **kwargs)

        monkeypatch.setattr(outbox, name, spy)
    return calls


def test_retry_now_goes_through_the_outbox(staff, outbox_calls):
    user = User.objects.create(username="retried")
    failed = _message(user, "k-failed", Status.FAILED)
    sending = _message(user, "k-sending", Status.SENDING)
    url = reverse("admin:delivery_message_changelist")
    response = staff.post(url, {"action": "retry_now", "_selected_action": [failed.pk, sending.pk]}, follow=True)
    assert [(name, sorted(args[0])) for name, args in outbox_calls] == [("retry_now", sorted([failed.pk, sending.pk]))]
    page = response.content.decode()
    assert "1 message(s) re-queued" in page and "1 message(s) skipped" in page
    assert Message.objects.get(pk=failed.pk).status == Status.QUEUED
    assert Message.objects.get(pk=sending.pk).status == Status.SENDING, "a message being sent is left alone"


def test_a_status_set_on_the_message_page_goes_through_the_outbox(staff, outbox_calls):
    user = User.objects.create(username="by-hand")
    msg = _message(user, "k-hand", Status.FAILED)
    url = reverse("admin:delivery_message_change", args=[msg.pk])
    response = staff.post(url, {"status": Status.DEAD.value, "_save": "Save"})
    assert response.status_code == 302, response.content[:2000]
    assert outbox_calls == [("set_status_by_hand", (msg.pk, Status.DEAD))]
    assert Message.objects.get(pk=msg.pk).status == Status.DEAD
    staff.post(url, {"status": Status.DEAD.value, "_save": "Save"})
    assert len(outbox_calls) == 1, "saving the page unchanged writes nothing"


def test_a_rockblock_device_needs_an_imei_and_the_device_list_filters_by_network(staff):
    user = User.objects.create(username="sailor")
    add = reverse("admin:accounts_device_add")
    form = {"network": "rockblock", "owner": user.pk, "is_active": "on"}
    refused = staff.post(add, {**form, "device_id": "4242"})
    assert refused.status_code == 200 and "15 digits" in refused.content.decode()
    assert staff.post(add, {**form, "device_id": "300434063180550"}).status_code == 302
    Device.objects.create(device_id=4243, owner=User.objects.create(username="hiker2"))
    listing = reverse("admin:accounts_device_changelist")
    rockblock = staff.get(listing + "?network__exact=rockblock").content.decode()
    assert "300434063180550" in rockblock and "4243" not in rockblock
    assert "RockBLOCK (Iridium SBD)" in staff.get(listing).content.decode(), "the network is shown"


def test_a_message_shows_where_its_device_was(staff):
    row = Message.objects.create(
        direction="from_device",
        protocol="email",
        sender="device:1",
        recipient="mum@example.org",
        idempotency_key="rockblock:1:2:3:0",
        latitude=52.3867,
        longitude=0.2938,
        location_cep_km=8,
    )
    page = staff.get(reverse("admin:delivery_message_change", args=[row.pk])).content.decode()
    assert "52.3867, 0.2938 ±8 km" in page and "https://www.openstreetmap.org/?mlat=52.3867&amp;mlon=0.2938" in page
