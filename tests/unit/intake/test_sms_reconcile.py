"""Reconciliation without Ray: the decision (pure), and a sweep with the real twilio client against the
local FakeTwilio over loopback, storing through a real UserDesk into the test database."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from messaging.core.redact import mask_phone
from messaging.delivery.senders import runs_reconcile
from messaging.intake.sms_reconcile import GIVE_UP_AFTER, Reconciler, missing_inbound, pool_store
from messaging.routing.user_desk import UserDesk
from messaging.runtime.config import Config
from messaging.sandbox.fake_twilio import FakeTwilio
from messaging.sms.twilio import ListedMessage, TwilioInbox

FRIEND = "+447911123456"
OURS = "+14155550100"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CLOSED_URL = "http://127.0.0.1:9/sms"


def listed(sid_digit: str, **overrides) -> ListedMessage:
    fields = {
        "sid": "SM" + sid_digit * 32,
        "from_": FRIEND,
        "to": OURS,
        "body": "hello",
        "num_media": "0",
        "direction": "inbound",
        "date_sent": NOW,
    }
    return ListedMessage(**(fields | overrides))


def nothing_stored(keys: list[str]) -> set[str]:
    return set()


# --------------------------------------------------------------------------- the decision


def test_keeps_only_inbound_texts_to_our_numbers_inside_the_window():
    items = [
        listed("1"),
        listed("2", direction="outbound-api"),
        listed("3", to="+14155550199"),  # not one of ours
        listed("4", date_sent=NOW - timedelta(hours=25)),  # listed because the filter is by day, but too old
        listed("5", date_sent=None),  # no date: kept, intake is idempotent
        listed("1"),  # listed twice (pages shifted): once
    ]
    missing, refused = missing_inbound(items, {OURS}, NOW - timedelta(hours=24), nothing_stored)
    assert [m.idempotency_key for m in missing] == ["twilio:SM" + "1" * 32, "twilio:SM" + "5" * 32]
    assert refused == []
    msg = missing[0]
    assert (msg.sender, msg.recipient, msg.text, msg.external_id) == (FRIEND, OURS, "hello", "SM" + "1" * 32)


def test_leaves_out_what_is_stored_and_names_what_the_parser_refuses():
    items = [listed("1"), listed("2"), listed("3", from_="not a number")]
    asked: list[list[str]] = []

    def stored(keys: list[str]) -> set[str]:
        asked.append(keys)
        return {"twilio:SM" + "1" * 32}

    missing, refused = missing_inbound(items, {OURS}, NOW - timedelta(hours=1), stored)
    assert [m.idempotency_key for m in missing] == ["twilio:SM" + "2" * 32]
    assert asked == [["twilio:SM" + "1" * 32, "twilio:SM" + "2" * 32]]
    assert [sid for sid, _ in refused] == ["SM" + "3" * 32] and "From" in refused[0][1]


def test_only_the_first_sms_actor_reconciles_and_only_when_on():
    on = Config(twilio_reconcile_interval=60)
    assert runs_reconcile(on, 0, has_users=True)
    assert not runs_reconcile(on, 1, has_users=True)
    assert not runs_reconcile(on, 0, has_users=False)
    assert not runs_reconcile(Config(twilio_reconcile_interval=0), 0, has_users=True)


# --------------------------------------------------------------------------- a sweep, for real but without Ray


@pytest.fixture
def users() -> UserDesk:
    """Made before the test runs: Django's logging set-up then does not drop the log capture of the test."""
    return UserDesk(Config(email_domain="beaver.test"))


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


