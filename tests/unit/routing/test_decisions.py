"""The routing decisions are pure: each rule is checked on its own, over plain facts."""

from __future__ import annotations

import dataclasses

import pytest

from messaging.core.types import Channel, CombinedMessage, Direction, Protocol
from messaging.routing.decisions import (
    NOT_STORED,
    SMTP_REPLIES,
    DeviceFacts,
    Policy,
    UserFacts,
    Verdict,
    decide,
    outbound_channel,
    refusal_reason,
)
from messaging.runtime.pool import stable_index

USER = UserFacts(
    id=1,
    username="bob",
    is_active=True,
    monthly_quota=None,
    twilio_number="+15550001111",
    inbound_this_month=0,
    blocked=frozenset({"pest@example.org", "+15559990000"}),
)
DEVICE = DeviceFacts(id=1, device_id=42, is_active=True)


def msg(direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, sender="amy@example.org", recipient="bob@x.test"):
    return CombinedMessage(
        direction=direction,
        protocol=protocol,
        sender=sender,
        recipient=recipient,
        text="hi",
        idempotency_key="k",
        device_id=42,
    )


def test_accepts_ordinary_mail():
    assert decide(msg(), USER, DEVICE) is Verdict.ACCEPT


@pytest.mark.parametrize(
    ("user", "device", "verdict"),
    [
        (None, DEVICE, Verdict.UNKNOWN_RECIPIENT),
        (dataclasses.replace(USER, is_active=False), DEVICE, Verdict.INACTIVE_USER),
        (USER, None, Verdict.NO_DEVICE),
        (USER, dataclasses.replace(DEVICE, is_active=False), Verdict.INACTIVE_DEVICE),
        (dataclasses.replace(USER, monthly_quota=5, inbound_this_month=5), DEVICE, Verdict.QUOTA_EXCEEDED),
    ],
)
def test_refusals(user, device, verdict):
    assert decide(msg(), user, device) is verdict


def test_quota_not_yet_used_up_accepts():
    assert decide(msg(), dataclasses.replace(USER, monthly_quota=5, inbound_this_month=4), DEVICE) is Verdict.ACCEPT


def test_blocked_sender_only_blocks_inbound():
    assert decide(msg(sender="pest@example.org"), USER, DEVICE) is Verdict.BLOCKED_SENDER
    assert decide(msg(protocol=Protocol.SMS, sender="+15559990000"), USER, DEVICE) is Verdict.BLOCKED_SENDER
    out = msg(direction=Direction.FROM_DEVICE, sender="device:42", recipient="pest@example.org")
    assert decide(out, USER, DEVICE) is Verdict.ACCEPT


def test_blocked_sender_match_ignores_case():
    assert decide(msg(sender="Pest@Example.ORG"), USER, DEVICE) is Verdict.BLOCKED_SENDER


def test_from_device_needs_a_deliverable_destination_and_a_number_for_sms():
    out = msg(direction=Direction.FROM_DEVICE, protocol=Protocol.SMS, sender="device:42", recipient="+14155550142")
    assert decide(out, USER, DEVICE) is Verdict.ACCEPT
    assert decide(out, USER, DEVICE, destination_ok=False) is Verdict.BAD_DESTINATION
    assert decide(out, dataclasses.replace(USER, twilio_number=None), DEVICE) is Verdict.BAD_DESTINATION


def device_sms(recipient):
    return msg(direction=Direction.FROM_DEVICE, protocol=Protocol.SMS, sender="device:42", recipient=recipient)


US_CA = Policy(sms_allowed_countries=frozenset({"US", "CA"}))


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("+19005550123", "SMS to +1 900… refused: premium-rate numbers are not allowed"),
        ("+449090901234", "SMS to +44 909… refused: premium-rate numbers are not allowed"),
        ("+448431234567", "premium-rate numbers are not allowed"),  # UK 084x: premium-rate in the metadata
        ("+445512345678", "UAN (universal access) numbers are not allowed"),
        ("+18005550199", "toll-free numbers are not allowed"),
        ("+15550100998", "not a number in any allocated range (unknown type)"),
        ("+4915112345678", "DE is not an allowed country (SMS_ALLOWED_COUNTRIES: CA, US)"),
        ("+18762345678", "JM is not an allowed country"),  # +1, but Jamaica: a classic toll-fraud target
    ],
)
def test_toll_fraud_destinations_are_refused_with_a_reason_the_owner_can_read(number, why):
    out = device_sms(number)
    assert decide(out, USER, DEVICE, policy=US_CA) is Verdict.REFUSED_DESTINATION
    reason = refusal_reason(Verdict.REFUSED_DESTINATION, out, USER, policy=US_CA)
    assert reason.startswith("refused_destination: SMS ") and why in reason
    assert number[4:] not in reason, "the reason goes into log lines: no full number"


@pytest.mark.parametrize("number", ["+14155550142", "+16135550123", "+12125550123"])
def test_texts_to_phones_in_allowed_countries_pass(number):
    assert decide(device_sms(number), USER, DEVICE, policy=US_CA) is Verdict.ACCEPT


def test_allowed_countries_are_the_operators_choice():
    uk_mobile = device_sms("+447400123456")
    assert decide(uk_mobile, USER, DEVICE, policy=US_CA) is Verdict.REFUSED_DESTINATION
    assert decide(uk_mobile, USER, DEVICE, policy=Policy(frozenset({"US", "GB"}))) is Verdict.ACCEPT
    premium = device_sms("+449090901234")
    assert decide(premium, USER, DEVICE, policy=Policy(frozenset({"GB"}))) is Verdict.REFUSED_DESTINATION


