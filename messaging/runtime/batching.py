"""Fewer Ray hops under load: calls to one pool member coalesce while a call to it is in flight.

``CallBatcher.submit(idx, item)`` sends ``[item]`` at once when nothing is on its way to member ``idx``
(no added latency when traffic is light). Items submitted while that call is in flight wait and go
together in the next call, so under load one Ray call (and one database transaction on the other side)
carries many items. The member's method takes a list and returns a list of results in the same order.

Each caller awaits its own item's result: a failure of the call fails every item in it (the method must
be idempotent per item, as intake is by idempotency key, since callers answer "try again").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from messaging.runtime.pool import NamedPool

log = logging.getLogger(__name__)


class CallBatcher:
    def __init__(self, pool: NamedPool, method: str, *, timeout: float, max_batch: int = 64):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.pool = pool
        self.method = method
        self.timeout = timeout
        self.max_batch = max_batch
        self._waiting: dict[int, list[tuple[Any, asyncio.Future]]] = {}
        self._senders: dict[int, asyncio.Task] = {}
        self.calls = 0
        self.items = 0

    async def submit(self, idx: int, item: Any) -> Any:
        """The member's result for ``item``; raises what the call raised (e.g. ``PoolUnavailable``)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(idx, []).append((item, future))
        if idx not in self._senders:
            self._senders[idx] = asyncio.get_running_loop().create_task(self._send_all(idx))
        return await future

    async def submit_many(self, idx: int, items: list[Any]) -> list[Any]:
        """Several items for one member, kept together and in order in one call when they fit."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._waiting.setdefault(idx, []).extend(zip(items, futures, strict=True))
        if idx not in self._senders:
            self._senders[idx] = loop.create_task(self._send_all(idx))
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(results)

    async def _send_all(self, idx: int) -> None:
        try:
            while waiting := self._waiting.get(idx):
                batch = waiting[: self.max_batch]
                del waiting[: self.max_batch]
                live = [(item, fut) for item, fut in batch if not fut.done()]  # a caller may have given up
                if live:
                    await self._send(idx, live)
        except asyncio.CancelledError:  # the loop is going away: nobody will send the rest
            for _, fut in self._waiting.pop(idx, []):
                fut.cancel()
            raise
        finally:
            self._senders.pop(idx, None)
            if not self._waiting.get(idx):
                self._waiting.pop(idx, None)

    async def _send(self, idx: int, live: list[tuple[Any, asyncio.Future]]) -> None:
        self.calls += 1
        self.items += len(live)
        try:
            results = await self.pool.acall(idx, self.method, [item for item, _ in live], timeout=self.timeout)
            if len(results) != len(live):  # a bug on the other side: never hand out the wrong result
                raise RuntimeError(f"{self.method} returned {len(results)} results for {len(live)} items")
        except asyncio.CancelledError:
            for _, fut in live:
                fut.cancel()
            raise
        except Exception as exc:
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(live, results, strict=True):
            if not fut.done():
                fut.set_result(result)
