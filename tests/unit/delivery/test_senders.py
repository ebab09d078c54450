"""Each sender, without Ray, against its remote's fake over a real socket: sent, retried, or dead."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.delivery.satellite import SatelliteBase
from messaging.delivery.senders import MailOutSender, SmsSender
from messaging.intake.user_store import LocalUsers
from messaging.outbox import store as outbox
from messaging.runtime.config import Config
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)
BASE = Config(email_domain="beaver.test", swarm_user_application_id=65002)


def stored(user, *, direction, protocol, text="hello", sender="amy@example.org", recipient=None, key=None):
    msg = CombinedMessage(
        direction=direction,
        protocol=protocol,
        sender=sender,
        recipient=recipient or f"{user.username}@beaver.test",
        text=text,
        idempotency_key=key or f"k-{user.username}-{direction}-{protocol}",
    )
    rec = outbox.record(msg, user_id=user.id, device_id=user.devices.get().id, accepted=True)
    return rec.message_id


def device_row(user, protocol, recipient, **kw):
    """A stored message from the user's device, due for sending."""
    return stored(
        user, direction=Direction.FROM_DEVICE, protocol=protocol, sender="device:1", recipient=recipient, **kw
    )


@pytest.fixture
def twilio():
    from messaging.sandbox.fake_twilio import FakeTwilio

    with FakeTwilio() as fake:
        yield fake


def deliver(sender, message_id: int) -> str:
    """Deliver one message: its new status, or ``skipped`` (not due, or held by another sender)."""
    return sender.deliver_many([message_id])[message_id]


def satellite(hive, **kw) -> SatelliteBase:
    config = dataclasses.replace(
        BASE, swarm_hive_url=hive.base_url, swarm_username="sandbox", swarm_password="sandbox", **kw
    )
    return SatelliteBase(config)


def test_satellite_sends_fitted_packets_and_records_their_ids(hive, make_user):
    user = make_user()
    mid = stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, text="word " * 100)
    assert deliver(satellite(hive), mid) == "sent"
    packets = hive.to_device(user.devices.get().device_id)
    assert 2 <= len(packets) <= 4
    texts = []
    for p in packets:
        assert len(base64.b64decode(p["data"])) <= 192
        m = pb.MessageDataPB()
        m.ParseFromString(base64.b64decode(p["data"]))
        texts.append(m.message[0].text)
        assert p["userApplicationId"] == 65002
    assert texts[0].startswith("(1/")
    row = Message.objects.get(id=mid)
    assert row.status == "sent" and row.remote_id == ",".join(str(p["packetId"]) for p in packets)


def test_satellite_resumes_after_a_partial_send(hive, make_user):
    user = make_user()
    mid = stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, text="word " * 100)
    sender = satellite(hive)
    swarm = sender.networks["swarm"]
    first_packets = [base64.b64encode(p).decode() for p in sender.packets_for(Message.objects.get(id=mid), swarm)]
    # an earlier attempt got the first packet out, recorded it, then died (its lease ran out)
    earlier = outbox.claim(mid)
    swarm.send(user.devices.get().device_id, base64.b64decode(first_packets[0]))
    assert outbox.save_progress(mid, earlier.lease_token, str(hive.to_device()[0]["packetId"]))
    Message.objects.filter(id=mid).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert deliver(sender, mid) == "sent"
    sent = hive.to_device(user.devices.get().device_id)
    assert [p["data"] for p in sent] == first_packets, "no packet twice, none missing, in order"


def test_satellite_temporary_error_retries_later(hive, make_user):
    user = make_user()
    mid = stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.SMS, sender="+15550001234")
    hive.set_faults(error_rate=1.0, status=503)
    assert deliver(satellite(hive), mid) == "failed"
    row = Message.objects.get(id=mid)
    assert row.attempts == 1 and row.next_attempt_at > timezone.now() and "503" in row.last_error
    hive.clear_faults()
    assert deliver(satellite(hive), mid) == "skipped", "not due yet"


def test_satellite_unknown_device_is_dead(make_user):
    from messaging.sandbox.fake_hive import FakeHive

    user = make_user()
    mid = stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL)
    with FakeHive(devices={1}) as hive:
        assert deliver(satellite(hive), mid) == "dead"
    assert Message.objects.get(id=mid).status == "dead"


