"""What every sender shares: take a due message from the outbox, send it, record the outcome.

A ``SenderBase`` subclass implements ``send(row) -> remote_id`` for one channel; the base turns its
result into exactly one durable state change (sent / retry later / dead) and sweeps for due work.
The Ray actor shells (async) run these sync methods in threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from . import metrics
from .config import Config
from .djangoenv import ensure_django, refresh_connections
from .errors import PermanentDeliveryError, TemporaryDeliveryError

log = logging.getLogger("messaging.delivery")


class SenderBase:
    channel = ""  # "satellite", "mailout", "sms"
    direction = ""  # Message.Direction value
    protocols: tuple[str, ...] = ()

    def __init__(self, config: Config, policy=None):
        ensure_django()
        from .outbox import RetryPolicy

        self.config = config
        self.policy = policy or RetryPolicy.from_config(config)
        self.in_flight = 0
        self.delivered = 0
        self._count_lock = threading.Lock()

    def send(self, row) -> str:
        """Send one claimed Message row; return the remote id. Raise Temporary/PermanentDeliveryError."""
        raise NotImplementedError

    def deliver(self, message_id: int) -> str:
        """Deliver one message if it is due and nobody else holds it. Returns its new status or 'skipped'."""
        from .outbox import claim, mark_dead, mark_retry, mark_sent

        refresh_connections()
        row = claim(message_id, self.policy)
        if row is None:
            return "skipped"
        with self._count_lock:
            self.in_flight += 1
        try:
            try:
                remote_id = self.send(row)
            except PermanentDeliveryError as exc:
                metrics.count(row.protocol, row.direction, "dead")
                return mark_dead(row.id, f"permanent: {exc}")
            except TemporaryDeliveryError as exc:
                metrics.count(row.protocol, row.direction, "failed")
                return mark_retry(row.id, f"temporary: {exc}", retry_after=exc.retry_after, policy=self.policy)
            except Exception as exc:  # a bug or an unexpected library error: retry, do not crash the actor
                log.exception("message %s: unexpected error in %s sender", row.id, self.channel)
                metrics.count(row.protocol, row.direction, "failed")
                return mark_retry(row.id, f"unexpected: {type(exc).__name__}: {exc}", policy=self.policy)
            mark_sent(row.id, remote_id)
            metrics.count(row.protocol, row.direction, "forwarded")
            with self._count_lock:
                self.delivered += 1
            return "sent"
        finally:
            with self._count_lock:
                self.in_flight -= 1

    def due_ids(self, limit: int = 100) -> list[int]:
        from .outbox import due

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
        for message_id in ids:
            self.deliver(message_id)
        return len(ids)


class SenderShell:
    """Async Ray actor body around a ``SenderBase``: deliveries in threads, a periodic sweep."""

    base: SenderBase

    _sweeper: asyncio.Task | None = None
    _stopping = False

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
            try:
                ids = await asyncio.to_thread(self.base.due_ids)
                if ids and not self._stopping:
                    self._accepted += len(ids)
                    try:
                        await asyncio.gather(*(asyncio.to_thread(self.base.deliver, i) for i in ids))
                    finally:
                        self._accepted -= len(ids)
            except Exception:
                log.exception("%s sweep failed; trying again", self.base.channel)
            await asyncio.sleep(self._sweep_interval)

    _accepted = 0  # deliveries handed to a thread and not finished: counted on the event loop, so a drain
    # that sees 0 here cannot race a delivery that is about to claim its message

    async def deliver(self, message_id: int) -> str:
        """Kick from a user actor. While draining, refuse: the message stays due for the next sender."""
        if self._stopping:
            return "skipped"
        self._accepted += 1
        try:
            return await asyncio.to_thread(self.base.deliver, message_id)
        finally:
            self._accepted -= 1

    async def stats(self) -> dict:
        in_flight = max(self.base.in_flight, self._accepted)
        return {"in_flight": in_flight, "delivered": self.base.delivered, "draining": self._stopping}

    async def drain(self) -> dict:
        """Stop sweeping for new work; deliveries in flight finish (watch ``stats``)."""
        self._stopping = True
        return await self.stats()

    async def ping(self) -> str:
        return "ok"
