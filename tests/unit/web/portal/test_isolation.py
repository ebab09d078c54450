"""Every logged-in page shows only the person's own data; every such page needs a login and has a title."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from web.accounts.models import BlockedSender, Contact, Device
from web.delivery.models import Message

pytestmark = pytest.mark.django_db

PAGES = [
    "portal:home",
    "portal:device",
    "portal:blocked",
    "portal:contacts",
    "portal:messages",
    "portal:usage",
    "portal:privacy",
    "portal:password_change",
    "portal:change_email",
]


@pytest.fixture
def neighbour(person):
    other = person("neighbour", twilio_number="+14155550166")
    Device.objects.create(device_id=4_444_444_444, owner=other, is_active=True, nickname="their-nick")
    BlockedSender.objects.create(user=other, address="their-block@example.org")
    Contact.objects.create(owner=other, name="theirmom", address="their-contact@example.org")
    Contact.objects.create(owner=other, name="theirdad", address="+14155550177")
    Message.objects.create(
        direction="to_device", protocol="email", sender="their-friend@example.org", recipient="neighbour",
        text="their-text", user=other, idempotency_key="iso-1", status="sent",
    )  # fmt: skip
    return other


@pytest.mark.parametrize("name", PAGES)
def test_no_page_shows_another_persons_data(client, person, neighbour, name):
    client.force_login(person("me"))
    html = client.get(reverse(name)).content.decode()
    for theirs in (
        "neighbour",
        "4444444444",
        "their-nick",
        "their-block",
        "their-friend",
        "their-text",
        "0166",
        "theirmom",
        "theirdad",
        "their-contact",
        "0177",
    ):
        assert theirs not in html, (name, theirs)
    assert re.search(r"<title>\S.* · Space Beaver</title>", html), "a title on every page"


@pytest.mark.parametrize("name", PAGES[1:])  # home is the landing page for visitors
def test_every_own_page_needs_a_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("portal:login"))
