"""The webhooks without Ray or Serve: :class:`WebhookHandler` behind the same Starlette routes Serve serves
(:func:`make_app`), driven with Starlette's TestClient.

Its collaborators are given: a small store and user pool standing in for the batcher and the user actors,
or (one test) a ``UserDesk`` on the real database called in a worker thread, as a Ray call would.
"""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import parse_qsl, urlencode

import pytest
from starlette.testclient import TestClient

from messaging.core.codec import encode_from_device
from messaging.core.types import Protocol
from messaging.intake.user_store import LocalUsers
from messaging.intake.webhook_handler import WebhookHandler
from messaging.intake.webhooks import make_app
from messaging.routing.decisions import Verdict
from messaging.routing.user_desk import IntakeResult
from messaging.runtime.config import Config
from messaging.runtime.pool import PoolUnavailable
from messaging.sms.twilio import EMPTY_TWIML, sign

TOKEN = "sms-webhook-token"
PUBLIC_URL = "https://sms.example.com/sms"
SECRET = "hive-push-secret"
TWILIO_BUDGET = 15.0  # seconds Twilio waits in all (connection overrides: tt at most 15000 ms)
PARAMS = {"MessageSid": "SM" + "c" * 32, "From": "+447911123456", "To": "+14155550100", "Body": "hi"}
EXCEPTION_NAMES = ("Error", "Exception", "Traceback", "KeyError", "TypeError", "ValueError")


# --------------------------------------------------------------------------- collaborators given to the handler


class FakeStore:
    """The store (a CallBatcher over ``intake_many``): records what it stored, or fails as told."""

    def __init__(self, fail: Exception | None = None, verdict: Verdict = Verdict.ACCEPT):
        self.fail = fail
        self.verdict = verdict
        self.stored: list = []

    async def submit(self, idx: int, item):
        return (await self.submit_many(idx, [item]))[0]

    async def submit_many(self, idx: int, items: list) -> list[IntakeResult]:
        if self.fail is not None:
            raise self.fail
        results = []
        for item in items:
            if self.verdict is Verdict.RATE_LIMITED:
                results.append(IntakeResult(verdict=self.verdict, message_id=None, created=False))
                continue
            self.stored.append(item)
            results.append(IntakeResult(verdict=self.verdict, message_id=len(self.stored), created=True))
        return results


class FakeUsers:
    """The user pool's two methods the handler uses; ``dead_letter`` calls are recorded (or fail as told)."""

    def __init__(self, fail: Exception | None = None):
        self.fail = fail
        self.dead: list[tuple] = []

    def index_for(self, key: str) -> int:
        return 0

    async def acall(self, idx: int, method: str, *args, timeout: float | None = None):
        assert method == "dead_letter"
        if self.fail is not None:
            raise self.fail
        self.dead.append(args)
        return len(self.dead)


class SlowPool:
    """User actors that never answer: each call fails when its own timeout is over (as NamedPool.acall)."""

    def index_for(self, key: str) -> int:
        return 0

    async def acall(self, idx: int, method: str, *args, timeout: float | None = None):
        await asyncio.sleep(timeout or 0)
        raise PoolUnavailable("user_0 did not answer in time")


class StoringPool(SlowPool):
    async def acall(self, idx: int, method: str, msgs, *args, timeout: float | None = None):
        return [IntakeResult(verdict=Verdict.ACCEPT, message_id=1, created=True) for _ in msgs]


def config(**fields) -> Config:
    values = {
        "twilio_auth_token": TOKEN,
        "twilio_webhook_public_url": PUBLIC_URL,
        "swarm_webhook_secret": SECRET,
        **fields,
    }
    return Config(**values)


def client(handler: WebhookHandler) -> TestClient:
    return TestClient(make_app(handler), raise_server_exceptions=False)


