"""Message history (both directions, newest first, states and reasons in plain words, search) and usage."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from web.delivery.models import Message
from web.portal.chart import usage_svg
from web.portal.history import month_usage
from web.portal.words import reason_words, state_words

_keys = itertools.count(1)


def message(
    user,
    *,
    direction="to_device",
    status="sent",
    sender="friend@example.org",
    recipient="me",
    text="hi",
    last_error="",
    protocol="email",
    subject="",
    at=None,
):
    row = Message.objects.create(
        direction=direction,
        subject=subject,
        protocol=protocol,
        sender=sender,
        recipient=recipient,
        text=text,
        user=user,
        status=status,
        last_error=last_error,
        idempotency_key=f"test:{next(_keys)}",
    )
    if at is not None:
        Message.objects.filter(pk=row.pk).update(created_at=at)
    return row


@pytest.mark.django_db
def test_history_shows_both_directions_newest_first_with_states_and_reasons(client, person):
    user = person()
    now = timezone.now()
    message(user, text="first in", at=now - timedelta(hours=3))
    message(
        user,
        direction="from_device",
        recipient="+14155550123",
        protocol="sms",
        text="reply out",
        at=now - timedelta(hours=2),
    )
    message(
        user,
        direction="from_device",
        recipient="x@example.net",
        status="dead",
        text="lost one",
        last_error="permanent: relay said 550 5.1.1 <x@example.net>: user unknown",
        at=now - timedelta(hours=1),
    )
    message(user, status="rejected", sender="pest@example.org", text="blocked one", last_error="blocked_sender")
    client.force_login(user)
    html = client.get(reverse("portal:messages")).content.decode()
    order = [html.index(t) for t in ("blocked one", "lost one", "reply out", "first in")]
    assert order == sorted(order), "newest first"
    assert "From your device to <strong>+14155550123</strong>" in html
    assert "From <strong>friend@example.org</strong> to your device" in html
    assert "could not be sent" in html and "refused by the receiving mail system (code 550)" in html
    assert "You blocked this sender." in html
    assert "delivered to your device&#x27;s satellite network" in html or "delivered to your device's" in html
    assert "PermanentDeliveryError" not in html and "permanent:" not in html


@pytest.mark.django_db
def test_a_subject_is_shown_once(client, person):
    user = person()
    message(user, subject="Trail report", text="Trail report\nHow is the trail?")
    message(user, subject="Supplies", text="Bring socks")  # a reply's subject is not in the text: shown above it
    client.force_login(user)
    html = client.get(reverse("portal:messages")).content.decode()
    assert html.count("Trail report") == 1 and "<strong>Supplies</strong>" in html


@pytest.mark.django_db
def test_search_by_text_or_correspondent(client, person):
    user = person()
    message(user, text="camp at the lake", sender="anna@example.org")
    message(user, text="bring socks", sender="bob@example.org")
    client.force_login(user)
    html = client.get(reverse("portal:messages"), {"q": "LAKE"}).content.decode()
    assert "camp at the lake" in html and "bring socks" not in html
    html = client.get(reverse("portal:messages"), {"q": "bob@"}).content.decode()
    assert "bring socks" in html and "camp at the lake" not in html
    html = client.get(reverse("portal:messages"), {"q": "nothing-like-this"}).content.decode()
    assert "No message matches" in html


@pytest.mark.django_db
def test_nobody_sees_another_persons_messages_or_usage(client, person):
    me, other = person(), person()
    message(other, text="their secret", sender="spy@example.org")
    message(me, text="mine")
    client.force_login(me)
    for q in ("", "secret", "spy"):
        html = client.get(reverse("portal:messages"), {"q": q}).content.decode()
        assert "their secret" not in html and "spy@example.org" not in html
    html = client.get(reverse("portal:usage")).content.decode()
    assert re.search(r'id="usage-in">1<', html), "only my one message counts"


@pytest.mark.django_db
def test_history_pages(client, person):
    user = person()
    for n in range(30):
        message(user, text=f"number {n:02d}")
    client.force_login(user)
    first = client.get(reverse("portal:messages")).content.decode()
    assert "number 29" in first and "number 04" not in first and "Page 1 of 2" in first
    second = client.get(reverse("portal:messages"), {"page": 2}).content.decode()
    assert "number 04" in second and "number 29" not in second
    assert client.get(reverse("portal:messages"), {"page": "x"}).status_code == 200


@pytest.mark.django_db
def test_usage_counts_this_month_in_and_out_apart_against_the_quotas(client, person):
    user = person(monthly_quota=50, monthly_outbound_quota=None)
    now = timezone.now()
    start = now.replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    message(user, at=start)
    message(user, at=start)
    message(user, direction="from_device", at=start)
    message(user, status="rejected", at=start)  # refused: does not count
    message(user, at=start - timedelta(days=3))  # last month
    data = month_usage(user, now)
    assert (data["inbound"], data["outbound"]) == (2, 1)
    assert data["days"][0] == (1, 2, 1) and len(data["days"]) >= 28
    client.force_login(user)
    html = client.get(reverse("portal:usage")).content.decode()
    assert re.search(r'id="usage-in">2<', html) and re.search(r'id="usage-out">1<', html)
    assert "<td>50</td>" in html and "unlimited" in html
    assert "<svg" in html and "day 1: 2 to the device" in html


@pytest.mark.django_db
def test_history_and_usage_need_a_login(client):
    for name in ("portal:messages", "portal:usage"):
        assert client.get(reverse(name)).status_code == 302


def test_reasons_in_plain_words():
    assert reason_words("quota_exceeded") == "Your monthly quota of messages to the device was used up."
    assert reason_words("refused_destination: SMS to +44 909… refused: premium-rate numbers are not allowed") == (
        "SMS to +44 909… refused: premium-rate numbers are not allowed."
    )
    assert reason_words("gave up after 8 attempts: relay unreachable or connection lost: TimeoutError: x") == (
        "Delivery kept failing, so we stopped trying. Our mail relay could not be reached."
    )
    assert reason_words("permanent: Twilio client error: 21211 invalid To") == "The text message service refused it."
    assert "Error" not in reason_words("could not be stored: IntegrityError: boom")
    assert reason_words("something nobody expected: ValueError") == "Delivery failed; support can see the details."
    assert reason_words("") == ""
    assert state_words("to_device", "failed") == "not delivered yet, will try again"


def test_the_chart_is_plain_svg_with_a_title_and_no_outside_reference():
    svg = usage_svg([(1, 3, 0), (2, 0, 5), (3, 0, 0)], month_label="May <2026>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<title>Messages per day in May &lt;2026&gt;" in svg
    assert svg.count("<rect") == 6
    assert "day 2: 5 from the device" in svg
    assert re.findall(r"https?://[^\"]+", svg) == ["http://www.w3.org/2000/svg"]
    assert "<rect" in usage_svg([(d, 0, 0) for d in range(1, 32)]), "an empty month still draws"