def test_satellite_never_sends_to_a_device_that_changed_hands(hive, make_user):
    from web.accounts.models import Device

    first, second = make_user(device=False), make_user(device=False)
    device = Device.objects.create(device_id=424242, owner=first)
    mid = stored(first, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, text="private")
    Device.objects.filter(pk=device.pk).update(owner=second)  # released and claimed by someone else meanwhile
    assert deliver(satellite(hive), mid) == "dead"
    assert hive.to_device(424242) == [], "nothing of the first owner's reaches the second"
    assert "someone else" in Message.objects.get(id=mid).last_error


def test_sms_sender(twilio, make_user):
    user = make_user()
    mid = device_row(user, Protocol.SMS, "+14155550142", text="Back on Sunday")
    config = dataclasses.replace(
        BASE,
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base_url=twilio.base_url,
    )
    assert deliver(SmsSender(config), mid) == "sent"
    [sms] = twilio.messages
    assert (sms["from"], sms["to"], sms["body"]) == (user.twilio_number, "+14155550142", "Back on Sunday")
    assert Message.objects.get(id=mid).remote_id == sms["sid"]


def test_sms_sender_never_texts_a_refused_number_stored_before_the_rule(twilio, make_user):
    user = make_user()
    premium = device_row(user, Protocol.SMS, "+19005550123", key="premium")
    abroad = device_row(user, Protocol.SMS, "+447400123456", key="abroad")
    config = dataclasses.replace(
        BASE,
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base_url=twilio.base_url,
    )
    sender = SmsSender(config)
    assert deliver(sender, premium) == "dead" and deliver(sender, abroad) == "dead"
    assert twilio.messages == []
    assert "premium-rate numbers are not allowed" in Message.objects.get(id=premium).last_error
    assert "GB is not an allowed country" in Message.objects.get(id=abroad).last_error


def test_sms_sender_wrong_credentials_is_dead_and_5xx_retries(twilio, make_user):
    user = make_user()
    a = device_row(user, Protocol.SMS, "+14155550142", key="a")
    b = device_row(user, Protocol.SMS, "+14155550143", key="b")
    wrong = dataclasses.replace(
        BASE, twilio_account_sid=twilio.account_sid, twilio_auth_token="wrong", twilio_api_base_url=twilio.base_url
    )
    assert deliver(SmsSender(wrong), a) == "dead"
    twilio.fail_next(1, status=503)
    right = dataclasses.replace(wrong, twilio_auth_token=twilio.auth_token)
    assert deliver(SmsSender(right), b) == "failed"
    assert twilio.messages == []


def test_mail_sender_through_the_relay(make_user):
    from messaging.sandbox.relay_sink import RelaySink

    user = make_user()
    mid = device_row(user, Protocol.EMAIL, "mum@example.org", text="Made camp at the lake")
    sink = RelaySink()
    sink.start()
    try:
        config = dataclasses.replace(BASE, email_relay_host="127.0.0.1", email_relay_port=sink.port)
        assert deliver(MailOutSender(config), mid) == "sent"
        [mail] = sink.messages
        assert mail["rcpt_tos"] == ["mum@example.org"]
        assert mail["headers"]["From"] == f"{user.username}@beaver.test"
        sink.fail_next(1, code=451)
        mid2 = device_row(user, Protocol.EMAIL, "mum@example.org", text="again", key="second")
        assert deliver(MailOutSender(config), mid2) == "failed"
    finally:
        sink.stop()
    mid3 = device_row(user, Protocol.EMAIL, "mum@example.org", text="relay down", key="third")
    assert deliver(MailOutSender(config), mid3) == "failed", "relay down is a temporary error"


def test_mail_sender_threads_each_reuse_one_relay_session():
    from messaging.delivery.base import SEND_THREADS
    from messaging.delivery.email_relay import build_outbound
    from messaging.sandbox.relay_sink import RelaySink
    from tests.lockstep import in_lockstep

    sink = RelaySink()
    sink.start()
    try:
        sender = MailOutSender(dataclasses.replace(BASE, email_relay_host="127.0.0.1", email_relay_port=sink.port))

        def send(thread: int, round_: int) -> None:
            text = f"note {thread}.{round_}"
            sender.relay.send(
                build_outbound(from_addr="amy@beaver.test", to_addr="x@y.org", text=text, domain="b.test")
            )

        sink.gather(SEND_THREADS)  # every call of a round in flight at once
        in_lockstep(SEND_THREADS, 3, send)  # as many sends at once as a mail sender actor makes
        assert len(sink.messages) == SEND_THREADS * 3
        assert sender.relay.opened <= SEND_THREADS, "one kept session per sending thread, not one per message"
    finally:
        sink.stop()


