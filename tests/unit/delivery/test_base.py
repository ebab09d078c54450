"""SenderBase.deliver_many and the sender shell's queue, without Ray, on the real database."""

from __future__ import annotations

import asyncio
import threading

import pytest

from messaging.core.errors import PermanentDeliveryError, TemporaryDeliveryError
from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.delivery.base import SenderBase, SenderShell
from messaging.outbox import store as outbox
from messaging.runtime.config import Config
from tests.waiting import eventually
from web.delivery.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingSender(SenderBase):
    channel = "test"
    direction = Direction.TO_DEVICE
    protocols = (Protocol.EMAIL,)

    def __init__(self, config=None, outcome=None):
        super().__init__(config or Config())
        self.sent: list[tuple[int, int]] = []
        self.outcome = outcome or {}
        self.lock = threading.Lock()

    def send(self, row) -> str:
        if row.text in self.outcome:
            raise self.outcome[row.text]
        with self.lock:
            self.sent.append((row.user_id, row.id))
        return f"r{row.id}"


def store(user, key, text="hello"):
    msg = CombinedMessage(Direction.TO_DEVICE, Protocol.EMAIL, "amy@example.org", "x@beaver.test", text, key)
    return outbox.record(msg, user_id=user.id, device_id=user.devices.get().id, accepted=True).message_id


def test_deliver_many_sends_each_users_messages_in_order(make_user):
    amy, bob = make_user(), make_user()
    ids = [store(user, f"k{n}") for n, user in enumerate([amy, bob, amy, bob, amy])]
    sender = RecordingSender()
    outcomes = sender.deliver_many(ids + [ids[0]])
    assert outcomes == dict.fromkeys(ids, "sent")
    for user in (amy, bob):
        assert [mid for uid, mid in sender.sent if uid == user.id] == sorted(
            mid for mid in ids if Message.objects.get(id=mid).user_id == user.id
        )
    assert sorted(mid for _, mid in sender.sent) == sorted(ids), "each sent once"
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {"sent"}
    assert sender.deliver_many(ids) == dict.fromkeys(ids, "skipped"), "sent is final"


def test_deliver_many_records_each_failure_on_its_own(make_user):
    user = make_user()
    ok, later, never = store(user, "a"), store(user, "b", text="busy"), store(user, "c", text="bad")
    sender = RecordingSender(outcome={"busy": TemporaryDeliveryError("503"), "bad": PermanentDeliveryError("400")})
    assert sender.deliver_many([ok, later, never]) == {ok: "sent", later: "failed", never: "dead"}
    assert sender.delivered == 1 and sender.in_flight == 0


class Shell(SenderShell):
    def __init__(self, base):
        self.base = base
        self.senders = (base,)


def test_kicks_coalesce_and_a_drain_leaves_queued_messages_due(make_user):
    user = make_user()
    ids = [store(user, f"q{n}") for n in range(6)]

    async def scenario():
        shell = Shell(RecordingSender())
        assert await shell.deliver_many(ids[:2]) == "queued"
        assert await shell.deliver_many(ids[2:4]) == "queued"
        assert (await shell.stats())["in_flight"] == 4

        async def idle() -> bool:
            return not (await shell.stats())["in_flight"]

        await eventually(idle, what="the four sends to finish")
        assert sorted(mid for _, mid in shell.base.sent) == ids[:4]
        shell._stopping = True  # draining: the next kick is refused, its messages stay due
        assert await shell.deliver_many(ids[4:]) == "skipped"
        return shell

    shell = asyncio.run(scenario())
    assert (shell.lane(None).accepted, shell.base.in_flight) == (0, 0)
    assert set(Message.objects.filter(id__in=ids[4:]).values_list("status", flat=True)) == {"received"}


def test_drain_drops_the_queue_it_has_not_claimed(make_user):
    user = make_user()
    ids = [store(user, f"d{n}") for n in range(3)]

    async def scenario():
        shell = Shell(RecordingSender())
        shell._enqueue(shell.lane(None), ids)  # queued, the runner lingers a moment before claiming
        stats = await shell.drain()
        assert stats["in_flight"] == 0 and stats["draining"]
        # the runner wakes from its linger, sees the drain and stops
        await eventually(lambda: not shell.lane(None).runners, interval=0.005, what="the runner to stop")
        return shell

    shell = asyncio.run(scenario())
    assert shell.base.sent == [], "nothing claimed after the drain"
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {"received"}


class SlowRemote(RecordingSender):
    """A remote that takes ``seconds`` per send (it stands for a slow relay or API, not a wait for sync)."""

    def __init__(self, seconds: float, policy):
        super().__init__(Config(), outcome=None)
        self.policy = policy
        self.seconds = seconds
        self.sending = threading.Event()  # set once a send is under way (so the claim has happened)

    def send(self, row) -> str:
        import time

        self.sending.set()
        time.sleep(self.seconds)
        return super().send(row)


def test_a_slow_remote_never_gets_a_message_twice(make_user):
    """Sends take 1.5 s each against a 2.5 s lease: a batch of four outlives the first lease several times
    over, while a second sender sweeps as fast as it can. Each message goes out exactly once and ends sent."""
    from datetime import timedelta

    from messaging.outbox.store import RetryPolicy

    policy = RetryPolicy(lease=timedelta(seconds=2.5))
    user = make_user()
    ids = [store(user, f"slow{n}") for n in range(4)]
    first, second = SlowRemote(1.5, policy), SlowRemote(1.5, policy)
    done = threading.Event()

    def sweep_meanwhile():
        from django.db import connection

        first.sending.wait(30)  # the first sender holds its claim now
        try:
            while not done.is_set():
                second.deliver_many(ids)
                done.wait(0.1)
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep_meanwhile)
    sweeper.start()
    try:
        outcomes = first.deliver_many(ids)
    finally:
        done.set()
        sweeper.join()
    sent = [mid for _, mid in first.sent + second.sent]
    assert sorted(sent) == sorted(ids), f"each message sent exactly once, got {sent}"
    assert outcomes == dict.fromkeys(ids, "sent")
    assert set(Message.objects.filter(id__in=ids).values_list("status", flat=True)) == {"sent"}