def reconciler(fake: FakeTwilio, store, **kwargs) -> Reconciler:
    config = Config(
        email_domain="beaver.test",
        twilio_account_sid=fake.account_sid,
        twilio_auth_token=fake.auth_token,
        twilio_api_base_url=fake.base_url,
    )
    return Reconciler(config, store, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_text_whose_webhook_failed_is_stored_once(fake, users, make_user, caplog):
    from web.delivery.models import Message

    user = make_user()
    other = make_user()
    with pytest.raises(Exception):  # noqa: B017 - the webhook is unreachable
        fake.simulate_inbound(
            webhook_url=CLOSED_URL, public_url=CLOSED_URL, from_=FRIEND, to=user.twilio_number, body="lost?"
        )
    fake.receive_inbound(from_=FRIEND, to="+19995550123", body="not for us")
    [sid] = [m["sid"] for m in fake.inbound_messages if m["to"] == user.twilio_number]
    calls: list[int] = []

    def store(msgs):
        calls.append(len(msgs))
        return users.intake_many(msgs)

    sweeper = reconciler(fake, store)
    with caplog.at_level(logging.INFO, logger="messaging.intake.sms_reconcile"):
        report = sweeper.sweep()
    assert (report.numbers, report.missing, report.stored, report.failed) == (2, 1, 1, [])
    row = Message.objects.get(idempotency_key=f"twilio:{sid}")
    assert (row.user_id, row.text, row.sender, row.external_id) == (user.id, "lost?", FRIEND, sid)
    assert {q["To"] for q in fake.list_queries} == {user.twilio_number, other.twilio_number}
    [line] = [r.getMessage() for r in caplog.records if "reconciled" in r.getMessage()]
    assert f"twilio:{sid}" in line and f"message {row.id}" in line and user.twilio_number not in line

    again = sweeper.sweep()  # already stored: nothing to store, no intake call
    assert (again.missing, again.stored) == (0, 0) and calls == [1]
    assert Message.objects.filter(idempotency_key=f"twilio:{sid}").count() == 1


@pytest.mark.django_db(transaction=True)
def test_trouble_is_reported_not_raised_and_the_next_sweep_stores(fake, users, make_user):
    from web.delivery.models import Message

    user = make_user()
    sid = fake.receive_inbound(from_=FRIEND, to=user.twilio_number, body="later")["sid"]
    down = True

    def store(msgs):
        if down:
            raise TimeoutError("user actors away")
        return users.intake_many(msgs)

    away = TwilioInbox(fake.account_sid, fake.auth_token, api_base_url="http://127.0.0.1:9", timeout=2)
    assert reconciler(fake, store, inbox=away).sweep().failed == [mask_phone(user.twilio_number)]
    sweeper = reconciler(fake, store)
    first = sweeper.sweep()
    assert (first.missing, first.stored, first.failed) == (1, 0, ["store x1"])
    assert not Message.objects.filter(idempotency_key=f"twilio:{sid}").exists()
    down = False
    assert sweeper.sweep().stored == 1
    assert Message.objects.filter(idempotency_key=f"twilio:{sid}").count() == 1


def test_a_sweep_stops_asking_twilio_after_failures_in_a_row(fake):
    numbers = {f"+1415555020{i}" for i in range(6)}
    away = TwilioInbox(fake.account_sid, fake.auth_token, api_base_url="http://127.0.0.1:9", timeout=2)
    report = reconciler(fake, nothing_stored, inbox=away, numbers=lambda: numbers, known=nothing_stored).sweep()
    assert len(report.failed) == GIVE_UP_AFTER and report.numbers == 6


def test_pool_store_sends_each_message_to_its_user_actor():
    class Pool:  # the two NamedPool methods pool_store uses
        def __init__(self):
            self.calls = []

        def index_for(self, key: str) -> int:
            return 0 if key.endswith("0100") else 1

        def call(self, idx, method, msgs, timeout=None):
            self.calls.append((idx, method, [m.recipient for m in msgs], timeout))
            return [f"{idx}:{m.recipient}" for m in msgs]

    msgs, _ = missing_inbound(
        [listed("1"), listed("2", to="+14155550101"), listed("3")],
        {OURS, "+14155550101"},
        NOW - timedelta(hours=1),
        nothing_stored,
    )
    pool = Pool()
    results = pool_store(pool, timeout=7)(msgs)
    assert results == ["0:+14155550100", "1:+14155550101", "0:+14155550100"]
    assert pool.calls == [
        (0, "intake_many", [OURS, OURS], 7),
        (1, "intake_many", ["+14155550101"], 7),
    ]
