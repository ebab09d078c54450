"""The courier: one pool member's mail server and senders in one process, without Ray (``operations/courier.py``).

Over real sockets: SMTP in, the fake Hive out, the real database; the courier pool it would kick over Ray is a
recorder, so a kick that is not taken in the process shows.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from email.message import EmailMessage

import pytest

from messaging.operations.courier import combined_stats
from messaging.runtime.config import Config
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_members_stats_count_what_its_mail_server_stores_and_its_senders_send():
    sending = {"in_flight": 2, "delivered": 7, "draining": False, "polling": True, "polled": 3}
    mail = {"sessions": 4, "in_flight": 1, "accepted": 9, "draining": True}
    stats = combined_stats(sending, mail)
    assert stats["in_flight"] == 3 and (stats["storing"], stats["sending"]) == (1, 2)
    assert (stats["sessions"], stats["accepted"], stats["delivered"]) == (4, 9, 7)
    assert stats["draining"] is True and stats["polling"] is True and stats["polled"] == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CourierPool:
    """The courier pool: any kick that reaches it is a Ray call the courier should have spared."""

    kind, size, namespace = "courier", 2, "test"

    def __init__(self):
        self.calls = []

    def notify(self, idx, method, *args):
        self.calls.append((idx, method, *args))
        return True


def mail_to(address: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = "amy@example.org", address, "Trail", "<c1@example.org>"
    m.set_content("Snow at the pass.")
    return m


def test_mail_for_this_members_user_reaches_the_device_with_no_ray_call_and_a_drain_stops_intake(hive, dns, make_user):
    from messaging.operations.courier import Courier
    from messaging.operations.kinds import sender_pools
    from messaging.runtime.pool import stable_index
    from tests.waiting import eventually

    user = make_user()
    member = stable_index(f"user:{user.id}", 2)
    pool = CourierPool()
    config = Config(
        email_domain="beaver.test",
        swarm_user_application_id=65002,
        swarm_hive_url=hive.base_url,
        swarm_username="sandbox",
        swarm_password="sandbox",
        smtp_listen_host="127.0.0.1",
        smtp_listen_port=free_port(),
        outbox_sweep_interval=3600,  # only the kick can send it in time
        twilio_reconcile_interval=0,
        pool_size=2,
        dns_nameservers=dns.nameservers,
    )

    async def scenario():
        courier = Courier(config, sender_pools({"courier": pool}), index=member)
        courier.mail.handler.store._senders["courier"] = pool
        courier.store._senders["courier"] = pool
        assert await courier.start(config.outbox_sweep_interval) == f"127.0.0.1:{config.smtp_listen_port}"

        def send() -> None:
            with smtplib.SMTP("127.0.0.1", config.smtp_listen_port, timeout=10) as s:
                s.send_message(mail_to(f"{user.username}@beaver.test"))

        await asyncio.to_thread(send)

        def sent() -> bool:
            return Message.objects.filter(status="sent").count() == 1

        await eventually(lambda: asyncio.to_thread(sent), what="the mail to go out to the device")
        assert (await courier.stats())["accepted"] == 1

        drained = await courier.drain(close_listener=False)
        assert drained["draining"] and drained["in_flight"] == 0

        def refused() -> int:
            with smtplib.SMTP() as s:
                return s.connect("127.0.0.1", config.smtp_listen_port)[0]

        assert await asyncio.to_thread(refused) == 421, "drained: new sessions are turned away"
        await courier.stop()

    asyncio.run(scenario())
    assert hive.to_device(user.devices.get().device_id), "the device's packets are at the Hive"
    assert pool.calls == [], "no Ray call for a kick this member took itself"