def signed(params: dict[str, str], url: str = PUBLIC_URL, token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": sign(auth_token=token, public_url=url, params=params)}


def post_sms(http: TestClient, params: dict[str, str], headers: dict[str, str]):
    form = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    return http.post("/sms", content=urlencode(params).encode(), headers=form)


def names_no_exception(text: str) -> bool:
    return not any(name in text for name in EXCEPTION_NAMES)


# --------------------------------------------------------------------------- POST /sms


def test_signed_sms_is_200_with_empty_twiml_once_stored():
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        r = post_sms(http, PARAMS, signed(PARAMS))
    assert r.status_code == 200 and r.text == EMPTY_TWIML and r.headers["content-type"].startswith("text/xml")
    assert [m.idempotency_key for m in store.stored] == ["twilio:" + PARAMS["MessageSid"]]


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}],
    ids=["unsigned", "forged"],
)
def test_bad_signature_is_403_and_nothing_stored(headers):
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        assert post_sms(http, PARAMS, headers).status_code == 403
        assert post_sms(http, PARAMS, signed(PARAMS, token="another-token")).status_code == 403
        assert post_sms(http, PARAMS, signed(PARAMS, url="https://elsewhere.example/sms")).status_code == 403
    assert store.stored == []


def test_signature_when_the_configured_url_carries_connection_overrides():
    """Twilio is given ``...sms#rc=3&rp=all...``; it neither sends nor signs the fragment, so its signature is
    over the URL without it. A signature over the whole configured URL is taken too; another URL is not."""
    overrides = PUBLIC_URL + "#rc=3&rp=all&ct=2000&rt=12000"
    store = FakeStore()
    with client(WebhookHandler(config(twilio_webhook_public_url=overrides), FakeUsers(), store)) as http:
        assert post_sms(http, PARAMS, signed(PARAMS, url=PUBLIC_URL)).status_code == 200
        again = dict(PARAMS, MessageSid="SM" + "d" * 32)
        assert post_sms(http, again, signed(again, url=overrides)).status_code == 200
        other = dict(PARAMS, MessageSid="SM" + "e" * 32)
        assert post_sms(http, other, signed(other, url=PUBLIC_URL + "#rc=5")).status_code == 403
        assert post_sms(http, other, signed(other, url="https://sms.example.com/other")).status_code == 403
    assert len(store.stored) == 2


def test_signature_over_the_url_with_or_without_its_default_port():
    """Twilio signs the URL with or without the port (its own validator tries both); either is taken, once
    per configured URL, whichever way the URL is configured."""
    store = FakeStore()
    for configured in (PUBLIC_URL, "https://sms.example.com:443/sms"):
        with client(WebhookHandler(config(twilio_webhook_public_url=configured), FakeUsers(), store)) as http:
            for url in (PUBLIC_URL, "https://sms.example.com:443/sms"):
                params = dict(PARAMS, MessageSid="SM" + format(len(store.stored), "032x"))
                assert post_sms(http, params, signed(params, url=url)).status_code == 200, (configured, url)
            assert post_sms(http, PARAMS, signed(PARAMS, url="https://sms.example.com:8443/sms")).status_code == 403
    assert len(store.stored) == 4


def test_a_signature_header_that_is_not_ascii_is_403_not_500():
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        form = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "\u00e9t\u00e9"}
        r = http.post(
            "/sms", content=urlencode(PARAMS).encode(), headers={k: v.encode("latin-1") for k, v in form.items()}
        )
        assert r.status_code == 403 and names_no_exception(r.text)
    assert store.stored == []


@pytest.mark.parametrize(
    "fail",
    [PoolUnavailable("user_0 did not answer in time"), RuntimeError("database is locked")],
    ids=["pool-down", "database"],
)
def test_store_failure_is_503_temporary(fail):
    with client(WebhookHandler(config(), FakeUsers(), FakeStore(fail=fail))) as http:
        r = post_sms(http, PARAMS, signed(PARAMS))
    assert r.status_code == 503 and r.text == "temporarily unavailable"


