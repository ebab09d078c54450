"""Calls from many threads at once, round after round: for tests that count the connections a client opens."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_lockstep(threads: int, rounds: int, call: Callable[[int, int], object]) -> None:
    """Run ``call(thread, round)`` in ``threads`` threads, ``rounds`` times each; no thread starts a round before
    every thread has finished the one before, so all ``threads`` calls of a round are in flight together. The
    first error of any call is raised here."""
    barrier = threading.Barrier(threads, timeout=30)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        for number in range(rounds):
            try:
                call(index, number)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread below
                errors.append(exc)
            barrier.wait()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
