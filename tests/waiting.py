"""Polling with a time limit, for tests that wait on something another thread or task does."""

from __future__ import annotations

import asyncio
import inspect
import time


async def eventually(condition, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Await until ``condition()`` (a plain or an async callable) is truthy; AssertionError naming ``what``
    after ``timeout`` seconds. Returns the truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(condition, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """``eventually`` for a test's own thread: poll ``condition()`` until it is truthy (returned); AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
