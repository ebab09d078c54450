"""What every sender shares: take a due message from the outbox, send it, record the outcome.

A ``SenderBase`` subclass implements ``send(row) -> remote_id`` for one channel; the base turns its
result into exactly one durable state change (sent / retry later / dead) and sweeps for due work.
The Ray actor shells (async, ``SenderShell``: one or more senders in one process) run these sync methods in
threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from messaging.core.errors import LeaseLost, PermanentDeliveryError, TemporaryDeliveryError
from messaging.core.types import Channel, Direction, Protocol, Status
from messaging.runtime import metrics
from messaging.runtime.config import Config
from messaging.runtime.djangoenv import ensure_django, refresh_connections

log = logging.getLogger("messaging.delivery.base")

SEND_CONCURRENCY = 8  # users whose messages a sender sends side by side (each user's in order), at most
# A remote whose sends typically take less than QUICK_REMOTE seconds is kept busy by QUICK_WIDTH sends at once. More
# would only queue for the process's one Python lock (GIL) beside its intake: 8 at once against a quick remote put the
# mail server's DATA p99 at 33 ms where 2 give 23 ms (benchmarks/README.md). A slower remote gets SEND_CONCURRENCY.
QUICK_REMOTE = 0.05
QUICK_WIDTH = 2
SEND_TIME_WEIGHT = 0.2  # of the latest send in the moving average of send times
RUNNERS = 2  # batches a sender actor delivers at once
# sends one sender actor may have in flight at once: the send pool's, and each runner's own (a one-user batch is
# sent in the runner's thread); remote clients keep at least this many connections or sessions alive
SEND_THREADS = SEND_CONCURRENCY + RUNNERS
BATCH = 64  # messages per claim
LINGER = 0.2  # seconds a sender lets a small batch grow before claiming it (a satellite hop takes minutes)
SKIPPED = "skipped"  # not a status: a message not delivered now (not due, held by another sender, draining)


class Lease:
    """One claim's lease while its sends go on (shared by the send threads of one ``deliver_many``).

    ``holds`` is asked before each send: once a third of the lease has passed it records the sends done so
    far and renews the lease of the rows still unfinished; a row whose lease was lost (another sender
    re-claimed it) is not sent. ``flush`` records the remaining sends at the end.
    """

    def __init__(self, token: str, ids: list[int], policy, clock=time.monotonic):
        self.token = token
        self.policy = policy
        self.clock = clock
        self._open = set(ids)  # neither sent nor failed yet
        self._sent: list[tuple[int, str]] = []  # sent, not yet recorded
        self._renewed = clock()
        self._lock = threading.Lock()

    def holds(self, message_id: int) -> bool:
        with self._lock:
            if self.clock() - self._renewed >= self.policy.lease.total_seconds() / 3:
                # Django models: loaded after ensure_django() in the worker
                from messaging.outbox.store import renew_lease

                self._record_sent()
                held = renew_lease(sorted(self._open), self.token, self.policy)
                self._renewed = self.clock()
                for lost in self._open - held:
                    log.warning("message %s: lease lost to another sender; not sending it", lost)
                self._open &= held
            return message_id in self._open

    def sent(self, message_id: int, remote_id: str) -> None:
        with self._lock:
            self._open.discard(message_id)
            self._sent.append((message_id, remote_id))

    def finished(self, message_id: int, status: str) -> str:
        with self._lock:
            self._open.discard(message_id)
        return status

    def flush(self) -> int:
        """Record the sends not recorded yet; returns how many messages this claim recorded as sent."""
        with self._lock:
            self._record_sent()
            return self.recorded

    recorded = 0

    def _record_sent(self) -> None:
        from messaging.outbox.store import mark_sent_many  # Django models: loaded after ensure_django() in the worker

        if self._sent:
            self.recorded += mark_sent_many(self.token, self._sent)
            self._sent = []


def send_width(typical_send: float | None, users: int) -> int:
    """How many users' messages one batch sends side by side: ``QUICK_WIDTH`` when the remote's sends typically take
    under ``QUICK_REMOTE`` seconds, else (or not known yet) ``SEND_CONCURRENCY``; never more than ``users``."""
    widest = QUICK_WIDTH if typical_send is not None and typical_send < QUICK_REMOTE else SEND_CONCURRENCY
    return max(1, min(widest, users))


def streams(groups: list[list], width: int) -> list[list[list]]:
    """``groups`` (each user's messages, in order) dealt into ``width`` streams, each sent one group after another."""
    return [groups[n::width] for n in range(width)]


class SenderBase:
    channel: Channel
    direction: Direction
    protocols: tuple[Protocol, ...] = ()

    def __init__(self, config: Config, policy=None):
        ensure_django()
        from messaging.outbox.store import RetryPolicy  # Django models: loaded after ensure_django() in the worker

        self.config = config
        self.policy = policy or RetryPolicy.from_config(config)
        self.in_flight = 0
        self.delivered = 0
        self._count_lock = threading.Lock()
        self._sends = ThreadPoolExecutor(max_workers=SEND_CONCURRENCY, thread_name_prefix=f"{self.channel}-send")
        self.typical_send: float | None = None  # seconds a send takes, a moving average (None: none sent yet)

    def send(self, row) -> str:
        """Send one claimed Message row; return the remote id. Raise Temporary/PermanentDeliveryError."""
        raise NotImplementedError

    def deliver_many(self, message_ids: list[int]) -> dict[int, str]:
        """Deliver those of ``message_ids`` that are due and free: one claim, the sends (each user's in
        order, users side by side), then one write for all that were sent. Returns id -> new status
        (``skipped``: not due, or another sender holds it; ``stale``: the lease was lost mid-send).

        Every outcome is fenced on the claim's lease token, and the lease is renewed before a send once a
        third of it has passed (sends done by then are recorded at that moment), so a slow remote never
        lets the sweep re-claim and resend a message this sender is still working through. A crash
        between a send and its write resends the message after its lease (at least once)."""
        from messaging.outbox.store import claim_many  # Django models: loaded after ensure_django() in the worker

        refresh_connections()
        outcomes = dict.fromkeys(message_ids, SKIPPED)
        rows = claim_many(list(message_ids), self.policy)
        if not rows:
            return outcomes
        lease = Lease(rows[0].lease_token, [row.id for row in rows], self.policy)
        with self._count_lock:
            self.in_flight += len(rows)
        try:
            per_user: dict[object, list] = {}
            for row in rows:
                per_user.setdefault(row.user_id, []).append(row)
            width = send_width(self.typical_send, len(per_user))
            if width == 1:  # in this runner's thread
                for group in per_user.values():
                    self._send_in_order(group, outcomes, lease)
            else:
                send_stream = lambda groups: [self._send_in_order(group, outcomes, lease) for group in groups]  # noqa: E731
                list(self._sends.map(send_stream, streams(list(per_user.values()), width)))
            recorded = lease.flush()
            with self._count_lock:
                self.delivered += recorded
            return outcomes
        finally:
            with self._count_lock:
                self.in_flight -= len(rows)

    def _send_in_order(self, rows: list, outcomes: dict[int, str], lease: Lease) -> None:
        """Send claimed rows one after another; failures are recorded at once, successes handed to the lease."""
        # Django models: loaded after ensure_django() in the worker
        from messaging.outbox.store import STALE, mark_dead, mark_retry

        refresh_connections()  # this may be one of the send threads, with a connection of its own
        for row in rows:
            if not lease.holds(row.id):
                continue  # another sender took it over; it records the outcome
            try:
                remote_id = self._timed_send(row)
            except LeaseLost as exc:
                log.warning("%s; the sender holding it now carries on", exc)
                outcomes[row.id] = lease.finished(row.id, STALE)
            except PermanentDeliveryError as exc:
                metrics.count(row.protocol, row.direction, "dead")
                outcomes[row.id] = lease.finished(row.id, mark_dead(row.id, lease.token, f"permanent: {exc}"))
            except TemporaryDeliveryError as exc:
                metrics.count(row.protocol, row.direction, "failed")
                error = f"temporary: {exc}"
                status = mark_retry(row.id, lease.token, error, retry_after=exc.retry_after, policy=self.policy)
                outcomes[row.id] = lease.finished(row.id, status)
            except Exception as exc:  # a bug or an unexpected library error: retry, do not crash the actor
                log.exception("message %s: unexpected error in %s sender", row.id, self.channel)
                metrics.count(row.protocol, row.direction, "failed")
                error = f"unexpected: {type(exc).__name__}: {exc}"
                outcomes[row.id] = lease.finished(row.id, mark_retry(row.id, lease.token, error, policy=self.policy))
            else:
                metrics.count(row.protocol, row.direction, "forwarded")
                outcomes[row.id] = Status.SENT
                lease.sent(row.id, remote_id)

    def _timed_send(self, row) -> str:
        """``send``, its time (answered or not) kept in ``typical_send``, a moving average (a race of two threads
        updating it loses one sample: harmless)."""
        started = time.monotonic()
        try:
            return self.send(row)
        finally:
            took = time.monotonic() - started
            typical = self.typical_send
            self.typical_send = took if typical is None else typical + SEND_TIME_WEIGHT * (took - typical)

    def due_ids(self, limit: int = 100) -> list[int]:
        from messaging.outbox.store import due  # Django models: loaded after ensure_django() in the worker

        refresh_connections()
        return due(
            self.direction,
            list(self.protocols),
            limit=limit,
            grace=timedelta(seconds=self.config.outbox_sweep_interval),
        )

    def sweep(self, limit: int = 100) -> int:
        """Deliver every message of this channel that is due now. Returns how many were attempted."""
        ids = self.due_ids(limit)
        self.deliver_many(ids)
        return len(ids)


class Lane:
    """One sender's queue inside a shell. Kicked and swept ids wait here; up to RUNNERS batches are delivered
    at once, and ids that arrive meanwhile form the next batch, so under load one claim and one write cover
    many messages."""

    def __init__(self, base: SenderBase):
        self.base = base
        self.queue: list[int] = []
        self.runners = 0
        self.accepted = 0  # ids queued or being delivered: counted on the event loop, so a drain that sees 0
        # here cannot race a delivery that is about to claim its message

    @property
    def in_flight(self) -> int:
        return max(self.base.in_flight, self.accepted)


class SenderShell:
    """Async Ray actor body around one ``SenderBase`` per channel it sends (``senders``, set by ``__init__``):
    each has a queue of its own (so a claim covers one channel's messages), and one periodic sweep covers all."""

    senders: tuple[SenderBase, ...]

    _sweeper: asyncio.Task | None = None
    _stopping = False
    _lanes: dict[str, Lane] | None = None

    @property
    def lanes(self) -> dict[str, Lane]:
        if self._lanes is None:
            self._lanes = {sender.channel: Lane(sender) for sender in self.senders}
        return self._lanes

    def lane(self, channel: str | None) -> Lane:
        """The queue of ``channel``'s sender; ``None`` names the only one (a shell with one sender)."""
        if channel is None and len(self.lanes) == 1:
            return next(iter(self.lanes.values()))
        try:
            return self.lanes[channel]
        except KeyError:
            raise ValueError(f"no {channel} sender here (this actor sends {', '.join(self.lanes)})") from None

    def autostart(self, sweep_interval: float) -> None:
        """Called at the end of ``__init__`` (which Ray runs on the actor's event loop): the loops start
        by themselves, also when Ray restarts the actor after a crash."""
        asyncio.get_running_loop().create_task(self.start(sweep_interval))

    async def start(self, sweep_interval: float = 5.0) -> str:
        """Start the periodic sweep; idempotent (the launcher calls it to know the actor is up)."""
        if self._sweeper is None:
            self._sweep_interval = sweep_interval
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        return "started"

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            for lane in list(self.lanes.values()):
                try:
                    ids = await asyncio.to_thread(lane.base.due_ids)
                    if ids and not self._stopping:
                        self._enqueue(lane, ids)
                except Exception:
                    log.exception("%s sweep failed; trying again", lane.base.channel)
            await asyncio.sleep(self._sweep_interval)

    def _enqueue(self, lane: Lane, message_ids: list[int]) -> None:
        lane.queue.extend(message_ids)
        lane.accepted += len(message_ids)
        while lane.runners < RUNNERS and lane.queue:
            lane.runners += 1
            asyncio.get_running_loop().create_task(self._run_queue(lane))

    async def _run_queue(self, lane: Lane) -> None:
        try:
            while lane.queue and not self._stopping:
                if len(lane.queue) < BATCH:  # a moment for more kicks to join: nobody waits on a send,
                    await asyncio.sleep(LINGER)  # and one claim and one write then cover them all
                    if self._stopping or not lane.queue:
                        break
                batch = lane.queue[:BATCH]
                del lane.queue[:BATCH]
                try:
                    await asyncio.to_thread(lane.base.deliver_many, batch)
                except Exception:  # e.g. the database is away: the messages stay due for the sweep
                    log.exception("%s: delivering %d messages failed; the sweep retries", lane.base.channel, len(batch))
                finally:
                    lane.accepted -= len(batch)
        finally:
            lane.runners -= 1

    async def deliver_many(self, message_ids: list[int], channel: str | None = None) -> str:
        """Kick from an intake's user desk: queue these messages of ``channel`` (``None``: this actor's only one) for
        delivery. While draining, refuse: they stay due."""
        return self.queue(self.lane(channel), message_ids)

    def queue(self, lane: Lane, message_ids: list[int]) -> str:
        """Queue these messages on ``lane`` (on the event loop); ``skipped`` while draining: they stay due."""
        if self._stopping:
            return SKIPPED
        self._enqueue(lane, list(message_ids))
        return "queued"

    async def stats(self) -> dict:
        """Work in hand and messages delivered, summed over the channels (and each channel's own count when
        there are several: ``<channel>_delivered``)."""
        lanes = self.lanes.values()
        stats = {
            "in_flight": sum(lane.in_flight for lane in lanes),
            "delivered": sum(lane.base.delivered for lane in lanes),
            "draining": self._stopping,
        }
        if len(lanes) > 1:
            stats.update({f"{lane.base.channel}_delivered": lane.base.delivered for lane in lanes})
        return stats

    async def drain(self) -> dict:
        """Stop sweeping for new work; deliveries in flight finish (watch ``stats``)."""
        self._stopping = True
        for lane in self.lanes.values():  # not claimed yet: they stay due for the sweep of whoever runs next
            lane.accepted -= len(lane.queue)
            lane.queue.clear()
        return await self.stats()

    async def ping(self) -> str:
        return "ok"
