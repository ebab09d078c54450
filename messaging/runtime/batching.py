"""Fewer Ray hops under load: calls to one pool member coalesce while a call to it is in flight.

``CallBatcher.submit(idx, item)`` sends ``[item]`` at once when nothing is on its way to member ``idx``
(no added latency when traffic is light). Items submitted while that call is in flight wait and go
together in the next call, so under load one Ray call (and one database transaction on the other side)
carries many items. The member's method takes a list and returns a list of results in the same order.

Each caller awaits its own item's result: a failure of the call fails every item in it (the method must
be idempotent per item, as intake is by idempotency key, since callers answer "try again").

``ThreadBatcher`` is the same for callers in threads (a mail server's worker parses, checks and stores one mail
without going back to the event loop in between): a thread of a small pool makes the calls of member ``idx`` one
after another, each carrying everything submitted meanwhile.

``NotifyGatherer`` does the same for fire-and-forget calls (delivery kicks), which have no answer to wait for:
the first for a key goes at once, later ones within ``window`` of it go together when the window ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from messaging.runtime.pool import NamedPool

log = logging.getLogger(__name__)


class CallBatcher:
    def __init__(self, pool: NamedPool, method: str, *, timeout: float, max_batch: int = 64, args: tuple = ()):
        """``args``: more arguments of every call, after the list of items."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.pool = pool
        self.method = method
        self.args = args
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
            items = [item for item, _ in live]
            results = await self.pool.acall(idx, self.method, items, *self.args, timeout=self.timeout)
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


class ThreadBatcher:
    """``CallBatcher`` for callers in threads: ``call(idx, items)`` made by a thread of this batcher's own pool
    (one at a time per member ``idx``), with every item submitted to ``idx`` while the call before was running."""

    def __init__(self, call: Callable[[int, list], list], *, lanes: int, max_batch: int = 64, name: str = "batch"):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._call = call
        self.max_batch = max_batch
        self._threads = ThreadPoolExecutor(max_workers=max(1, lanes), thread_name_prefix=name)
        self._lock = threading.Lock()
        self._waiting: dict[int, list[tuple[Any, Future]]] = {}
        self._running: set[int] = set()
        self.calls = 0
        self.items = 0

    def call_each(self, items: list[tuple[int, Any]], timeout: float) -> list[Any]:
        """The result for each ``(idx, item)``, in order, once the calls carrying them returned; raises what one
        raised, or ``TimeoutError`` after ``timeout`` seconds (items not yet sent then are not sent; the method
        must be idempotent per item, as intake is, because the caller answers "try again")."""
        futures = [future for idx, item in items for future in self.submit_many(idx, [item])]
        deadline = time.monotonic() + timeout
        try:
            return [future.result(max(0.0, deadline - time.monotonic())) for future in futures]
        except TimeoutError:
            for future in futures:
                future.cancel()  # those not yet in a call are left out of it
            raise

    def submit_many(self, idx: int, items: list[Any]) -> list[Future]:
        futures: list[Future] = [Future() for _ in items]
        with self._lock:
            self._waiting.setdefault(idx, []).extend(zip(items, futures, strict=True))
            if idx in self._running:
                return futures
            self._running.add(idx)
        self._threads.submit(self._send_all, idx)
        return futures

    def _send_all(self, idx: int) -> None:
        while True:
            with self._lock:
                waiting = self._waiting.get(idx)
                if not waiting:
                    self._waiting.pop(idx, None)
                    self._running.discard(idx)
                    return
                batch = waiting[: self.max_batch]
                del waiting[: self.max_batch]
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if live:
                self._send(idx, live)

    def _send(self, idx: int, live: list[tuple[Any, Future]]) -> None:
        self.calls += 1
        self.items += len(live)
        try:
            results = self._call(idx, [item for item, _ in live])
            if len(results) != len(live):  # a bug on the other side: never hand out the wrong result
                raise RuntimeError(f"{len(results)} results for {len(live)} items")
        except Exception as exc:
            for _, future in live:
                future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)


class NotifyGatherer:
    """Fire-and-forget calls gathered per key (say a sender pool member and channel), on one event loop.

    ``add(key, items)``: when nothing went to ``key`` in the last ``window`` seconds, ``send(key, items)`` runs at
    once (a lone message is not delayed); otherwise the items wait and go together ``window`` after the last
    send to that key, so under load each key gets at most one call per window, however many messages. ``flush``
    sends everything waiting now. ``send`` must not raise (a lost notification must be covered elsewhere: for
    delivery kicks, the outbox sweep).
    """

    def __init__(
        self,
        send: Callable[[Hashable, list], None],
        window: float,
        *,
        max_items: int = 64,
        clock: Callable[[], float] | None = None,
    ):
        self._send = send
        self.window = window
        self.max_items = max_items
        self._clock = clock
        self._last_sent: dict[Hashable, float] = {}
        self._waiting: dict[Hashable, list] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self.sent = 0  # calls made
        self.items = 0  # items they carried

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def add(self, key: Hashable, items: list) -> None:
        if not items:
            return
        waiting = self._waiting.setdefault(key, [])
        waiting.extend(items)
        if key in self._timers:  # a send to this key is already due at the window's end
            if len(waiting) >= self.max_items:
                self._send_now(key)
            return
        since = self._now() - self._last_sent.get(key, float("-inf"))
        if since >= self.window or len(waiting) >= self.max_items:
            self._send_now(key)
        else:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self.window - since, self._send_now, key)

    def flush(self) -> None:
        for key in list(self._waiting):
            self._send_now(key)

    def _send_now(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        items = self._waiting.pop(key, [])
        self._last_sent[key] = self._now()
        if items:
            self.sent += 1
            self.items += len(items)
            try:
                self._send(key, items)
            except Exception:  # e.g. a bug in send: the outbox sweep delivers these later
                log.exception("notification to %s failed; the sweep covers its %d items", key, len(items))
