"""How intake stores messages: the user desk run in the intake's own process, and who then asks a sender to deliver.

Every intake (the mail server, the webhooks, the satellite poll) decides and stores its messages itself, with the
user desk (``routing/user_desk.py``) in threads of its own process (``LocalUsers``): a message costs no Ray hop
before it is durable (a Ray call costs 0.7-1.5 ms of CPU whatever it carries, ``benchmarks/ray_hop.py``). The
limits still hold across processes: an acceptance a count may refuse is counted again in the transaction that
stores it. Calls are batched (``CallBatcher`` over ``intake_many`` from the event loop, ``ThreadBatcher`` from the
mail server's worker threads): messages that arrive while a batch is being stored go together in the next one
transaction.

The desk answers which sender should deliver each new message; the kicks are made here, gathered
(``NotifyGatherer``): a message after a quiet moment is kicked at once, and under load each sender member gets one
kick per ``KICK_WINDOW`` however many messages arrived, instead of one per store. A kick that never arrives (this
process dies first, the sender is down) costs time, not the message: the outbox sweep delivers whatever is due.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from messaging.core.types import Channel
from messaging.routing.user_desk import UserDesk
from messaging.runtime.batching import CallBatcher, NotifyGatherer, ThreadBatcher
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool, stable_index

log = logging.getLogger(__name__)

# Seconds a kick may wait for others to the same sender member: at most this much later than a kick per message
# would have come (the sender then waits up to 0.2 s more, delivery/base.py LINGER, for its batch to grow);
# nothing next to a satellite hop of minutes. Shorter windows gather too little at a few dozen messages a second
# per member to spare a kick.
KICK_WINDOW = 0.2
# Batches of one process stored at once: a user's messages always take the same lane, so they are stored in
# order; more lanes than this only wait on the database's one writer (SQLite) or add connections (PostgreSQL).
DESK_LANES = 2
# Threads of the desk: the lanes' batches, and room for RCPT checks and dead letters beside them.
DESK_THREADS = 4


class LocalUsers:
    """The user desk in this process, called the way intake calls it: ``acall``/``call`` a desk method by name
    on lane ``idx`` (``index_for``), in a thread (the ORM is sync, the intakes' loops are not)."""

    size = DESK_LANES

    def __init__(self, config: Config, senders: dict[Channel, NamedPool]):
        """``senders``: for each channel, the pool of the kind that sends it (whom the desk names to kick)."""
        self.desk = UserDesk(config, senders)
        self._threads = ThreadPoolExecutor(max_workers=DESK_THREADS, thread_name_prefix="userdesk")

    def index_for(self, key: str) -> int:
        return stable_index(key, self.size)

    async def acall(self, idx: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """The desk's answer; ``TimeoutError`` after ``timeout`` (the caller answers "try again": intake is
        idempotent by key, so a store that finishes late is not stored twice when the sender retries)."""
        future = asyncio.get_running_loop().run_in_executor(self._threads, getattr(self.desk, method), *args)
        return await asyncio.wait_for(future, timeout)

    def call(self, idx: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Synchronous twin of ``acall``, in the caller's thread (the SMS reconcile)."""
        return getattr(self.desk, method)(*args)

    @property
    def senders_by_kind(self) -> dict[str, NamedPool]:
        """The sender pools the desk names in its kicks, by kind."""
        return self.desk.pools_by_kind


class UserStore:
    """``submit``/``submit_many`` as ``CallBatcher``'s: the results once stored; the deliveries kicked after.
    From a worker thread, ``store`` (``ThreadBatcher``: batched the same way, without a trip through the event
    loop), then ``kick`` on the loop with its results."""

    def __init__(
        self,
        config: Config,
        users: Any,
        *,
        window: float = KICK_WINDOW,
        senders: dict[str, Any] | None = None,
        local: Callable[[Any, list[int]], bool] | None = None,
    ):
        """``users``: where messages are stored (``LocalUsers``). ``senders``: the sender pools by kind (by default
        those ``users`` names). ``local(kick, ids)``: takes the kicks meant for this very process (a sender actor
        storing device packets) and says so; those cost no Ray call."""
        self.users = users
        self._local = local
        # intake_many(messages, False): the desk stores and answers whom to kick, without kicking.
        self.calls = CallBatcher(users, "intake_many", timeout=config.smtp_store_timeout, args=(False,))
        self.timeout = config.smtp_store_timeout
        self.in_threads = ThreadBatcher(
            lambda idx, items: users.call(idx, "intake_many", items, False, timeout=self.timeout),
            lanes=getattr(users, "size", 1),
            name="store",
        )
        self.kicks = NotifyGatherer(self._kick, window)
        self._senders: dict[str, Any] = dict(senders or getattr(users, "senders_by_kind", {}))

    async def submit(self, idx: int, message: Any) -> Any:
        result = await self.calls.submit(idx, message)
        self._gather([result])
        return result

    async def submit_many(self, idx: int, messages: list[Any]) -> list[Any]:
        results = await self.calls.submit_many(idx, messages)
        self._gather(results)
        return results

    def store(self, messages: list[tuple[int, Any]]) -> list[Any]:
        """In a worker thread, not on the event loop: each ``(idx, message)`` stored, the results in order once
        all are; ``TimeoutError`` after SMTP_STORE_TIMEOUT. Nothing is kicked: hand the results to ``kick``."""
        return self.in_threads.call_each(messages, self.timeout)

    def kick(self, results: list[Any]) -> None:
        """On the event loop: the deliveries of what ``store`` stored."""
        self._gather(results)

    def flush(self) -> None:
        """Make the kicks still waiting now (draining)."""
        self.kicks.flush()

    def _gather(self, results: list[Any]) -> None:
        for result in results:
            if result.kick is not None:
                self.kicks.add(result.kick, [result.message_id])

    def _kick(self, kick: Any, message_ids: list[int]) -> None:
        if self._local is not None and self._local(kick, message_ids):
            return
        pool = self._senders.get(kick.kind)
        if pool is None:  # no pool of that kind known here: the sweep delivers them
            log.info("messages %s queued: no %s pool to kick, the sweep will deliver them", message_ids, kick.kind)
            return
        kick.send(pool, message_ids)
