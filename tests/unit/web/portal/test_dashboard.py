"""The operators' dashboard: its queries on the test database with rows made here, and the staff-only page."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from web.accounts.models import Device
from web.delivery.models import Message
from web.portal import dashboard
from web.portal.chart import bar_svg, hbar_svg

pytestmark = pytest.mark.django_db
_keys = itertools.count(1)


def message(*, ago: timedelta, direction="to_device", protocol="email", status="sent", **fields) -> Message:
    """A stored message whose ``created_at`` is ``ago`` before now (auto_now_add is set right after)."""
    row = Message.objects.create(
        direction=direction, protocol=protocol, sender="friend@example.org", recipient="hiker",
        status=status, idempotency_key=f"dash:{next(_keys)}", **fields,
    )  # fmt: skip
    Message.objects.filter(pk=row.pk).update(created_at=timezone.now() - ago)
    row.refresh_from_db()
    return row


def hour_index(data: dict, ago: timedelta, now) -> int:
    moment = (now - ago).replace(minute=0, second=0, microsecond=0)
    return data["hours"].index(moment)


def test_messages_per_hour_by_channel_and_outcome_within_seven_days():
    now = timezone.now()
    message(ago=timedelta(hours=1))
    message(ago=timedelta(hours=1), status="dead")
    message(ago=timedelta(hours=1), status="queued")
    message(ago=timedelta(hours=30), direction="from_device", protocol="email")
    message(ago=timedelta(hours=2), direction="from_device", protocol="sms", status="rejected")
    message(ago=timedelta(hours=3), direction="from_device", protocol="unknown", status="dead")
    message(ago=timedelta(days=8))  # outside the window
    data = dashboard.messages_per_hour(now)
    assert len(data["hours"]) == 7 * 24 and data["hours"][-1] == now.replace(minute=0, second=0, microsecond=0)
    sat = data["channels"]["satellite"]
    n = hour_index(data, timedelta(hours=1), now)
    assert (sat["sent"][n], sat["dead"][n], sat["on its way"][n]) == (1, 1, 1)
    assert sum(sat["sent"]) == 1, "the message of 8 days ago is not counted"
    assert data["channels"]["mailout"]["sent"][hour_index(data, timedelta(hours=30), now)] == 1
    assert data["channels"]["sms"]["refused"][hour_index(data, timedelta(hours=2), now)] == 1
    assert data["channels"]["other"]["dead"][hour_index(data, timedelta(hours=3), now)] == 1


def test_the_backlog_by_state_and_the_oldest_message_due_now():
    now = timezone.now()
    message(ago=timedelta(minutes=5), status="received")
    old = message(ago=timedelta(hours=3), status="failed", next_attempt_at=now - timedelta(minutes=1))
    message(ago=timedelta(days=20), status="queued", next_attempt_at=now + timedelta(hours=1))  # not due yet
    message(ago=timedelta(minutes=1), direction="from_device", protocol="sms", status="sending",
            lease_until=now + timedelta(minutes=1))  # fmt: skip
    message(ago=timedelta(days=30), status="sent")
    data = dashboard.backlog(now)
    assert data["states"]["satellite"] == {"received": 1, "queued": 1, "sending": 0, "failed": 1}
    assert data["states"]["sms"]["sending"] == 1
    assert data["total"] == 4, "unfinished messages of any age count; finished ones do not"
    oldest = data["oldest_due"]
    assert oldest["id"] == old.pk and oldest["channel"] == "satellite" and oldest["status"] == "failed"
    assert timedelta(hours=2, minutes=59) < oldest["age"] < timedelta(hours=3, minutes=5)


def test_dead_letter_reasons_without_addresses_or_numbers_commonest_first():
    for who in ("anna@example.org", "bob@example.net", "carl@example.com"):
        message(ago=timedelta(hours=2), status="dead", last_error=f"permanent: 550 5.1.1 <{who}>: no such user")
    message(ago=timedelta(hours=2), status="dead", last_error="permanent: Twilio 21211 invalid To +14155550123")
    message(ago=timedelta(hours=2), status="dead", last_error="")
    message(ago=timedelta(days=9), status="dead", last_error="too old to count")
    message(ago=timedelta(hours=2), status="failed", last_error="not dead")
    reasons = dashboard.dead_letter_reasons(timezone.now())
    assert reasons[0] == ("permanent: 550 5.1.1 <(address)>: no such user", 3)
    assert ("permanent: Twilio 21211 invalid To (number)", 1) in reasons
    assert ("(no reason recorded)", 1) in reasons
    assert len(reasons) == 3
    assert not re.search(r"@|\d{7,}", repr(reasons))


def test_send_error_rates_per_remote_from_attempts():
    swarm = Device.objects.create(device_id=1234, network="swarm", is_active=False)
    iridium = Device.objects.create(device_id=300434063180550, network="rockblock", is_active=False)
    hour = timedelta(hours=1)
    message(ago=hour, device=swarm, status="sent", attempts=3)  # 2 failed, then sent
    message(ago=hour, device=swarm, status="dead", attempts=2)  # 2 failed
    message(ago=hour, device=swarm, status="sending", attempts=1)  # under way: neither
    message(ago=hour, device=iridium, status="sent", attempts=1)
    message(ago=hour, direction="from_device", protocol="email", status="failed", attempts=1)
    message(ago=hour, direction="from_device", protocol="sms", status="sent", attempts=1)
    message(ago=hour, status="received", attempts=0)  # never tried
    message(ago=timedelta(days=8), device=swarm, status="dead", attempts=9)  # outside the window
    rates = {r["remote"]: r for r in dashboard.send_error_rates(timezone.now())}
    assert set(rates) == {"Swarm", "RockBLOCK (Iridium SBD)", "SMTP relay", "Twilio"}
    swarm_rate = rates["Swarm"]
    assert (swarm_rate["messages"], swarm_rate["attempts"], swarm_rate["failed"]) == (3, 6, 4)
    assert (swarm_rate["sent"], swarm_rate["dead"]) == (1, 1)
    assert swarm_rate["rate"] == pytest.approx(4 / 5)
    assert rates["RockBLOCK (Iridium SBD)"]["rate"] == 0
    assert rates["SMTP relay"]["rate"] == 1 and rates["Twilio"]["rate"] == 0


def test_every_query_answers_on_an_empty_database():
    now = timezone.now()
    hourly = dashboard.messages_per_hour(now)
    assert all(not any(counts) for by in hourly["channels"].values() for counts in by.values())
    assert dashboard.backlog(now) == {
        "states": {c: {"received": 0, "queued": 0, "sending": 0, "failed": 0} for c in dashboard.CHANNELS},
        "total": 0,
        "oldest_due": None,
    }
    assert dashboard.dead_letter_reasons(now) == [] and dashboard.send_error_rates(now) == []


def test_stacked_bars_and_labelled_bars_are_plain_escaped_svg():
    svg = bar_svg([("a<b", [2, 0]), ("c", [1, 1])], [("sent", "#000"), ("dead", "#f00")], label="L&", stacked=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<title>L&amp;</title>" in svg
    assert svg.count("<rect") == 3, "stacked bars draw only the parts that are not zero"
    assert "a&lt;b: 2 sent" in svg and "a<b" not in svg
    rows = hbar_svg([("<script>", 0.5, "50%")], label="rates", peak=1.0)
    assert "<script>" not in rows and "&lt;script&gt;" in rows and "50%" in rows
    assert "none" in hbar_svg([], label="nothing")


# The page


CHARTS = ("hourly-satellite", "hourly-mailout", "hourly-sms", "backlog", "dead-reasons", "error-rates")


def test_the_dashboard_is_for_staff_only(client, person, login_as):
    url = reverse("portal:dashboard")
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    assert "next=/dashboard/" in response["Location"]
    login_as(person())
    response = client.get(url)
    assert response.status_code == 403
    assert b"Dead-letter" not in response.content and b"Operator dashboard" not in response.content


def test_staff_see_every_chart_with_data_and_no_outside_reference(client, person, login_as):
    message(ago=timedelta(hours=1), status="dead", attempts=2, last_error="permanent: 550 <zoe@example.org> unknown")
    message(ago=timedelta(hours=2), status="queued", next_attempt_at=timezone.now() - timedelta(minutes=5))
    message(ago=timedelta(hours=1), direction="from_device", protocol="unknown", status="dead", last_error="x")
    staff = person("operator", is_staff=True)
    response = login_as(staff).get(reverse("portal:dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<title>Operator dashboard · Space Beaver</title>" in page
    for chart in (*CHARTS, "hourly-other"):
        assert f'data-chart="{chart}"' in page, chart
    assert "permanent: 550 &lt;(address)&gt; unknown" in page and "zoe@" not in page
    assert re.search(r'id="oldest-due-age">2 h \d+ min<', page)
    assert re.findall(r"https?://[^\"<]+", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg")
    assert response["Cache-Control"].startswith("max-age=0")


def test_an_empty_database_renders_every_chart(client, person, login_as):
    response = login_as(person("operator", is_staff=True)).get(reverse("portal:dashboard"))
    assert response.status_code == 200
    page = response.content.decode()
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in page, chart
    assert 'data-chart="hourly-other"' not in page, "the channel of undeliverable kinds only when it has messages"
    assert "No message is due to be sent now." in page and "No send attempts." in page


def test_the_admin_index_and_the_staff_menu_link_the_dashboard(client, person, login_as):
    staff = person("operator", is_staff=True, is_superuser=True)
    client = login_as(staff)
    assert 'href="/dashboard/"' in client.get(reverse("admin:index")).content.decode()
    assert 'href="/dashboard/"' in client.get(reverse("portal:home")).content.decode()
    login_as(person())
    assert 'href="/dashboard/"' not in client.get(reverse("portal:home")).content.decode()
