"""The /sms webhook without Ray: the Serve class's handler, the real batcher and user logic, a real database.

Only Ray is stood in for: the handler gets an ASGI request directly (no Serve proxy), and the user pool's
calls go to a ``UserBase`` in a worker thread, as a Ray call would.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest
from starlette.requests import Request

from messaging.intake.webhooks import Webhooks
from messaging.routing.user_actor import UserBase
from messaging.runtime.config import Config
from messaging.sms.twilio import sign
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)
PUBLIC_URL = "https://sms.beaver.test/sms"
CONFIG = Config(
    email_domain="beaver.test",
    twilio_account_sid="AC" + "0" * 32,
    twilio_auth_token="secret-token",
    twilio_webhook_public_url=PUBLIC_URL,
    inbound_per_sender_per_hour=2,
)


class ThreadPool:
    """Stands in for the user pool: one member, a ``UserBase`` called in a worker thread."""

    size = 1

    def __init__(self, base: UserBase):
        self.base = base

    def index_for(self, key: str) -> int:
        return 0

    async def acall(self, idx: int, method: str, *args, timeout: float | None = None):
        return await asyncio.to_thread(getattr(self.base, method), *args)


# The class as written: Serve's ingress wraps it in a subclass whose (async) __init__ also starts the ASGI app.
WEBHOOKS = next(c for c in Webhooks.func_or_class.__mro__ if "sms" in vars(c))


@pytest.fixture
def webhooks():
    return WEBHOOKS(CONFIG, ThreadPool(UserBase(CONFIG)), mount_admin=False)


def post(webhooks, params: dict[str, str], headers: dict[str, str]) -> int:
    """POST /sms to the handler, as Serve would hand it over; returns the status code."""
    body = urlencode(params).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/sms",
        "query_string": b"",
        "client": ("127.0.0.1", 40000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-type", b"application/x-www-form-urlencoded")],
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def call():
        return await WEBHOOKS.sms(webhooks, request=Request(scope, receive))

    return asyncio.run(call()).status_code


def text(webhooks, user, sid: str, sender: str = "+15550001234") -> int:
    params = {"MessageSid": "SM" + sid * 32, "From": sender, "To": user.twilio_number, "Body": "hi", "NumMedia": "0"}
    signature = sign(auth_token=CONFIG.twilio_auth_token, public_url=PUBLIC_URL, params=params)
    return post(webhooks, params, {"X-Twilio-Signature": signature})


def test_a_number_over_its_hourly_limit_gets_503_and_nothing_is_stored(webhooks, make_user):
    user = make_user()
    assert [text(webhooks, user, sid) for sid in "abc"] == [200, 200, 503]
    assert not Message.objects.filter(idempotency_key="twilio:SM" + "c" * 32).exists(), "Twilio may retry it"
    assert text(webhooks, user, "d", sender="+15550009999") == 200, "another number still gets through"
    assert Message.objects.filter(user=user).count() == 3
