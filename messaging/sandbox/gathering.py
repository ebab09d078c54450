"""Holding a fake's calls until several are in flight together, for tests of pooled clients (the HTTP fakes)."""

from __future__ import annotations

import threading


class Gathering:
    """``hold(n)``: each ``arrive()`` waits until ``n`` callers are waiting, then all go on, so a test sees how many
    connections that many concurrent callers use; ``hold(None)`` lets each go at once again. A round in which
    fewer than ``n`` came goes on after 10 s anyway."""

    def __init__(self) -> None:
        self._barrier: threading.Barrier | None = None

    def hold(self, calls: int | None) -> None:
        self._barrier = threading.Barrier(calls, timeout=10) if calls else None

    def arrive(self) -> None:
        barrier = self._barrier
        if barrier is not None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:  # not that many came: answer anyway
                pass
