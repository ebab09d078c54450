"""SMS: phone normalisation, Twilio webhook signatures and parsing, and the real TwilioSender
against the local FakeTwilio over real loopback sockets."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.core.phones import is_e164, normalise_phone, sms_destination_refusal
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.sandbox.fake_twilio import FakeTwilio, num_segments
from messaging.sms.twilio import (
    TRIM_MARKER,
    BadWebhook,
    TwilioInbox,
    TwilioSender,
    TwilioUnavailable,
    parse_inbound_sms,
    parse_retry_after,
    rewrite_twilio_url,
    sign,
    trim_body,
    validate_signature,
)

TOKEN = "12345678901234567890123456789012"
PUBLIC_URL = "https://sms.example.com/sms"
SID = "SM" + "a1" * 16
USER_NUMBER = "+14155550100"
FRIEND = "+447911123456"


def reference_signature(token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's documented algorithm, written out independently of the SDK."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def webhook_params(**overrides: str) -> dict[str, str]:
    params = {
        "MessageSid": SID,
        "SmsSid": SID,
        "AccountSid": "AC" + "0" * 32,
        "From": FRIEND,
        "To": USER_NUMBER,
        "Body": "hello from the ground",
        "NumMedia": "0",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


# --------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+44 7911 123456", None, "+447911123456"),
        ("+447911123456", "US", "+447911123456"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("07911 123456", "gb", "+447911123456"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("  +1 415 555 0100  ", None, "+14155550100"),
        ("4155550100", None, None),  # national number, no region to read it in
        ("hello", "GB", None),
        ("", "GB", None),
        ("12", "GB", None),
        ("+1234", None, None),
    ],
)
def test_normalise_phone(raw: str, region: str | None, expected: str | None) -> None:
    assert normalise_phone(raw, region) == expected


def test_normalise_phone_strict_needs_an_allocated_range() -> None:
    assert normalise_phone("+1 555 123 4567") == "+15551234567"
    assert normalise_phone("+1 555 123 4567", strict=True) is None
    assert normalise_phone("+44 7911 123456", strict=True) == "+447911123456"


def test_a_destination_is_judged_once_per_number_and_countries(monkeypatch) -> None:
    """A device texts the same few numbers, judged at intake and again when sent: the answer is remembered per
    number and set of allowed countries (a set or a frozenset alike); other countries give their own answer."""
    import messaging.core.phones as phones

    parses = []
    real = phones.phonenumbers.parse
    monkeypatch.setattr(phones.phonenumbers, "parse", lambda *a, **kw: parses.append(a[0]) or real(*a, **kw))
    phones._destination_refusal.cache_clear()
    for _ in range(3):
        assert sms_destination_refusal("+1 415 555 0134", {"US"}) is None
        assert sms_destination_refusal("+1 415 555 0134", frozenset({"US"})) is None
    assert "not an allowed country" in sms_destination_refusal("+1 415 555 0134", {"CA"})
    assert parses == ["+1 415 555 0134", "+1 415 555 0134"]


@pytest.mark.parametrize(
    ("s", "ok"),
    [("+14155550100", True), ("+447911123456", True), ("14155550100", False), ("+0123", False),
     ("+1 415 555 0100", False), ("+1234567890123456", False), ("", False)],
)  # fmt: skip
def test_is_e164(s: str, ok: bool) -> None:
    assert is_e164(s) is ok


# --------------------------------------------------------------------------- signatures


def test_sign_matches_twilio_algorithm() -> None:
    params = webhook_params()
    assert sign(auth_token=TOKEN, public_url=PUBLIC_URL, params=params) == reference_signature(
        TOKEN, PUBLIC_URL, params
    )


def test_valid_signature_accepted() -> None:
    params = webhook_params()
    signature = reference_signature(TOKEN, PUBLIC_URL, params)
    assert validate_signature(auth_token=TOKEN, public_url=PUBLIC_URL, params=params, signature=signature)
    # Twilio may or may not include the default port when signing: both are accepted.
    assert validate_signature(
        auth_token=TOKEN, public_url="https://sms.example.com:443/sms", params=params, signature=signature
    )


def test_invalid_signature_rejected() -> None:
    params = webhook_params()
    good = reference_signature(TOKEN, PUBLIC_URL, params)
    for bad in ["", "not-a-signature", reference_signature("other-token", PUBLIC_URL, params)]:
        assert not validate_signature(auth_token=TOKEN, public_url=PUBLIC_URL, params=params, signature=bad)
    assert not validate_signature(auth_token="", public_url=PUBLIC_URL, params=params, signature=good)


def test_tampered_param_rejected() -> None:
    params = webhook_params()
    signature = reference_signature(TOKEN, PUBLIC_URL, params)
    for key, value in [("Body", "send me money"), ("From", "+15005550006"), ("Extra", "1")]:
        tampered = dict(params, **{key: value})
        assert not validate_signature(auth_token=TOKEN, public_url=PUBLIC_URL, params=tampered, signature=signature)


def test_signature_for_internal_url_rejected() -> None:
    """Behind an ingress we see http://pod:8000/sms; only the public URL validates."""
    params = webhook_params()
    signature = reference_signature(TOKEN, PUBLIC_URL, params)
    internal = "http://10.1.2.3:8000/sms"
    assert not validate_signature(auth_token=TOKEN, public_url=internal, params=params, signature=signature)
    signed_internally = reference_signature(TOKEN, internal, params)
    assert not validate_signature(auth_token=TOKEN, public_url=PUBLIC_URL, params=params, signature=signed_internally)


