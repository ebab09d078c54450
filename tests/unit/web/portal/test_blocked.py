"""Blocked senders: add (normalised as the admin does) and remove; nobody sees or touches another's list."""

from __future__ import annotations

import pytest
from django.urls import reverse

from web.accounts.models import BlockedSender

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "typed,stored,kind",
    [
        ("Pest@Example.ORG", "pest@example.org", "email"),
        ("+1 (415) 555-0199", "+14155550199", "phone"),
        ("  +44 7700 900123 ", "+447700900123", "phone"),
    ],
)
def test_block_an_email_or_a_phone_normalised(client, person, typed, stored, kind):
    user = person()
    client.force_login(user)
    page = client.post(reverse("portal:blocked"), {"address": typed})
    assert page.status_code == 302
    block = user.blocked_senders.get()
    assert (block.address, block.kind) == (stored, kind)
    assert stored in client.get(reverse("portal:blocked")).content.decode()


@pytest.mark.parametrize("typed", ["not an address", "4155550199", "a@", "@b.org", ""])
def test_what_is_neither_is_refused_with_a_clear_error(client, person, typed):
    user = person()
    client.force_login(user)
    page = client.post(reverse("portal:blocked"), {"address": typed})
    assert page.status_code == 200 and 'class="error"' in page.content.decode()
    assert not user.blocked_senders.exists()


def test_blocking_twice_says_so(client, person):
    user = person()
    client.force_login(user)
    client.post(reverse("portal:blocked"), {"address": "pest@example.org"})
    page = client.post(reverse("portal:blocked"), {"address": "PEST@example.org"})
    assert "already blocked" in page.content.decode()
    assert user.blocked_senders.count() == 1


def test_unblock(client, person):
    user = person()
    client.force_login(user)
    client.post(reverse("portal:blocked"), {"address": "pest@example.org"})
    block = user.blocked_senders.get()
    assert client.get(reverse("portal:unblock", args=[block.pk])).status_code == 405, "POST only"
    assert client.post(reverse("portal:unblock", args=[block.pk])).status_code == 302
    assert not user.blocked_senders.exists()


def test_nobody_sees_or_removes_another_persons_blocks(client, person):
    me, other = person(), person()
    theirs = BlockedSender.objects.create(user=other, address="secret-foe@example.org")
    client.force_login(me)
    assert "secret-foe" not in client.get(reverse("portal:blocked")).content.decode()
    assert client.post(reverse("portal:unblock", args=[theirs.pk])).status_code == 404
    assert BlockedSender.objects.filter(pk=theirs.pk).exists()


def test_blocked_needs_a_login(client):
    assert client.get(reverse("portal:blocked")).status_code == 302
    assert client.post(reverse("portal:unblock", args=[1])).status_code == 302