def queries_to_deliver(sender, ids: list[int]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:  # one user's messages are sent in this thread
        assert set(sender.deliver_many(ids).values()) == {"sent"}
    return len(ctx.captured_queries)


@pytest.mark.parametrize("channel", ["satellite", "sms", "email"])
def test_a_sender_reads_no_row_twice_per_message(channel, hive, twilio, make_user):
    """The claim reads every field a sender uses: delivering five messages takes no more queries than two
    (a field left out of the claim is read again from the database for each message)."""
    from messaging.sandbox.relay_sink import RelaySink

    user = make_user()
    user.share_location = True
    user.save()
    sink = RelaySink()
    sink.start()
    try:
        config = dataclasses.replace(
            BASE,
            swarm_hive_url=hive.base_url,
            swarm_username="sandbox",
            swarm_password="sandbox",
            twilio_account_sid=twilio.account_sid,
            twilio_auth_token=twilio.auth_token,
            twilio_api_base_url=twilio.base_url,
            email_relay_host="127.0.0.1",
            email_relay_port=sink.port,
        )
        sender, new = {
            "satellite": (
                SatelliteBase,
                lambda k: stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, key=k),
            ),
            "sms": (SmsSender, lambda k: device_row(user, Protocol.SMS, "+14155550142", key=k)),
            "email": (MailOutSender, lambda k: device_row(user, Protocol.EMAIL, "mum@example.org", key=k)),
        }[channel]
        sender = sender(config)
        two = queries_to_deliver(sender, [new(f"two-{n}") for n in range(2)])
        five = queries_to_deliver(sender, [new(f"five-{n}") for n in range(5)])
        assert five == two, f"{five} queries for five messages, {two} for two"
        one = queries_to_deliver(sender, [new("one")])
        assert one <= two, f"{one} queries for one message, {two} for two"  # one sent: no BEGIN, COMMIT
    finally:
        sink.stop()


def outbound_config(twilio, sink, **kw) -> Config:
    return dataclasses.replace(
        BASE,
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base_url=twilio.base_url,
        email_relay_host="127.0.0.1",
        email_relay_port=sink.port,
        **kw,
    )


def test_one_sender_actor_sends_a_kicked_email_through_the_relay_and_a_text_through_twilio(twilio, make_user):
    """Email and SMS kicks reach one sender actor; each channel's kicks form one batch for its own sender."""
    from messaging.delivery.senders import Senders
    from messaging.sandbox.relay_sink import RelaySink
    from tests.waiting import eventually

    user = make_user()
    mails = [device_row(user, Protocol.EMAIL, "mum@example.org", text=f"mail {n}", key=f"m{n}") for n in range(2)]
    text = device_row(user, Protocol.SMS, "+14155550142", text="a text", key="t")

    async def scenario(config):
        shell = Senders(config)  # a sweep an hour apart: fresh rows are left to the kicks
        assert await shell.deliver_many(mails, "mailout") == "queued"
        assert await shell.deliver_many([text], "sms") == "queued"
        assert (await shell.stats())["in_flight"] == 3, "queued work counts for drain and upgrade"
        with pytest.raises(ValueError, match="no pigeon sender here"):
            await shell.deliver_many([text], "pigeon")

        async def idle():
            stats = await shell.stats()
            return not stats["in_flight"] and stats["delivered"] == 3 and stats

        stats = await eventually(idle, what="the email and the text to go out")
        await shell.drain()
        return stats

    with RelaySink() as sink:
        stats = asyncio.run(scenario(outbound_config(twilio, sink, outbox_sweep_interval=3600)))
        assert sorted(m["rcpt_tos"][0] for m in sink.messages) == ["mum@example.org"] * 2
        assert len(sink.messages) == 2, "the text never goes to the relay"
    assert [(sms["to"], sms["body"]) for sms in twilio.messages] == [("+14155550142", "a text")]
    assert stats | {"draining": False} == {
        "in_flight": 0,
        "delivered": 3,
        "satellite_delivered": 0,
        "mailout_delivered": 2,
        "sms_delivered": 1,
        "draining": False,
    }
    assert set(Message.objects.filter(id__in=[*mails, text]).values_list("status", flat=True)) == {"sent"}


