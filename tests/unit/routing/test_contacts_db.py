"""Contacts on the database: the directory's user facts carry them (and contacts-only mode), the user actor resolves
a device's short name before the outbound rules, and contacts-only refuses strangers as blocked senders are."""

from __future__ import annotations

import pytest

from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.routing.decisions import ContactFacts, Verdict
from messaging.routing.directory import Directory
from messaging.routing.user_desk import UserDesk
from messaging.runtime.config import Config
from web.accounts.models import Contact
from web.delivery.models import Message

pytestmark = pytest.mark.django_db
CONFIG = Config(email_domain="beaver.test")


def from_device(device_id, recipient, protocol=Protocol.EMAIL, key="hive:1:0"):
    return CombinedMessage(
        Direction.FROM_DEVICE, protocol, f"device:{device_id}", recipient, "hi", key, device_id=device_id
    )


def to_device(user, sender, key, protocol=Protocol.EMAIL):
    recipient = f"{user.username}@beaver.test" if protocol is Protocol.EMAIL else user.twilio_number
    return CombinedMessage(Direction.TO_DEVICE, protocol, sender, recipient, "hello", key)


@pytest.fixture
def family(make_user):
    user = make_user()
    user.contact_email, user.contact_email_verified = "Me.Home@Example.org", True
    user.save()
    Contact.objects.create(owner=user, name="Mom", address="mom@family.example.org")
    Contact.objects.create(owner=user, name="dad", address="+1 (415) 555-0123")
    return user


def test_directory_facts_carry_the_contacts_and_the_mode(family, make_user):
    other = make_user()
    Contact.objects.create(owner=other, name="mom", address="someone-else@example.org")
    found = Directory("beaver.test").find(from_device(family.devices.get().device_id, "mom"))
    assert found.user.contacts == (
        ContactFacts("dad", Protocol.SMS, "+14155550123"),
        ContactFacts("mom", Protocol.EMAIL, "mom@family.example.org"),
    ), "only the user's own, by name, normalised"
    assert (found.user.contacts_only, found.user.own_email) == (False, "me.home@example.org")
    family.contact_email_verified, family.contacts_only = False, True
    family.save()
    fresh = Directory("beaver.test").find(from_device(family.devices.get().device_id, "mom")).user
    assert (fresh.contacts_only, fresh.own_email) == (True, ""), "an unconfirmed personal email is not allowed in"


def test_the_device_writes_to_a_short_name_and_it_goes_to_the_contact(family):
    users = UserDesk(CONFIG)
    device_id = family.devices.get().device_id
    mail = users.intake(from_device(device_id, "MOM", Protocol.SMS))
    text = users.intake(from_device(device_id, "dad", key="hive:2:0"))
    assert (mail.verdict, text.verdict) == (Verdict.ACCEPT, Verdict.ACCEPT)
    rows = {r.id: r for r in Message.objects.filter(id__in=[mail.message_id, text.message_id])}
    assert (rows[mail.message_id].recipient, rows[mail.message_id].protocol) == ("mom@family.example.org", "email")
    assert (rows[text.message_id].recipient, rows[text.message_id].protocol) == ("+14155550123", "sms")


def test_an_unknown_name_is_stored_rejected_saying_so(family):
    result = UserDesk(CONFIG).intake(from_device(family.devices.get().device_id, "xyz"))
    assert result.verdict is Verdict.BAD_DESTINATION
    row = Message.objects.get(id=result.message_id)
    assert (row.status, row.last_error) == ("rejected", "bad_destination: not sent, no contact or address 'xyz'")


def test_a_contact_added_a_moment_ago_resolves_despite_the_cache(family):
    users = UserDesk(Config(email_domain="beaver.test", user_cache_seconds=60))
    device_id = family.devices.get().device_id
    assert users.intake(from_device(device_id, "mom")).verdict is Verdict.ACCEPT  # the user's facts are cached
    Contact.objects.create(owner=family, name="sis", address="sis@family.example.org")
    result = users.intake(from_device(device_id, "sis", key="hive:2:0"))
    assert result.verdict is Verdict.ACCEPT
    assert Message.objects.get(id=result.message_id).recipient == "sis@family.example.org"


def test_contacts_only_refuses_strangers_as_blocked_senders_and_lets_contacts_in(family):
    family.contacts_only = True
    family.save()
    users = UserDesk(CONFIG)
    assert users.intake(to_device(family, "stranger@example.org", "smtp:1")).verdict is Verdict.BLOCKED_SENDER
    assert users.check_recipient(f"{family.username}@beaver.test", "stranger@example.org") is Verdict.BLOCKED_SENDER
    assert users.intake(to_device(family, "+14155550999", "twilio:1", Protocol.SMS)).verdict is Verdict.BLOCKED_SENDER
    assert users.intake(to_device(family, "mom@family.example.org", "smtp:2")).verdict is Verdict.ACCEPT
    assert users.intake(to_device(family, "+14155550123", "twilio:2", Protocol.SMS)).verdict is Verdict.ACCEPT
    assert users.intake(to_device(family, "me.home@example.org", "smtp:3")).verdict is Verdict.ACCEPT
    family.contacts_only = False
    family.save()
    assert users.intake(to_device(family, "stranger@example.org", "smtp:4")).verdict is Verdict.ACCEPT
