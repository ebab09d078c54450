"""SenderBase.deliver_many and the sender shell's queue, without Ray, on the real database."""

from __future__ import annotations

import asyncio
import threading
import time

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


class GatedRemote(RecordingSender):
    """A remote that holds every send until the test opens the gate, counting the sends under way at once and the
    threads they came from."""

    def __init__(self):
        super().__init__(Config())
        self.gate = threading.Event()
        self.active = 0
        self.threads: set[int] = set()

    def send(self, row) -> str:
        with self.lock:
            self.active += 1
            self.threads.add(threading.get_ident())
        try:
            assert self.gate.wait(30), "the test never opened the gate"
            return super().send(row)
        finally:
            with self.lock:
                self.active -= 1


def _deliver_gated(sender: GatedRemote, ids: list[int], at_once: int) -> dict:
    """``deliver_many(ids)`` with the gate shut until ``at_once`` sends are under way; its outcomes."""
    from tests.waiting import wait_until

    outcomes: dict = {}

    def deliver():
        from django.db import connection

        try:
            outcomes.update(sender.deliver_many(ids))
        finally:
            connection.close()

    worker = threading.Thread(target=deliver)
    worker.start()
    try:
        wait_until(lambda: sender.active == at_once, timeout=30, interval=0.01, what=f"{at_once} sends at once")
    finally:
        sender.gate.set()
        worker.join(60)
    return outcomes


def test_a_quick_remote_gets_two_users_sends_at_once_and_a_slow_one_eight(make_user):
    """Against a remote that answers quickly, more sends at once only queue for the process's one Python lock beside
    its intake: after its first sends are timed quick, a batch of ten users' messages goes out two users at a time
    (from two threads); while the remote is slow (or not timed yet), eight at a time. Each user's in order."""
    from messaging.delivery.base import QUICK_REMOTE, QUICK_WIDTH, SEND_CONCURRENCY

    users = [make_user() for _ in range(10)]
    sender = GatedRemote()
    first = [store(user, f"first{n}") for n, user in enumerate(users)]
    assert _deliver_gated(sender, first, SEND_CONCURRENCY) == dict.fromkeys(first, "sent")  # not timed yet: wide
    sender.typical_send = QUICK_REMOTE / 10  # as a quick remote's sends time it
    sender.gate.clear()
    sender.threads.clear()
    later = [store(user, f"later{n}") for n, user in enumerate(users) for _ in range(2)]
    assert _deliver_gated(sender, later, QUICK_WIDTH) == dict.fromkeys(later, "sent")
    assert len(sender.threads) == QUICK_WIDTH
    for user in users:
        assert [mid for uid, mid in sender.sent if uid == user.id] == sorted(
            Message.objects.filter(user=user).values_list("id", flat=True)
        )


def test_each_send_is_timed_also_when_the_remote_refuses_it(make_user):
    """A remote that takes its time and then refuses is a slow remote: the refusal's time counts. Here it is the
    only slow send (the one after it is answered at once), so only its time keeps the average above QUICK_REMOTE."""
    from messaging.delivery.base import QUICK_REMOTE

    class SlowToRefuse(RecordingSender):
        def send(self, row) -> str:
            if row.text == "busy":
                time.sleep(QUICK_REMOTE * 4)  # the remote taking its time (not a wait for another thread)
            return super().send(row)

    user = make_user()
    refused, ok = store(user, "t1", text="busy"), store(user, "t2")
    sender = SlowToRefuse(outcome={"busy": TemporaryDeliveryError("503")})
    assert sender.typical_send is None
    assert sender.deliver_many([refused, ok]) == {refused: "failed", ok: "sent"}
    assert sender.typical_send >= QUICK_REMOTE


def test_send_width():
    from messaging.delivery.base import QUICK_REMOTE, QUICK_WIDTH, SEND_CONCURRENCY, send_width, streams

    assert send_width(None, 20) == SEND_CONCURRENCY  # not timed yet
    assert send_width(QUICK_REMOTE * 2, 20) == SEND_CONCURRENCY
    assert send_width(QUICK_REMOTE / 2, 20) == QUICK_WIDTH
    assert send_width(None, 3) == 3 and send_width(QUICK_REMOTE / 2, 1) == 1
    groups = [[1], [2, 3], [4], [5]]
    assert streams(groups, 2) == [[[1], [4]], [[2, 3], [5]]]
