"""Intake's UserStore: messages stored with the user desk in this process (``LocalUsers``: a real ``UserDesk`` on the
real database, in its threads), and the delivery kicks made here, gathered per sender member, not one per call."""

from __future__ import annotations

import asyncio

import pytest

from messaging.core.types import CombinedMessage, Direction, Protocol
from messaging.intake.user_store import LocalUsers, UserStore
from messaging.runtime.config import Config
from messaging.runtime.pool import stable_index
from tests.waiting import eventually

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = Config(email_domain="beaver.test", pool_size=2)


class KickRecorder:
    """A sender pool: records the kicks it is sent."""

    def __init__(self, kind: str, size: int = 2):
        self.kind, self.size = kind, size
        self.kicks: list[tuple] = []

    def notify(self, idx, method, *args):
        self.kicks.append((idx, method, *args))
        return True


def mail_to(username: str, key: str) -> CombinedMessage:
    return CombinedMessage(
        direction=Direction.TO_DEVICE,
        protocol=Protocol.EMAIL,
        sender="anna@example.org",
        recipient=f"{username}@beaver.test",
        text="hello",
        idempotency_key=key,
    )


def test_kicks_are_made_here_gathered_per_sender_member_and_the_desk_kicks_nothing_itself(make_user):
    amy, bob = make_user(), make_user()
    kicked_by_desk = KickRecorder("satellite")
    satellites = KickRecorder("satellite")
    users = LocalUsers(CONFIG, {"satellite": kicked_by_desk})

    async def scenario():
        store = UserStore(CONFIG, users, window=0.3, senders={"satellite": satellites})
        first = await store.submit(0, mail_to(amy.username, "k1"))
        assert first.stored and satellites.kicks == [
            (stable_index(f"user:{amy.id}", 2), "deliver_many", [first.message_id])
        ], "a message after a quiet moment is kicked at once"
        more = await asyncio.gather(
            store.submit(0, mail_to(amy.username, "k2")),
            store.submit(0, mail_to(amy.username, "k3")),
            store.submit_many(0, [mail_to(amy.username, "k4"), mail_to("ghost", "k5"), mail_to(amy.username, "k1")]),
        )
        assert len(satellites.kicks) == 1, "within the window: gathered, not kicked yet"
        await eventually(lambda: len(satellites.kicks) == 2)
        ids = sorted([more[0].message_id, more[1].message_id, more[2][0].message_id])
        member, method, gathered = satellites.kicks[1]
        assert (member, method, sorted(gathered)) == (stable_index(f"user:{amy.id}", 2), "deliver_many", ids), (
            "one kick for the member's three new messages; the refused and the duplicate are not kicked"
        )
        bob_mail = await store.submit(0, mail_to(bob.username, "k6"))
        if stable_index(f"user:{bob.id}", 2) != member:  # another member: not held up by amy's window
            assert satellites.kicks[2][2] == [bob_mail.message_id]
        store.flush()
        await eventually(lambda: sum(len(k[2]) for k in satellites.kicks) == 5)

    asyncio.run(scenario())
    assert kicked_by_desk.kicks == [], "the desk left the kicks to the caller"


def test_a_kick_this_process_takes_itself_costs_no_call_to_the_sender_pool(make_user):
    """The sender actor's poll stores device packets: kicks for its own member are queued in that process
    (``local``), the others still go to their member through the pool."""
    from messaging.operations.kinds import sender_pools

    users_made = [make_user() for _ in range(6)]
    senders = KickRecorder("courier")
    users = LocalUsers(CONFIG, sender_pools({"courier": senders}))
    here = 0
    taken_here: list[tuple] = []

    def local(kick, ids) -> bool:
        if kick.member != here:
            return False
        taken_here.append((kick.channel, ids))
        return True

    async def scenario():
        store = UserStore(CONFIG, users, window=0.0, senders={"courier": senders}, local=local)
        results = [await store.submit(0, mail_to(u.username, f"l{n}")) for n, u in enumerate(users_made)]
        store.flush()
        return results

    results = asyncio.run(scenario())
    members = [stable_index(f"user:{u.id}", 2) for u in users_made]
    assert set(members) == {0, 1}, "the users fall to both members (else pick more users)"
    mine = sorted(r.message_id for r, m in zip(results, members, strict=True) if m == here)
    theirs = sorted(r.message_id for r, m in zip(results, members, strict=True) if m != here)
    assert sorted(i for _, ids in taken_here for i in ids) == mine
    assert {channel for channel, _ in taken_here} == {"satellite"}
    assert sorted(i for *_, ids, _channel in senders.kicks for i in ids) == theirs
    assert all(idx != here for idx, *_ in senders.kicks), "no Ray call for a kick this process took"
