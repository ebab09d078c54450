"""The one email address rule (messaging/core/addresses.py `email_address`), and every place that decides whether
an address can be sent to or from deciding by it: the relay's From and To, a device's recipient, a user's contact
address."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from messaging.core.addresses import InvalidAddress, email_address, header_address
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.delivery.email_relay import InvalidRecipient, build_outbound
from messaging.routing.user_desk import UserDesk
from web.accounts.models import User

GOOD = {
    "mum@example.org": "mum@example.org",
    "Mum.Smith+trip@Example.ORG": "Mum.Smith+trip@example.org",  # the domain lower-cased, the local part kept
    "mum@bücher.example": "mum@xn--bcher-kva.example",
    "alice@beaver.test": "alice@beaver.test",  # .test: the tests' and the sandbox's domains
    "alice@example.org.": "alice@example.org",  # a fully qualified domain name
}
# Before one rule: the relay refused localhost and IP literals, which a device's recipient passed; both passed
# special-use names such as .local (never deliverable); a contact address was checked by Django's EmailField only.
BAD = ["a@localhost", "a@host.local", "a@[127.0.0.1]", "ü@example.org", "two words@example.org", "no-at-sign"]


@pytest.mark.parametrize(("addr", "ascii_form"), GOOD.items())
def test_an_address_is_checked_to_its_ascii_form(addr, ascii_form):
    assert email_address(addr) == ascii_form


@pytest.mark.parametrize("addr", [*BAD, "", "Mum <mum@example.org>", '"a b"@example.org', "a@example..org"])
def test_a_bad_address_is_refused_saying_why(addr):
    with pytest.raises(InvalidAddress) as err:
        email_address(addr)
    assert str(err.value)
    assert isinstance(err.value, ValueError)


def test_an_address_is_checked_once_and_a_refusal_every_time(monkeypatch):
    """An outbound mail checks its From and To when it is built and again when it is sent, for every message: a
    checked address is remembered, a refused one is checked again (and refused again) each time."""
    import messaging.core.addresses as addresses

    calls = []
    real = addresses.validate_email

    def counting(addr, **kw):
        calls.append(addr)
        return real(addr, **kw)

    monkeypatch.setattr(addresses, "validate_email", counting)
    addresses.email_address.cache_clear()
    addresses.header_address.cache_clear()
    for _ in range(3):
        assert header_address("Mum <mum@remembered.example>") == ("Mum", "mum@remembered.example")
        assert email_address("mum@remembered.example") == "mum@remembered.example"
        with pytest.raises(InvalidAddress):
            email_address("a@localhost")
    assert calls.count("mum@remembered.example") == 1
    assert calls.count("a@localhost") == 3


def test_a_header_value_holds_exactly_one_address():
    assert header_address("Mum <mum@bücher.example>") == ("Mum", "mum@xn--bcher-kva.example")
    for value in ["a@example.org, b@example.org", "mum@example.org\r\nBcc: x@example.org", ""]:
        with pytest.raises(InvalidAddress):
            header_address(value)


def device_email(to: str) -> CombinedMessage:
    return CombinedMessage(
        direction=Direction.FROM_DEVICE,
        protocol=Protocol.EMAIL,
        sender="device:1234",
        recipient=to,
        text="hi",
        idempotency_key="hive:1:0",
        device_id=1234,
    )


def decisions(addr: str) -> dict[str, bool]:
    """Whether each place accepts ``addr``."""
    try:
        build_outbound(from_addr="alice@beaver.test", to_addr=addr, text="x", domain="beaver.test")
        relay = True
    except InvalidRecipient:
        relay = False
    try:
        User(username="alice", contact_email=addr).clean()
        contact = True
    except ValidationError:
        contact = False
    return {
        "relay": relay,
        "device recipient": UserDesk._normalise_destination(device_email(addr))[1],
        "contact": contact,
    }


@pytest.mark.parametrize("addr", [*GOOD, *BAD])
def test_the_relay_a_device_recipient_and_a_contact_address_decide_alike(addr):
    ok = addr in GOOD
    assert decisions(addr) == {"relay": ok, "device recipient": ok, "contact": ok}