def test_the_sender_actors_sweep_delivers_email_and_sms_left_without_a_kick(twilio, make_user):
    from messaging.delivery.senders import Senders
    from messaging.sandbox.relay_sink import RelaySink
    from tests.waiting import eventually

    user = make_user()
    mail = device_row(user, Protocol.EMAIL, "mum@example.org", key="swept-mail")
    text = device_row(user, Protocol.SMS, "+14155550142", key="swept-text")

    async def scenario(config):
        shell = Senders(config)

        def sent():
            return set(Message.objects.filter(id__in=[mail, text]).values_list("status", flat=True)) == {"sent"}

        await eventually(lambda: asyncio.to_thread(sent), what="the sweep to send both")
        await shell.drain()

    with RelaySink() as sink:
        asyncio.run(scenario(outbound_config(twilio, sink, outbox_sweep_interval=0.05)))
        assert [m["rcpt_tos"] for m in sink.messages] == [["mum@example.org"]]
    assert [sms["to"] for sms in twilio.messages] == ["+14155550142"]


def test_a_kick_for_this_sender_member_is_queued_here_and_one_for_another_member_is_left_to_the_pool(twilio, make_user):
    """What the sender actor's own poll stored for this member's users is queued here without a Ray call
    (``Senders._kick_here``); another member's kick, or an earlier version's kick naming no channel, is not."""
    from messaging.core.types import Channel
    from messaging.delivery.senders import Senders
    from messaging.routing.user_desk import Kick
    from messaging.sandbox.relay_sink import RelaySink
    from tests.waiting import eventually

    mail = device_row(make_user(), Protocol.EMAIL, "mum@example.org", key="kicked-here")

    async def scenario(config):
        shell = Senders(config, index=1)  # a sweep an hour apart: only a kick sends it
        assert not shell._kick_here(Kick("courier", 0, Channel.MAILOUT), [mail]), "member 0's"
        assert not shell._kick_here(Kick("outbound", 1), [mail]), "no channel named: not this version's kick"
        assert (await shell.stats())["in_flight"] == 0
        assert shell._kick_here(Kick("courier", 1, Channel.MAILOUT), [mail])
        assert (await shell.stats())["in_flight"] == 1

        def sent():
            return Message.objects.get(id=mail).status == "sent"

        await eventually(lambda: asyncio.to_thread(sent), what="the kicked mail to go out")
        await shell.drain()
        assert shell._kick_here(Kick("courier", 1, Channel.MAILOUT), [mail]), "draining: taken, and left due"
        assert (await shell.stats())["in_flight"] == 0

    with RelaySink() as sink:
        asyncio.run(scenario(outbound_config(twilio, sink, outbox_sweep_interval=3600)))
        assert [m["rcpt_tos"] for m in sink.messages] == [["mum@example.org"]]


def test_a_device_message_the_sender_actor_stores_for_its_own_member_is_sent_on_its_own_kick(twilio, make_user):
    """The wire from the poll's store to this member's own lanes: a device's email stored through the user pool
    (a real ``UserDesk``) is sent with the sweep an hour apart and no sender pool to call."""
    from messaging.delivery.senders import Senders
    from messaging.operations.kinds import sender_pools
    from messaging.runtime.pool import stable_index
    from messaging.sandbox.relay_sink import RelaySink
    from tests.waiting import eventually

    user = make_user()
    device_id = user.devices.get().device_id
    member = stable_index(f"user:{user.id}", 2)

    class NoPool:  # the sender pool: any kick that reaches it is a Ray call the local wire should have spared
        kind, size, namespace = "courier", 2, "test"
        calls: list = []

        def notify(self, idx, method, *args):
            self.calls.append((idx, method, *args))
            return True

    async def scenario(config):
        shell = Senders(config, LocalUsers(config, sender_pools({"courier": NoPool()})), index=member)
        shell.store._senders["courier"] = NoPool()
        message = CombinedMessage(
            direction=Direction.FROM_DEVICE,
            protocol=Protocol.EMAIL,
            sender=f"device:{device_id}",
            recipient="mum@example.org",
            text="stored by the poll",
            idempotency_key="hive:77:0",
            device_id=device_id,
        )
        result = await shell.store.submit(0, message)
        assert result.kick is not None and result.kick.member == member

        def sent():
            return Message.objects.get(id=result.message_id).status == "sent"

        await eventually(lambda: asyncio.to_thread(sent), what="the stored email to go out")
        await shell.drain()

    with RelaySink() as sink:
        config = outbound_config(twilio, sink, outbox_sweep_interval=3600, twilio_reconcile_interval=0, pool_size=2)
        asyncio.run(scenario(config))
        assert [m["rcpt_tos"] for m in sink.messages] == [["mum@example.org"]]
    assert NoPool.calls == [], "no Ray call for a kick this member took itself"