def test_rate_limited_sender_is_503_and_nothing_stored():
    store = FakeStore(verdict=Verdict.RATE_LIMITED)
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        r = post_sms(http, PARAMS, signed(PARAMS))
    assert r.status_code == 503 and r.text == "too many messages, try again later"
    assert store.stored == []


@pytest.mark.parametrize(
    "params",
    [
        {k: v for k, v in PARAMS.items() if k != "From"},
        dict(PARAMS, MessageSid=""),
        dict(PARAMS, MessageSid="not-a-sid"),
        dict(PARAMS, From="not a number"),
        dict(PARAMS, To="+1"),
        dict(PARAMS, NumMedia="two"),
        {k: v for k, v in PARAMS.items() if k != "Body"},
        {},
    ],
    ids=["no-from", "empty-sid", "bad-sid", "bad-from", "bad-to", "bad-nummedia", "no-body", "empty"],
)
def test_malformed_signed_form_is_400_naming_the_field_and_nothing_stored(params):
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        r = post_sms(http, params, signed(params))
    assert r.status_code == 400 and "Twilio webhook" in r.text and names_no_exception(r.text)
    assert store.stored == []


def test_a_body_that_is_no_form_is_a_4xx_not_a_500():
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        for body in (b"\xff\xfe\x00garbage", b'{"MessageSid": "SM1"}', b"&&==&"):
            r = http.post("/sms", content=body, headers={"X-Twilio-Signature": "x"})
            assert 400 <= r.status_code < 500 and names_no_exception(r.text)
            # signed as Twilio would sign what the form parser reads from it: still a clear 400
            params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            r = http.post("/sms", content=body, headers=signed(params))
            assert r.status_code == 400 and "Twilio webhook" in r.text and names_no_exception(r.text)
    assert store.stored == []


def test_slow_store_gets_a_503_within_twilios_budget():
    # the store timeout of the other intakes is longer than Twilio waits: /sms has its own
    hooks = WebhookHandler(config(smtp_store_timeout=60.0, sms_webhook_timeout=0.2), SlowPool())
    body = urlencode(PARAMS).encode()
    signature = signed(PARAMS)["X-Twilio-Signature"]

    async def go():
        return await asyncio.wait_for(hooks.sms(body, signature), timeout=TWILIO_BUDGET)

    reply = asyncio.run(go())
    assert reply.status == 503 and reply.body == "temporarily unavailable"


def test_stored_is_200_with_empty_twiml():
    with client(WebhookHandler(config(sms_webhook_timeout=5.0), StoringPool())) as http:
        r = post_sms(http, PARAMS, signed(PARAMS))
    assert r.status_code == 200 and r.text == EMPTY_TWIML


def test_default_webhook_timeout_is_inside_twilios_budget():
    assert Config().sms_webhook_timeout < TWILIO_BUDGET


@pytest.mark.django_db(transaction=True)
def test_a_number_over_its_hourly_limit_gets_503_and_nothing_is_stored(make_user):
    from web.delivery.models import Message

    cfg = config(email_domain="beaver.test", twilio_account_sid="AC" + "0" * 32, inbound_per_sender_per_hour=2)
    user = make_user()

    def text(http: TestClient, sid: str, sender: str = "+15550001234") -> int:
        params = {"MessageSid": "SM" + sid * 32, "From": sender, "To": user.twilio_number, "Body": "hi"}
        return post_sms(http, dict(params, NumMedia="0"), signed(dict(params, NumMedia="0"))).status_code

    with client(WebhookHandler(cfg, LocalUsers(cfg, {}))) as http:
        assert [text(http, sid) for sid in "abc"] == [200, 200, 503]
        assert not Message.objects.filter(idempotency_key="twilio:SM" + "c" * 32).exists(), "Twilio may retry it"
        assert text(http, "d", sender="+15550009999") == 200, "another number still gets through"
    assert Message.objects.filter(user=user).count() == 3


