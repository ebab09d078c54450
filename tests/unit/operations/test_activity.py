"""runbackend's line of what the stack did (operations/activity.py activity_line)."""

from __future__ import annotations

from messaging.operations.activity import activity_line


def test_the_line_says_what_each_kind_did_since_the_last_reading():
    before = {
        "courier_0.accepted": 10,
        "courier_1.accepted": 5,
        "courier_0.satellite_delivered": 3,
        "courier_0.mailout_delivered": 0,
    }
    after = {
        "courier_0.accepted": 70,
        "courier_1.accepted": 65,
        "courier_0.satellite_delivered": 118,
        "courier_0.mailout_delivered": 2,
    }
    assert activity_line(before, after, 10) == "Last 10s: 120 emails taken in, 115 sent to devices, 2 emails sent"


def test_the_couriers_emails_and_texts_are_counted_apart():
    before = {"courier_0.delivered": 0, "courier_0.mailout_delivered": 0, "courier_0.sms_delivered": 0}
    after = {"courier_0.delivered": 5, "courier_0.mailout_delivered": 2, "courier_0.sms_delivered": 3}
    assert activity_line(before, after, 10) == "Last 10s: 2 emails sent, 3 texts sent"


def test_nothing_happened_is_no_line():
    reading = {"courier_0.accepted": 4, "courier_1.sms_delivered": 2, "courier_0.in_flight": 1}
    assert activity_line(reading, dict(reading), 10) is None


def test_a_restarted_member_counts_from_zero_and_a_new_one_counts_nothing_yet():
    before = {"courier_0.sms_delivered": 50}
    after = {"courier_0.sms_delivered": 3, "courier_1.sms_delivered": 7}
    assert activity_line(before, after, 10) == "Last 10s: 3 texts sent"


def test_the_couriers_polls_are_device_packets_fetched():
    assert activity_line({"courier_1.polled": 0}, {"courier_1.polled": 1000}, 10) == (
        "Last 10s: 1000 device packets fetched"
    )
