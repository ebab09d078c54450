"""Contacts in routing, pure: a device's short name resolves to the contact's address and channel; contacts-only mode
lets only contacts and the user's own confirmed email reach the device."""

from __future__ import annotations

import dataclasses

import pytest

from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.routing.decisions import (
    SMTP_REPLIES,
    ContactFacts,
    DeviceFacts,
    UserFacts,
    Verdict,
    contacts_only_refuses,
    decide,
    device_destination,
    refusal_reason,
)

MOM = ContactFacts(name="mom", protocol=Protocol.EMAIL, address="Mom@Family.example.org")
DAD = ContactFacts(name="dad_cell", protocol=Protocol.SMS, address="+14155550123")
USER = UserFacts(
    id=1,
    username="bob",
    is_active=True,
    monthly_quota=None,
    twilio_number="+15550001111",
    inbound_this_month=0,
    blocked=frozenset(),
    contacts=(MOM, DAD),
    own_email="bob.home@example.org",
)
ONLY = dataclasses.replace(USER, contacts_only=True)
DEVICE = DeviceFacts(id=1, device_id=42, is_active=True)


def from_device(recipient, protocol=Protocol.EMAIL):
    return CombinedMessage(Direction.FROM_DEVICE, protocol, "device:42", recipient, "hi", "hive:1:0", device_id=42)


def to_device(sender, protocol=Protocol.EMAIL, *, match_sender="", authentication=""):
    return CombinedMessage(
        Direction.TO_DEVICE,
        protocol,
        sender,
        "bob@beaver.test",
        "hi",
        "k",
        match_sender=match_sender,
        authentication=authentication,
    )


@pytest.mark.parametrize("written", ["mom", "MOM", " Mom "])
def test_a_short_name_resolves_to_the_contacts_address_whatever_its_case(written):
    resolved, ok = device_destination(from_device(written), USER.contacts)
    assert ok and (resolved.recipient, resolved.protocol) == ("Mom@Family.example.org", Protocol.EMAIL)
    assert decide(resolved, USER, DEVICE) is Verdict.ACCEPT


@pytest.mark.parametrize("asked", [Protocol.EMAIL, Protocol.SMS])
def test_the_contacts_kind_decides_the_channel_not_the_devices_protocol(asked):
    resolved, ok = device_destination(from_device("dad_cell", asked), USER.contacts)
    assert ok and (resolved.recipient, resolved.protocol) == ("+14155550123", Protocol.SMS)
    resolved, ok = device_destination(from_device("mom", Protocol.SMS), USER.contacts)
    assert ok and resolved.protocol is Protocol.EMAIL


def test_a_resolved_number_still_meets_the_sms_rules():
    premium = ContactFacts(name="quiz", protocol=Protocol.SMS, address="+19005550123")
    resolved, ok = device_destination(from_device("quiz"), (premium,))
    assert ok and decide(resolved, USER, DEVICE) is Verdict.REFUSED_DESTINATION
    no_number = dataclasses.replace(USER, twilio_number=None)
    resolved, ok = device_destination(from_device("dad_cell"), USER.contacts)
    assert decide(resolved, no_number, DEVICE) is Verdict.BAD_DESTINATION
    assert "no number to text from" in refusal_reason(Verdict.BAD_DESTINATION, resolved, no_number)


def test_an_unknown_name_is_a_bad_destination_with_a_reason_the_owner_can_read():
    msg, ok = device_destination(from_device("xyz"), USER.contacts)
    assert not ok and msg.recipient == "xyz"
    verdict = decide(msg, USER, DEVICE, destination_ok=ok)
    assert verdict is Verdict.BAD_DESTINATION
    assert refusal_reason(verdict, msg, USER) == "bad_destination: not sent, no contact or address 'xyz'"


def test_addresses_pass_as_before_and_an_unusable_one_is_masked_in_the_reason():
    msg, ok = device_destination(from_device("+1 415 555 0199", Protocol.SMS), USER.contacts)
    assert ok and msg.recipient == "+14155550199"
    plain = from_device("amy@example.org")
    assert device_destination(plain, USER.contacts) == (plain, True)
    bad, ok = device_destination(from_device("amy.smith@exa mple"), USER.contacts)
    assert not ok and "amy.smith" not in refusal_reason(Verdict.BAD_DESTINATION, bad, USER)


def test_without_contacts_only_anyone_reaches_the_device():
    assert not contacts_only_refuses(to_device("stranger@example.org"), USER)
    assert decide(to_device("stranger@example.org"), USER, DEVICE) is Verdict.ACCEPT


@pytest.mark.parametrize(
    "msg",
    [
        to_device("mom@family.example.org"),  # case-insensitive
        to_device("+14155550123", Protocol.SMS),
        to_device("bob.home@example.org"),  # the user's own confirmed email
        to_device("mom@family.example.org", match_sender="mom@family.example.org", authentication="dmarc=pass"),
    ],
)
def test_contacts_only_lets_contacts_and_the_own_email_through(msg):
    assert decide(msg, ONLY, DEVICE) is Verdict.ACCEPT


@pytest.mark.parametrize(
    "msg",
    [
        to_device("stranger@example.org"),
        to_device("+14155550999", Protocol.SMS),
        # a forged From: the address authentication vouches for is the stranger's envelope sender
        to_device("mom@family.example.org", match_sender="stranger@example.org", authentication="dmarc=fail"),
        # a null envelope sender without DMARC vouches for nobody
        to_device("mom@family.example.org", match_sender="", authentication="dmarc=none"),
    ],
)
def test_contacts_only_refuses_everyone_else_as_a_blocked_sender(msg):
    verdict = decide(msg, ONLY, DEVICE)
    assert verdict is Verdict.BLOCKED_SENDER
    assert SMTP_REPLIES[verdict] == (550, "5.7.1 Sender refused by recipient")


def test_an_unconfirmed_own_email_and_the_devices_own_messages():
    unconfirmed = dataclasses.replace(ONLY, own_email="")
    assert decide(to_device("bob.home@example.org"), unconfirmed, DEVICE) is Verdict.BLOCKED_SENDER
    assert decide(from_device("amy@example.org"), ONLY, DEVICE) is Verdict.ACCEPT, "the device may write anyone"
