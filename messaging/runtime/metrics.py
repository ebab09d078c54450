"""Message counters through ``ray.util.metrics`` (exported on each Ray node's metrics port).

Outside a Ray worker (unit tests, management commands) the counters are no-ops.
"""

from __future__ import annotations

import threading

import ray
from ray.util.metrics import Counter

_lock = threading.Lock()
_counter = None


def _get_counter():
    global _counter
    if _counter is None:
        with _lock:
            if _counter is None:
                _counter = Counter(
                    "spacebeaver_messages",
                    description="Messages by protocol, direction and outcome "
                    "(accepted, duplicate, rejected, forwarded, failed, dead).",
                    tag_keys=("protocol", "direction", "outcome"),
                )
    return _counter


def count(protocol: str, direction: str, outcome: str, n: int = 1) -> None:
    if not ray.is_initialized():
        return
    _get_counter().inc(n, tags={"protocol": protocol, "direction": direction, "outcome": outcome})