# --------------------------------------------------------------------------- parse_inbound_sms


def test_parse_inbound_sms() -> None:
    msg = parse_inbound_sms(webhook_params())
    assert isinstance(msg, CombinedMessage)
    assert msg.direction is Direction.TO_DEVICE
    assert msg.protocol is Protocol.SMS
    assert (msg.sender, msg.recipient) == (FRIEND, USER_NUMBER)
    assert msg.text == "hello from the ground"
    assert msg.idempotency_key == f"twilio:{SID}"
    assert msg.external_id == SID
    assert msg.routing_key() == USER_NUMBER


def test_parse_inbound_sms_old_field_and_media() -> None:
    msg = parse_inbound_sms(webhook_params(MessageSid=None, NumMedia="2", MediaUrl0="https://x/1"))
    assert msg.external_id == SID
    assert msg.text == "hello from the ground [2 media dropped]"
    only_media = parse_inbound_sms(webhook_params(Body="", NumMedia="1"))
    assert only_media.text == "[1 media dropped]"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"MessageSid": None, "SmsSid": None}, "MessageSid"),
        ({"MessageSid": "12345", "SmsSid": None}, "MessageSid"),
        ({"From": None}, "From"),
        ({"From": "not a number"}, "From"),
        ({"To": ""}, "To"),
        ({"To": "+12"}, "To"),
        ({"Body": None}, "Body"),
        ({"NumMedia": "lots"}, "NumMedia"),
    ],
)
def test_parse_inbound_sms_rejects_bad_webhooks(overrides: dict[str, str | None], field: str) -> None:
    with pytest.raises(BadWebhook, match=field) as info:
        parse_inbound_sms(webhook_params(**overrides))
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- pure helpers


def test_trim_body() -> None:
    assert trim_body("short") == "short"
    exact = "x" * 1600
    assert trim_body(exact) == exact
    long = "y" * 2000
    trimmed = trim_body(long)
    assert len(trimmed) == 1600 and trimmed.endswith(TRIM_MARKER) and trimmed.startswith("y" * 1500)
    emoji = "\U0001f680" * 900  # 1800 UTF-16 units
    cut = trim_body(emoji)
    assert cut.endswith(TRIM_MARKER)
    assert len(cut.encode("utf-16-le")) // 2 <= 1600


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)


def test_rewrite_twilio_url() -> None:
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?x=1"
    assert (
        rewrite_twilio_url(url, "http://127.0.0.1:9") == "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Messages.json?x=1"
    )
    edge = "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert rewrite_twilio_url(edge, "http://h:1/prefix/") == "http://h:1/prefix/2010-04-01/Accounts/AC1/Messages.json"
    assert rewrite_twilio_url("https://example.com/a", "http://h:1") == "https://example.com/a"
    assert rewrite_twilio_url("https://eviltwilio.com/a", "http://h:1") == "https://eviltwilio.com/a"


