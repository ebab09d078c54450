"""The mail server's SMTP decisions over a real socket, without Ray.

The user pool is a stand-in that calls a real ``UserBase`` (real database) in a thread, so this test is
about the mail server alone; the end-to-end tests run the real pools.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from email.message import EmailMessage

import pytest

from messaging.config import Config
from messaging.mailserver import DrainableSMTP, MailHandler, idempotency_key
from messaging.pool import PoolUnavailable
from messaging.users import UserBase
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


class LocalPool:
    """One member, called in a worker thread like a Ray actor would be; can be switched off."""

    size = 1

    def __init__(self, base):
        self.base = base
        self.down = False

    def index_for(self, key: str) -> int:
        return 0

    async def acall(self, idx, method, *args, timeout=None):
        if self.down:
            raise PoolUnavailable("user_0 did not come up")
        return await asyncio.to_thread(getattr(self.base, method), *args)


@pytest.fixture
def server():
    config = Config(email_domain="beaver.test", smtp_max_message_size=20_000)
    pool = LocalPool(UserBase(config))
    handler = MailHandler(config, pool)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder = {}

    async def serve():
        holder["server"] = await loop.create_server(
            lambda: DrainableSMTP(handler, data_size_limit=config.smtp_max_message_size, hostname="beaver.test"),
            host="127.0.0.1",
            port=0,
        )
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    ready.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]
    yield port, handler, pool
    loop.call_soon_threadsafe(holder["server"].close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def mail(to, body="Snow at the pass.", subject="Trail", sender="amy@example.org", message_id=None):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, subject
    if message_id:
        m["Message-ID"] = message_id
    m.set_content(body)
    return m


def test_accepts_and_stores_before_250(server, make_user):
    port, handler, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        refused = s.send_message(mail(f"{user.username}@beaver.test"))
    assert refused == {}
    row = Message.objects.get(user=user)
    assert row.status == "received" and row.sender == "amy@example.org" and "Snow at the pass." in row.text


def test_a_retried_mail_is_stored_once(server, make_user):
    port, _, _ = server
    user = make_user()
    for _ in range(2):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.send_message(mail(f"{user.username}@beaver.test", message_id="<same@example.org>"))
    assert Message.objects.filter(user=user).count() == 1


def test_relay_unknown_and_blocked_are_refused_at_rcpt(server, make_user):
    port, _, _ = server
    user = make_user(blocked=["pest@example.org"])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        code, text = s.rcpt("someone@elsewhere.test")
        assert code == 550 and b"5.7.1" in text
        code, text = s.rcpt("ghost@beaver.test")
        assert code == 550 and b"5.1.1" in text
        s.rset()
        s.mail("pest@example.org")
        code, text = s.rcpt(f"{user.username}@beaver.test")
        assert code == 550 and b"5.7.1" in text
    assert not Message.objects.exists()


def test_quota_refuses_at_data(server, make_user):
    port, _, _ = server
    user = make_user(quota=0)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPDataError) as err:
        s.send_message(mail(f"{user.username}@beaver.test"))
    assert err.value.smtp_code == 552
    assert Message.objects.get(user=user).status == "rejected"


def test_too_large_is_552(server, make_user):
    port, _, _ = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s, pytest.raises(smtplib.SMTPException) as err:
        s.send_message(mail(f"{user.username}@beaver.test", body="x" * 50_000))
    assert "552" in str(err.value)
    assert not Message.objects.filter(user=user).exists()


def test_no_user_actor_means_451_not_250(server, make_user):
    port, _, pool = server
    user = make_user()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo()
        s.mail("amy@example.org")
        assert s.rcpt(f"{user.username}@beaver.test")[0] == 250
        pool.down = True
        code, _ = s.data(mail(f"{user.username}@beaver.test").as_bytes())
    assert code == 451
    assert not Message.objects.filter(user=user).exists()


def test_draining_turns_new_sessions_away_with_421(server, make_user):
    port, handler, _ = server
    handler.draining = True
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP("127.0.0.1", port, timeout=10)
    assert err.value.smtp_code == 421


def test_idempotency_key():
    assert idempotency_key(b"x", "<a@b>", "Bob@X") == "smtp:<a@b>:bob@x"
    assert idempotency_key(b"x", "", "bob@x") != idempotency_key(b"y", "", "bob@x")
    assert idempotency_key(b"x", "", "bob@x") == idempotency_key(b"x", "", "bob@x")
