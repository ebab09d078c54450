"""Lazily named actor pools: members are named ``<kind>_<idx>`` and resolved on use.

A pool never holds a member that is not up yet against anyone: it waits a bounded time for the
name to appear, then raises ``PoolUnavailable``. When a member dies or is replaced under the same
name, the cached handle is dropped and the name resolved again, so replacements are picked up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

log = logging.getLogger(__name__)

# Errors after which the member is resolved again (it died, or is being replaced).
MEMBER_GONE = (RayActorError, ActorUnavailableError)
# The pause before calling a gone member again.
GONE_PAUSE = 0.1


def stable_index(key: str, size: int) -> int:
    """Sticky pool index for a routing key: the same key always lands on the same member."""
    if size <= 0:
        raise ValueError("pool size must be positive")
    return zlib.crc32(key.encode("utf-8")) % size


class PoolUnavailable(RuntimeError):
    """No member of the pool answered in time."""


def member_name(kind: str, idx: int) -> str:
    return f"{kind}_{idx}"


class NamedPool:
    def __init__(self, kind: str, size: int, namespace: str, wait_timeout: float = 30.0):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.kind = kind
        self.size = size
        self.namespace = namespace
        self.wait_timeout = wait_timeout
        self._handles: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"NamedPool({self.kind!r}, size={self.size})"

    def index_for(self, key: str) -> int:
        return stable_index(key, self.size)

    def try_get(self, idx: int) -> Any | None:
        """The member's handle if its name resolves now, else None (no waiting)."""
        handle = self._handles.get(idx)
        if handle is not None:
            return handle
        try:
            handle = ray.get_actor(member_name(self.kind, idx), namespace=self.namespace)
        except ValueError:
            return None
        self._handles[idx] = handle
        return handle

    def forget(self, idx: int) -> None:
        self._handles.pop(idx, None)

    def _until_up(self, idx: int) -> dict[str, Any]:
        """The wait for a member's name to resolve: tries 0.05 s apart, doubling up to 1 s, for ``wait_timeout``."""

        def not_up(state: RetryCallState) -> Any:
            raise PoolUnavailable(f"{member_name(self.kind, idx)} did not come up in {self.wait_timeout:.0f}s")

        return {
            "retry": retry_if_result(lambda handle: handle is None),
            "wait": wait_exponential(multiplier=0.05, max=1.0),
            "stop": stop_after_delay(self.wait_timeout),
            "retry_error_callback": not_up,
        }

    def get(self, idx: int) -> Any:
        """The member's handle, waiting up to ``wait_timeout`` for it to appear."""
        if (handle := self._handles.get(idx)) is not None:  # the usual case: known, nothing to wait for
            return handle
        return Retrying(**self._until_up(idx))(self.try_get, idx)

    async def aget(self, idx: int) -> Any:
        if (handle := self._handles.get(idx)) is not None:
            return handle
        return await AsyncRetrying(**self._until_up(idx))(self._try_get_async, idx)

    async def _try_get_async(self, idx: int) -> Any | None:
        return self.try_get(idx)

    def _while_gone(self, idx: int, deadline: float) -> dict[str, Any]:
        """Tenacity's settings to call again, GONE_PAUSE apart, while the member is gone (died, being replaced),
        until ``deadline`` (time.monotonic())."""

        def resolve_again(state: RetryCallState) -> None:
            self.forget(idx)
            log.info("pool %s: member %d gone, resolving again", self.kind, idx)

        def unavailable(state: RetryCallState) -> Any:
            self.forget(idx)
            exc = state.outcome.exception()
            raise PoolUnavailable(f"{member_name(self.kind, idx)} unavailable: {exc}") from exc

        return {
            "retry": retry_if_exception_type(MEMBER_GONE),
            "wait": wait_fixed(GONE_PAUSE),
            "stop": stop_after_delay(max(deadline - time.monotonic(), 0.0)),
            "before": resolve_again,
            "retry_error_callback": unavailable,
        }

    async def acall(self, idx: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on member ``idx`` and await the result.

        If the member is gone (died, being replaced) the name is resolved again and the call made once more,
        GONE_PAUSE later, within the overall ``timeout`` (tenacity). Callers must only use this for idempotent
        methods. The first attempt builds no retry machinery: it is on every message's path.
        """
        deadline = time.monotonic() + (timeout if timeout is not None else self.wait_timeout)

        async def once() -> Any:
            handle = self._handles.get(idx) or await self.aget(idx)
            ref = getattr(handle, method).remote(*args)
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.01)):
                    return await asyncio.wrap_future(ref.future())
            except TimeoutError as exc:
                raise PoolUnavailable(f"{member_name(self.kind, idx)} did not answer in time") from exc

        try:
            return await once()
        except MEMBER_GONE:
            await asyncio.sleep(GONE_PAUSE)
        return await AsyncRetrying(**self._while_gone(idx, deadline))(once)

    def call(self, idx: int, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Synchronous twin of ``acall`` (for sync actors and management commands)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.wait_timeout)

        def once() -> Any:
            handle = self.get(idx)
            try:
                return ray.get(getattr(handle, method).remote(*args), timeout=max(deadline - time.monotonic(), 0.01))
            except GetTimeoutError as exc:
                raise PoolUnavailable(f"{member_name(self.kind, idx)} did not answer in time") from exc

        try:
            return once()
        except MEMBER_GONE:
            time.sleep(GONE_PAUSE)
        return Retrying(**self._while_gone(idx, deadline))(once)

    def notify(self, idx: int, method: str, *args: Any) -> bool:
        """Fire-and-forget: start ``method`` on the member if it is up now. False if it is not.

        Used for delivery kicks: the outbox sweep covers anything a kick misses.
        """
        handle = self.try_get(idx)
        if handle is None:
            return False
        try:
            getattr(handle, method).remote(*args)
        except MEMBER_GONE:
            self.forget(idx)
            return False
        return True
