"""The /sms handler without Ray or Serve: it answers within Twilio's budget (SMS_WEBHOOK_TIMEOUT), whatever the
user actors do. The pool here is a stand-in with NamedPool's two methods the handler uses."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from starlette.requests import Request

from messaging.intake.webhooks import Webhooks
from messaging.routing.decisions import Verdict
from messaging.routing.user_actor import IntakeResult
from messaging.runtime.config import Config
from messaging.runtime.pool import PoolUnavailable
from messaging.sms.twilio import EMPTY_TWIML, sign

TOKEN = "sms-webhook-token"
PUBLIC_URL = "https://sms.example.com/sms"
TWILIO_BUDGET = 15.0  # seconds Twilio waits in all (connection overrides: tt at most 15000 ms)
PARAMS = {"MessageSid": "SM" + "c" * 32, "From": "+447911123456", "To": "+14155550100", "Body": "hi"}


class SlowPool:
    """User actors that never answer: each call fails when its own timeout is over (as NamedPool.acall)."""

    def index_for(self, key: str) -> int:
        return 0

    async def acall(self, idx: int, method: str, *args, timeout: float | None = None):
        await asyncio.sleep(timeout or 0)
        raise PoolUnavailable("user_0 did not answer in time")


class StoringPool(SlowPool):
    async def acall(self, idx: int, method: str, msgs, timeout: float | None = None):
        return [IntakeResult(verdict=Verdict.ACCEPT, message_id=1, created=True) for _ in msgs]


def handler(pool, **config) -> Webhooks:
    plain = Webhooks.func_or_class.__mro__[1]  # our class, without Serve's ASGI wrapper
    hooks = object.__new__(plain)
    cfg = Config(twilio_auth_token=TOKEN, twilio_webhook_public_url=PUBLIC_URL, **config)
    plain.__init__(hooks, cfg, pool, mount_admin=False)
    return hooks


def request(params: dict[str, str]) -> Request:
    body = urlencode(params).encode()
    signature = sign(auth_token=TOKEN, public_url=PUBLIC_URL, params=params)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/sms",
        "query_string": b"",
        "headers": [(b"x-twilio-signature", signature.encode())],
        "client": ("127.0.0.1", 40000),
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def answer(hooks: Webhooks):
    async def go():
        return await asyncio.wait_for(hooks.sms(request(PARAMS)), timeout=TWILIO_BUDGET)

    return asyncio.run(go())


def test_slow_store_gets_a_503_within_twilios_budget():
    # the store timeout of the other intakes is longer than Twilio waits: /sms has its own
    hooks = handler(SlowPool(), smtp_store_timeout=60.0, sms_webhook_timeout=0.2)
    response = answer(hooks)
    assert response.status_code == 503 and response.body == b"temporarily unavailable"


def test_stored_is_200_with_empty_twiml():
    response = answer(handler(StoringPool(), sms_webhook_timeout=5.0))
    assert response.status_code == 200 and response.body.decode() == EMPTY_TWIML


def test_default_webhook_timeout_is_inside_twilios_budget():
    assert Config().sms_webhook_timeout < TWILIO_BUDGET