def test_only_sms_destinations_are_judged_by_number():
    mail = msg(direction=Direction.FROM_DEVICE, sender="device:42", recipient="x@example.org")
    assert decide(mail, USER, DEVICE, policy=Policy(frozenset())) is Verdict.ACCEPT


def test_a_runaway_device_is_capped_per_hour():
    out = device_sms("+14155550142")
    capped = Policy(device_outbound_per_hour=3)
    assert decide(out, USER, DEVICE, policy=capped, last_hour=2) is Verdict.ACCEPT
    assert decide(out, USER, DEVICE, policy=capped, last_hour=3) is Verdict.DEVICE_RATE_LIMITED
    assert decide(out, USER, DEVICE, policy=Policy(device_outbound_per_hour=0), last_hour=10**6) is Verdict.ACCEPT
    reason = refusal_reason(Verdict.DEVICE_RATE_LIMITED, out, USER, policy=capped, last_hour=3)
    assert reason.startswith("device_rate_limited: not sent") and "DEVICE_OUTBOUND_PER_HOUR" in reason


def test_inbound_volume_never_refuses_the_devices_own_message():
    full = dataclasses.replace(USER, monthly_quota=5, inbound_this_month=1000)
    assert decide(msg(), full, DEVICE) is Verdict.QUOTA_EXCEEDED
    sos = device_sms("+14155550142")
    assert decide(sos, full, DEVICE) is Verdict.ACCEPT, "the inbound quota is for inbound messages only"
    assert decide(sos, full, DEVICE, policy=Policy(inbound_per_sender_per_hour=1), last_hour=0) is Verdict.ACCEPT


def test_the_outbound_quota_counts_outbound_only():
    user = dataclasses.replace(USER, monthly_outbound_quota=2, outbound_this_month=2)
    sos = device_sms("+14155550142")
    assert decide(sos, user, DEVICE) is Verdict.OUTBOUND_QUOTA_EXCEEDED
    assert "quota of 2 messages from the device" in refusal_reason(Verdict.OUTBOUND_QUOTA_EXCEEDED, sos, user)
    assert decide(msg(), user, DEVICE) is Verdict.ACCEPT, "and never refuses mail to the device"


def test_a_sender_over_its_hourly_limit_is_told_to_come_back_later():
    limited = Policy(inbound_per_sender_per_hour=20)
    assert decide(msg(), USER, DEVICE, policy=limited, last_hour=19) is Verdict.ACCEPT
    assert decide(msg(), USER, DEVICE, policy=limited, last_hour=20) is Verdict.RATE_LIMITED
    assert Verdict.RATE_LIMITED in NOT_STORED and SMTP_REPLIES[Verdict.RATE_LIMITED][0] // 100 == 4
    assert decide(msg(sender="pest@example.org"), USER, DEVICE, policy=limited, last_hour=99) is (
        Verdict.BLOCKED_SENDER
    ), "a blocked sender hears the permanent refusal"
    full = dataclasses.replace(USER, monthly_quota=5, inbound_this_month=5)
    assert decide(msg(), full, DEVICE, policy=limited, last_hour=99) is Verdict.QUOTA_EXCEEDED, (
        "a full mailbox is a permanent answer, not 'try later'"
    )


def test_unsupported_protocol():
    assert decide(msg(protocol=Protocol.TWITTER), USER, DEVICE) is Verdict.UNSUPPORTED_PROTOCOL


def test_every_verdict_has_an_smtp_reply_and_only_accept_is_2xx():
    for verdict in Verdict:
        code, text = SMTP_REPLIES[verdict]
        assert (200 <= code < 300) == (verdict is Verdict.ACCEPT)
        assert (400 <= code < 500) == (verdict in NOT_STORED), "only what is not stored is temporary"
        assert text


def test_outbound_channel():
    assert outbound_channel(Direction.TO_DEVICE, Protocol.SMS) is Channel.SATELLITE
    assert outbound_channel(Direction.FROM_DEVICE, Protocol.EMAIL) is Channel.MAILOUT
    assert outbound_channel(Direction.FROM_DEVICE, Protocol.SMS) is Channel.SMS
    with pytest.raises(ValueError):
        outbound_channel(Direction.FROM_DEVICE, Protocol.TWITTER)


def test_stable_index_is_sticky_and_spreads():
    keys = [f"user{i}@x.test" for i in range(200)]
    first = [stable_index(k, 4) for k in keys]
    assert first == [stable_index(k, 4) for k in keys]
    assert set(first) == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        stable_index("k", 0)


def test_routing_key_keeps_a_device_stream_together():
    a = msg(direction=Direction.FROM_DEVICE, recipient="x@y.z")
    b = msg(direction=Direction.FROM_DEVICE, recipient="other@y.z")
    assert a.routing_key() == b.routing_key() == "device:42"
    assert msg(recipient="Bob@X.test").routing_key() == "bob@x.test"


def test_each_hive_packet_has_one_poller_until_it_waits_too_long():
    from messaging.intake.satellite_poll import TAKEOVER_AFTER, takes_packet

    owners = [[i for i in range(3) if takes_packet(pid, i, 3, waited=0.0)] for pid in range(100, 130)]
    assert all(len(o) == 1 for o in owners), "exactly one owner while fresh"
    assert {o[0] for o in owners} == {0, 1, 2}
    assert all(takes_packet(101, i, 3, waited=TAKEOVER_AFTER) for i in range(3)), "anyone takes a stale packet"
    assert takes_packet(7, 0, 1, waited=0.0)