def test_sender_uses_twilio_unchanged_for_its_own_url() -> None:
    for url in ["https://api.twilio.com", "https://api.twilio.com/", ""]:
        assert TwilioSender("AC1", "tok", api_base_url=url).api_base_url == "https://api.twilio.com"
    assert TwilioSender("AC1", "tok", api_base_url="http://127.0.0.1:9/").api_base_url == "http://127.0.0.1:9"


def test_num_segments() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("é" * 70 + "\u0416") == 2  # not GSM-7: UCS-2, 67 per part


# --------------------------------------------------------------------------- sender vs FakeTwilio


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def sender(fake: FakeTwilio) -> TwilioSender:
    return TwilioSender(fake.account_sid, fake.auth_token, api_base_url=fake.base_url, timeout=5)


def test_send_arrives_with_returned_sid(fake: FakeTwilio, sender: TwilioSender) -> None:
    sid = sender.send(from_=USER_NUMBER, to=FRIEND, body="hi from orbit")
    [record] = fake.messages
    assert record["sid"] == sid and sid.startswith("SM") and len(sid) == 34
    assert (record["to"], record["from"], record["body"]) == (FRIEND, USER_NUMBER, "hi from orbit")
    assert record["account_sid"] == fake.account_sid and record["status"] == "queued"


def test_long_body_is_trimmed_not_refused(fake: FakeTwilio, sender: TwilioSender) -> None:
    sender.send(from_=USER_NUMBER, to=FRIEND, body="z" * 5000)
    [record] = fake.messages
    assert len(record["body"]) == 1600 and record["body"].endswith(TRIM_MARKER)


def test_wrong_token_is_permanent_and_token_not_logged(fake: FakeTwilio, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-secret-token-value"
    bad = TwilioSender(fake.account_sid, secret, api_base_url=fake.base_url, timeout=5)
    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentDeliveryError, match="20003"):
        bad.send(from_=USER_NUMBER, to=FRIEND, body="x")
    assert fake.messages == []
    assert secret not in caplog.text and secret not in repr(bad)


def test_invalid_to_is_permanent(fake: FakeTwilio, sender: TwilioSender) -> None:
    with pytest.raises(PermanentDeliveryError, match="21211"):
        sender.send(from_=USER_NUMBER, to="12345", body="x")
    assert fake.messages == []


def test_503_is_temporary_then_recovers(fake: FakeTwilio, sender: TwilioSender) -> None:
    fake.fail_next(1, status=503)
    with pytest.raises(TemporaryDeliveryError, match="503"):
        sender.send(from_=USER_NUMBER, to=FRIEND, body="x")
    assert fake.messages == []
    sid = sender.send(from_=USER_NUMBER, to=FRIEND, body="x")
    assert [m["sid"] for m in fake.messages] == [sid]


def test_429_is_temporary_with_retry_after(fake: FakeTwilio, sender: TwilioSender) -> None:
    fake.fail_next(1, status=429, retry_after=7)
    with pytest.raises(TemporaryDeliveryError) as info:
        sender.send(from_=USER_NUMBER, to=FRIEND, body="x")
    assert info.value.retry_after == 7.0


def test_stopped_server_is_temporary() -> None:
    server = FakeTwilio().start()
    base_url = server.base_url
    server.stop()
    sender = TwilioSender(server.account_sid, server.auth_token, api_base_url=base_url, timeout=2)
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        sender.send(from_=USER_NUMBER, to=FRIEND, body="x")


# --------------------------------------------------------------------------- inbound simulation


