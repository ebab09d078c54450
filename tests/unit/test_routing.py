"""The routing decisions are pure: each rule is checked on its own, over plain facts."""

from __future__ import annotations

import dataclasses

import pytest

from messaging.routing import SMTP_REPLIES, DeviceFacts, UserFacts, Verdict, decide, outbound_channel, stable_index
from messaging.types import CombinedMessage, Direction, Protocol

USER = UserFacts(
    id=1,
    username="bob",
    is_active=True,
    monthly_quota=None,
    twilio_number="+15550001111",
    messages_this_month=0,
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
        (dataclasses.replace(USER, monthly_quota=5, messages_this_month=5), DEVICE, Verdict.QUOTA_EXCEEDED),
    ],
)
def test_refusals(user, device, verdict):
    assert decide(msg(), user, device) is verdict


def test_quota_not_yet_used_up_accepts():
    assert decide(msg(), dataclasses.replace(USER, monthly_quota=5, messages_this_month=4), DEVICE) is Verdict.ACCEPT


def test_blocked_sender_only_blocks_inbound():
    assert decide(msg(sender="pest@example.org"), USER, DEVICE) is Verdict.BLOCKED_SENDER
    assert decide(msg(protocol=Protocol.SMS, sender="+15559990000"), USER, DEVICE) is Verdict.BLOCKED_SENDER
    out = msg(direction=Direction.FROM_DEVICE, sender="device:42", recipient="pest@example.org")
    assert decide(out, USER, DEVICE) is Verdict.ACCEPT


def test_blocked_sender_match_ignores_case():
    assert decide(msg(sender="Pest@Example.ORG"), USER, DEVICE) is Verdict.BLOCKED_SENDER


def test_from_device_needs_a_deliverable_destination_and_a_number_for_sms():
    out = msg(direction=Direction.FROM_DEVICE, protocol=Protocol.SMS, sender="device:42", recipient="+15550002222")
    assert decide(out, USER, DEVICE) is Verdict.ACCEPT
    assert decide(out, USER, DEVICE, destination_ok=False) is Verdict.BAD_DESTINATION
    assert decide(out, dataclasses.replace(USER, twilio_number=None), DEVICE) is Verdict.BAD_DESTINATION


def test_unsupported_protocol():
    assert decide(msg(protocol=Protocol.TWITTER), USER, DEVICE) is Verdict.UNSUPPORTED_PROTOCOL


def test_every_verdict_has_an_smtp_reply_and_only_accept_is_2xx():
    for verdict in Verdict:
        code, text = SMTP_REPLIES[verdict]
        assert (200 <= code < 300) == (verdict is Verdict.ACCEPT)
        assert text


def test_outbound_channel():
    assert outbound_channel(Direction.TO_DEVICE, Protocol.SMS) == "satellite"
    assert outbound_channel(Direction.FROM_DEVICE, Protocol.EMAIL) == "mailout"
    assert outbound_channel(Direction.FROM_DEVICE, Protocol.SMS) == "sms"
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
    from messaging.satellite import TAKEOVER_AFTER, takes_packet

    owners = [[i for i in range(3) if takes_packet(pid, i, 3, waited=0.0)] for pid in range(100, 130)]
    assert all(len(o) == 1 for o in owners), "exactly one owner while fresh"
    assert {o[0] for o in owners} == {0, 1, 2}
    assert all(takes_packet(101, i, 3, waited=TAKEOVER_AFTER) for i in range(3)), "anyone takes a stale packet"
    assert takes_packet(7, 0, 1, waited=0.0)
