"""runbackend's line of what the stack did (operations/activity.py activity_line)."""

from __future__ import annotations

from messaging.operations.activity import activity_line


def test_the_line_says_what_each_kind_did_since_the_last_reading():
    before = {
        "mailserver_0.accepted": 10,
        "mailserver_1.accepted": 5,
        "sender_0.satellite_delivered": 3,
        "sender_0.mailout_delivered": 0,
    }
    after = {
        "mailserver_0.accepted": 70,
        "mailserver_1.accepted": 65,
        "sender_0.satellite_delivered": 118,
        "sender_0.mailout_delivered": 2,
    }
    assert activity_line(before, after, 10) == "Last 10s: 120 emails taken in, 115 sent to devices, 2 emails sent"


def test_the_sender_actors_emails_and_texts_are_counted_apart():
    before = {"sender_0.delivered": 0, "sender_0.mailout_delivered": 0, "sender_0.sms_delivered": 0}
    after = {"sender_0.delivered": 5, "sender_0.mailout_delivered": 2, "sender_0.sms_delivered": 3}
    assert activity_line(before, after, 10) == "Last 10s: 2 emails sent, 3 texts sent"


def test_nothing_happened_is_no_line():
    reading = {"mailserver_0.accepted": 4, "sender_1.sms_delivered": 2, "mailserver_0.in_flight": 1}
    assert activity_line(reading, dict(reading), 10) is None


def test_a_restarted_member_counts_from_zero_and_a_new_one_counts_nothing_yet():
    before = {"sender_0.sms_delivered": 50}
    after = {"sender_0.sms_delivered": 3, "sender_1.sms_delivered": 7}
    assert activity_line(before, after, 10) == "Last 10s: 3 texts sent"


def test_the_sender_actors_polls_are_device_packets_fetched():
    assert activity_line({"sender_1.polled": 0}, {"sender_1.polled": 1000}, 10) == (
        "Last 10s: 1000 device packets fetched"
    )