def test_main_runs_as_a_module() -> None:
    account = "AC" + "1" * 32
    args = ["--port", "0", "--account-sid", account, "--auth-token", "cli-token"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "messaging.sandbox.fake_twilio", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fake twilio on http://127.0.0.1:"), line
        base_url = line.split(" on ", 1)[1].strip()
        sid = TwilioSender(account, "cli-token", api_base_url=base_url, timeout=5).send(
            from_=USER_NUMBER, to=FRIEND, body="via cli"
        )
        listed = requests.get(f"{base_url}/_sandbox/messages", timeout=10).json()
        assert [(m["sid"], m["body"]) for m in listed] == [(sid, "via cli")]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


# --------------------------------------------------------------------------- Messages list (TwilioInbox vs FakeTwilio)


def inbox_for(fake: FakeTwilio, page_size: int = 200) -> TwilioInbox:
    inbox = TwilioInbox(fake.account_sid, fake.auth_token, api_base_url=fake.base_url, timeout=5)
    inbox.PAGE_SIZE = page_size
    return inbox


def test_inbox_lists_every_page_newest_first_with_the_clients_filters(fake: FakeTwilio, sender: TwilioSender) -> None:
    for i in range(5):
        fake.receive_inbound(from_=FRIEND, to=USER_NUMBER, body=f"text {i}")
    fake.receive_inbound(from_=FRIEND, to="+14155550199", body="for someone else")
    sender.send(from_=USER_NUMBER, to=FRIEND, body="a reply")  # outbound, not sent yet: no date_sent
    since = datetime.now(UTC) - timedelta(hours=24)
    listed = inbox_for(fake, page_size=2).sent_to(USER_NUMBER, since)
    assert [m.body for m in listed] == [f"text {i}" for i in reversed(range(5))]
    assert {(m.direction, m.from_, m.to) for m in listed} == {("inbound", FRIEND, USER_NUMBER)}
    assert all(m.date_sent is not None and m.date_sent >= since for m in listed)
    queries = fake.list_queries
    assert len(queries) == 3  # 2 + 2 + 1, the SDK following next_page_uri
    assert queries[0] == {"To": USER_NUMBER, "DateSent>": since.strftime("%Y-%m-%d"), "PageSize": "2"}
    assert queries[1]["Page"] == "1" and queries[1]["PageToken"].startswith("PASM")


def test_inbox_date_filter_is_by_day(fake: FakeTwilio) -> None:
    sent = email.utils.parsedate_to_datetime(fake.receive_inbound(from_=FRIEND, to=USER_NUMBER, body="x")["date_sent"])
    inbox = inbox_for(fake)
    assert [m.body for m in inbox.sent_to(USER_NUMBER, sent.replace(hour=23, minute=59))] == ["x"]  # same day
    assert inbox.sent_to(USER_NUMBER, sent + timedelta(days=1)) == []


def test_webhook_fields_of_a_listed_text_parse_to_the_webhooks_message(fake: FakeTwilio) -> None:
    sid = fake.receive_inbound(from_=FRIEND, to=USER_NUMBER, body="same either way")["sid"]
    [listed] = inbox_for(fake).sent_to(USER_NUMBER, datetime.now(UTC) - timedelta(days=1))
    via_list = parse_inbound_sms(listed.webhook_fields())
    via_webhook = parse_inbound_sms(webhook_params(MessageSid=sid, SmsSid=sid, Body="same either way"))
    assert via_list.idempotency_key == via_webhook.idempotency_key == f"twilio:{sid}"
    assert (via_list.sender, via_list.recipient, via_list.text) == (
        via_webhook.sender,
        via_webhook.recipient,
        via_webhook.text,
    )


def test_inbox_failures_are_twilio_unavailable_without_the_full_number(fake: FakeTwilio) -> None:
    wrong = TwilioInbox(fake.account_sid, "not-the-token", api_base_url=fake.base_url, timeout=5)
    with pytest.raises(TwilioUnavailable, match="HTTP 401") as info:
        wrong.sent_to(USER_NUMBER, datetime.now(UTC))
    assert USER_NUMBER not in str(info.value) and "0100" in str(info.value)
    away = TwilioInbox(fake.account_sid, fake.auth_token, api_base_url="http://127.0.0.1:9", timeout=5)
    with pytest.raises(TwilioUnavailable, match="ConnectionError"):
        away.sent_to(USER_NUMBER, datetime.now(UTC))


def test_sender_logs_mask_the_number(fake: FakeTwilio, sender: TwilioSender, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="messaging.sms.twilio"):
        sender.send(from_=USER_NUMBER, to=FRIEND, body="z" * 2000)
    assert FRIEND not in caplog.text and "3456" in caplog.text


def test_sending_threads_each_reuse_one_kept_alive_connection(fake: FakeTwilio, sender: TwilioSender) -> None:
    from messaging.delivery.base import SEND_THREADS
    from tests.lockstep import in_lockstep

    threads = SEND_THREADS + 2  # more than a sender actor sends at once
    fake.gather(threads)  # every call of a round in flight at once
    in_lockstep(threads, 3, lambda t, r: sender.send(from_=USER_NUMBER, to=FRIEND, body=f"{t}.{r}"))
    assert len(fake.messages) == threads * 3
    assert fake.connections_opened <= threads, "one connection per thread, kept alive, not one per message"
