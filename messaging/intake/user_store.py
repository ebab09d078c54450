"""How intake stores messages: through the user actors, and who then asks a sender to deliver them.

Every intake (the mail server, the webhooks, the satellite poll) hands its messages to the user actors in batched
calls (``CallBatcher`` over ``intake_many``). The user actors store them and say which sender should deliver each
new one; the kicks are made here, gathered (``NotifyGatherer``): a message after a quiet moment is kicked at once,
and under load each sender member gets one kick per ``KICK_WINDOW`` however many messages arrived, instead of one
per intake call. A Ray call costs 0.7-1.5 ms of CPU whatever it carries (``benchmarks/ray_hop.py``). A kick that
never arrives (this process dies first, the sender is down) costs time, not the message: the outbox sweep
delivers whatever is due.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from messaging.runtime.batching import CallBatcher, NotifyGatherer
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool

# Seconds a kick may wait for others to the same sender member: at most this much later than a kick per message
# would have come (the sender then waits up to 0.2 s more, delivery/base.py LINGER, for its batch to grow);
# nothing next to a satellite hop of minutes. Shorter windows gather too little at a few dozen messages a second
# per member to spare a kick.
KICK_WINDOW = 0.2


class UserStore:
    """``submit``/``submit_many`` as ``CallBatcher``'s: the results once stored; the deliveries kicked after."""

    def __init__(
        self,
        config: Config,
        users: NamedPool,
        *,
        window: float = KICK_WINDOW,
        senders: dict[str, Any] | None = None,
        local: Callable[[Any, list[int]], bool] | None = None,
    ):
        """``senders``: the sender pools by kind (made from the user pool's size and namespace when first kicked).
        ``local(kick, ids)``: takes the kicks meant for this very process (a sender actor storing device packets)
        and says so; those cost no Ray call."""
        self.users = users
        self._local = local
        # intake_many(messages, False): the user actor stores and answers whom to kick, without kicking.
        self.calls = CallBatcher(users, "intake_many", timeout=config.smtp_store_timeout, args=(False,))
        self.kicks = NotifyGatherer(self._kick, window)
        self._senders: dict[str, Any] = dict(senders or {})

    async def submit(self, idx: int, message: Any) -> Any:
        result = await self.calls.submit(idx, message)
        self._gather([result])
        return result

    async def submit_many(self, idx: int, messages: list[Any]) -> list[Any]:
        results = await self.calls.submit_many(idx, messages)
        self._gather(results)
        return results

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
        if pool is None:
            pool = self._senders[kick.kind] = NamedPool(kick.kind, self.users.size, self.users.namespace)
        kick.send(pool, message_ids)
