"""What the fakes share: waiting on the list of messages a fake recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def snapshot(cond: threading.Condition, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``items``, taken under ``cond``."""
    with cond:
        return [dict(m) for m in items]


def wait_on(
    cond: threading.Condition,
    items: list[dict[str, Any]],
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
) -> list[dict[str, Any]]:
    """Block until ``predicate(copies of items)`` holds; ``cond`` is notified on each new item.
    Returns the copies; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    with cond:
        while not predicate([dict(m) for m in items]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s; {len(items)} messages")
            cond.wait(remaining)
        return [dict(m) for m in items]
