"""The sandbox's fake Twilio itself: signed inbound texts, its control API, its list envelope, its faults."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests

from messaging.core.errors import TemporaryDeliveryError
from messaging.core.types import CombinedMessage
from messaging.sandbox.fake_twilio import FakeTwilio
from messaging.sms.twilio import (
    EMPTY_TWIML,
    TwilioSender,
    parse_inbound_sms,
    validate_signature,
)
from tests.unit.sms.test_twilio import FRIEND, PUBLIC_URL, USER_NUMBER

CLOSED_URL = "http://127.0.0.1:9/sms"  # discard port: nothing listens on loopback


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def sender(fake: FakeTwilio) -> TwilioSender:
    return TwilioSender(fake.account_sid, fake.auth_token, api_base_url=fake.base_url, timeout=5)


def test_random_faults_are_reproducible(fake: FakeTwilio, sender: TwilioSender) -> None:
    def outcomes() -> list[bool]:
        results = []
        for _ in range(8):
            try:
                sender.send(from_=USER_NUMBER, to=FRIEND, body="x")
                results.append(True)
            except TemporaryDeliveryError:
                results.append(False)
        return results

    fake.set_faults(error_rate=0.5, status=500, seed=3)
    first = outcomes()
    fake.set_faults(error_rate=0.5, status=500, seed=3)
    assert outcomes() == first
    assert True in first and False in first
    assert len(fake.messages) == 2 * first.count(True)


def test_wait_for_polls_until_condition(fake: FakeTwilio, sender: TwilioSender) -> None:
    worker = threading.Thread(target=lambda: sender.send(from_=USER_NUMBER, to=FRIEND, body="later"))
    worker.start()
    messages = fake.wait_for(lambda ms: any(m["body"] == "later" for m in ms), timeout=5)
    worker.join()
    assert [m["body"] for m in messages] == ["later"]
    with pytest.raises(TimeoutError):
        fake.wait_for(lambda ms: len(ms) > 1, timeout=0.2)


class _Receiver:
    """A tiny webhook endpoint on loopback that checks signatures against PUBLIC_URL."""

    def __init__(self, auth_token: str) -> None:
        self.received: list[CombinedMessage] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                params = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                signature = self.headers.get("X-Twilio-Signature", "")
                if not validate_signature(
                    auth_token=auth_token, public_url=PUBLIC_URL, params=params, signature=signature
                ):
                    status, body = 403, b"bad signature"
                else:
                    receiver.received.append(parse_inbound_sms(params))
                    status, body = 200, EMPTY_TWIML.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver(fake: FakeTwilio) -> Iterator[_Receiver]:
    r = _Receiver(fake.auth_token)
    yield r
    r.close()


def test_simulate_inbound_is_signed_for_public_url(fake: FakeTwilio, receiver: _Receiver) -> None:
    response = fake.simulate_inbound(
        webhook_url=receiver.url, public_url=PUBLIC_URL, from_=FRIEND, to=USER_NUMBER, body="ping"
    )
    assert response.status_code == 200 and response.text == EMPTY_TWIML
    [msg] = receiver.received
    assert (msg.sender, msg.recipient, msg.text) == (FRIEND, USER_NUMBER, "ping")
    assert msg.idempotency_key == f"twilio:{msg.external_id}" and msg.external_id.startswith("SM")


def test_simulate_inbound_signed_for_other_url_is_refused(fake: FakeTwilio, receiver: _Receiver) -> None:
    response = fake.simulate_inbound(
        webhook_url=receiver.url, public_url=receiver.url, from_=FRIEND, to=USER_NUMBER, body="ping"
    )
    assert response.status_code == 403
    assert receiver.received == []


def test_control_api(fake: FakeTwilio, sender: TwilioSender, receiver: _Receiver) -> None:
    doc = {
        "webhook_url": receiver.url,
        "public_url": PUBLIC_URL,
        "from": FRIEND,
        "to": USER_NUMBER,
        "body": "yo",
    }
    answer = requests.post(f"{fake.base_url}/_sandbox/inbound", json=doc, timeout=10)
    assert answer.status_code == 200
    result = answer.json()
    assert result["status_code"] == 200
    [msg] = receiver.received
    assert result["message_sid"] == msg.external_id and msg.text == "yo"

    assert requests.post(f"{fake.base_url}/_sandbox/inbound", json={"to": "x"}, timeout=10).status_code == 400
    sid = sender.send(from_=USER_NUMBER, to=FRIEND, body="out")
    listed = requests.get(f"{fake.base_url}/_sandbox/messages", timeout=10).json()
    assert [m["sid"] for m in listed] == [sid]


def test_simulate_inbound_keeps_the_text_when_the_webhook_is_unreachable(fake: FakeTwilio) -> None:
    with pytest.raises(requests.RequestException) as info:
        fake.simulate_inbound(webhook_url=CLOSED_URL, public_url=PUBLIC_URL, from_=FRIEND, to=USER_NUMBER, body="lost?")
    [record] = fake.inbound_messages
    assert record["sid"] == info.value.message_sid
    assert (record["direction"], record["status"], record["from"], record["to"], record["body"]) == (
        "inbound",
        "received",
        FRIEND,
        USER_NUMBER,
        "lost?",
    )
    assert record["date_sent"] and fake.messages == []  # the outbound record stays outbound only


def test_control_api_names_the_sid_when_the_webhook_is_unreachable(fake: FakeTwilio) -> None:
    doc = {"webhook_url": CLOSED_URL, "public_url": PUBLIC_URL, "from": FRIEND, "to": USER_NUMBER, "body": "yo"}
    answer = requests.post(f"{fake.base_url}/_sandbox/inbound", json=doc, timeout=10)
    assert answer.status_code == 502
    assert answer.json()["message_sid"] == fake.inbound_messages[0]["sid"]


def test_fake_list_envelope_and_bad_filters(fake: FakeTwilio) -> None:
    fake.receive_inbound(from_=FRIEND, to=USER_NUMBER, body="x")
    url = f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    auth = (fake.account_sid, fake.auth_token)
    doc = requests.get(url, params={"To": USER_NUMBER}, auth=auth, timeout=5).json()
    assert set(doc) == {
        "messages",
        "end",
        "first_page_uri",
        "next_page_uri",
        "page",
        "page_size",
        "previous_page_uri",
        "start",
        "uri",
    }
    assert (doc["page"], doc["page_size"], doc["start"], doc["end"], doc["next_page_uri"]) == (0, 50, 0, 0, None)
    assert doc["uri"].startswith(f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json?")
    bad = requests.get(url, params={"DateSent>": "yesterday"}, auth=auth, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == 20001
    assert requests.get(url, auth=(fake.account_sid, "wrong"), timeout=5).status_code == 401


def test_answers_are_http_1_1_and_the_connection_stays_open_after_errors(fake: FakeTwilio) -> None:
    import base64
    import http.client
    from urllib.parse import urlencode

    path = f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    good = "Basic " + base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    form = urlencode({"From": USER_NUMBER, "To": FRIEND, "Body": "x"})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    fake.fail_next(1, status=503)
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    try:
        statuses = []
        for auth in (good, "Basic bm9ib2R5Om5vdGhpbmc=", good, good):  # a fault, wrong credentials, then twice ok
            conn.request("POST", path, body=form, headers=headers | {"Authorization": auth})
            answer = conn.getresponse()
            assert answer.version == 11 and answer.getheader("Content-Length") is not None
            answer.read()
            statuses.append(answer.status)
        conn.request("GET", "/nowhere")
        missing = conn.getresponse()
        missing.read()
    finally:
        conn.close()
    assert statuses == [503, 401, 201, 201] and missing.status == 404
    assert len(fake.messages) == 2 and fake.connections_opened == 1