# --------------------------------------------------------------------------- POST /swarm and GET /healthz


def packet(packet_id: int, device_id: int = 4242, **fields) -> dict:
    data = base64.b64encode(encode_from_device([("pushed", Protocol.EMAIL, "a@example.org")])).decode()
    return {"packetId": packet_id, "deviceId": device_id, "messageId": 1, "data": data, **fields}


def push(http: TestClient, payload, secret: str = SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http.post("/swarm", content=body, headers={"X-Swarm-Secret": secret})


def test_push_is_200_once_stored():
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        r = push(http, packet(88000001))
    assert r.status_code == 200 and r.json() == {"stored": 1, "dead_lettered": 0}
    assert [m.idempotency_key for m in store.stored] == ["hive:88000001:0"]


@pytest.mark.parametrize("secret", ["wrong", ""])
def test_push_with_a_wrong_secret_is_403(secret):
    store = FakeStore()
    with client(WebhookHandler(config(), FakeUsers(), store)) as http:
        assert push(http, packet(88000001), secret=secret).status_code == 403
    assert store.stored == []


def test_push_is_refused_when_no_secret_is_configured():
    with client(WebhookHandler(config(swarm_webhook_secret=""), FakeUsers(), FakeStore())) as http:
        assert push(http, packet(88000001), secret="").status_code == 403


def test_push_that_is_not_json_is_400():
    with client(WebhookHandler(config(), FakeUsers(), FakeStore())) as http:
        r = push(http, b"{not json")
    assert r.status_code == 400 and r.text.startswith("bad request: body is not JSON")


def test_push_with_a_malformed_item_dead_letters_it_and_stores_its_neighbour():
    store, users = FakeStore(), FakeUsers()
    with client(WebhookHandler(config(), users, store)) as http:
        r = push(http, [packet(88000002, data=12345), packet(88000003)])
    assert r.status_code == 200 and r.json() == {"stored": 1, "dead_lettered": 1}
    assert [m.idempotency_key for m in store.stored] == ["hive:88000003:0"]
    [(key, sender, raw, reason, device_id)] = users.dead
    assert key == "hive:88000002" and sender == "device:4242" and device_id == 4242
    assert json.loads(raw)["data"] == 12345 and reason.startswith("malformed Hive item")


def test_push_of_items_that_are_no_packets_is_dead_lettered():
    users = FakeUsers()
    with client(WebhookHandler(config(), users, FakeStore())) as http:
        r = push(http, [5, "text", None])
    assert r.status_code == 200 and r.json() == {"stored": 0, "dead_lettered": 3}
    assert [args[1] for args in users.dead] == ["hive", "hive", "hive"]


def test_push_whose_dead_letter_is_not_stored_is_503():
    """The item has a packet id: the Hive may drop it after a 200, so it must be stored first."""
    users = FakeUsers(fail=PoolUnavailable("user_0 did not answer in time"))
    with client(WebhookHandler(config(), users, FakeStore())) as http:
        assert push(http, [packet(88000002, data=12345)]).status_code == 503


@pytest.mark.parametrize("fail", [PoolUnavailable("down"), RuntimeError("database is locked")])
def test_push_not_stored_is_503(fail):
    with client(WebhookHandler(config(), FakeUsers(), FakeStore(fail=fail))) as http:
        r = push(http, packet(88000001))
    assert r.status_code == 503 and r.text == "temporarily unavailable"


def test_push_refused_by_the_store_is_503():
    with client(WebhookHandler(config(), FakeUsers(), FakeStore(verdict=Verdict.RATE_LIMITED))) as http:
        r = push(http, packet(88000001))
    assert r.status_code == 503 and r.text == "not stored"


def test_healthz():
    with client(WebhookHandler(config(), FakeUsers(), FakeStore())) as http:
        r = http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": True}
