"""CallBatcher: calls to one member coalesce while one is in flight; results and failures reach the right caller.
ThreadBatcher: the same for callers in threads.
NotifyGatherer: fire-and-forget calls to one key coalesce within a window; a lone one is not delayed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from messaging.runtime.batching import CallBatcher, NotifyGatherer, ThreadBatcher
from messaging.runtime.pool import PoolUnavailable
from tests.waiting import eventually, wait_until


class GatedPool:
    """Stands in for a NamedPool: records each call's items; a call finishes when the test opens its gate."""

    def __init__(self):
        self.calls: list[tuple[int, list]] = []
        self.gates: list[asyncio.Event] = []
        self.fail_next: Exception | None = None

    async def acall(self, idx, method, items, timeout=None):
        assert method == "double"
        self.calls.append((idx, list(items)))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [item * 2 for item in items]


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_first_item_goes_at_once_then_waiting_items_share_one_call():
    async def scenario():
        pool = GatedPool()
        batcher = CallBatcher(pool, "double", timeout=5)
        first = asyncio.create_task(batcher.submit(0, 1))
        await settle()
        assert pool.calls == [(0, [1])], "nothing in flight: the first item is sent alone, without waiting"
        later = [asyncio.create_task(batcher.submit(0, n)) for n in (2, 3, 4)]
        other = asyncio.create_task(batcher.submit(1, 10))
        await settle()
        assert pool.calls == [(0, [1]), (1, [10])], "items for a busy member wait; another member is not held up"
        pool.gates[0].set()
        assert await first == 2
        await settle()
        assert pool.calls[2] == (0, [2, 3, 4]), "the waiting items go together, in order"
        pool.gates[1].set()
        pool.gates[2].set()
        assert [await t for t in later] == [4, 6, 8]
        assert await other == 20
        assert (batcher.calls, batcher.items) == (3, 5)

    asyncio.run(scenario())


def test_a_failed_call_fails_only_its_own_items():
    async def scenario():
        pool = GatedPool()
        batcher = CallBatcher(pool, "double", timeout=5)
        first = asyncio.create_task(batcher.submit(0, 1))
        await settle()
        second = asyncio.create_task(batcher.submit(0, 2))
        pool.fail_next = PoolUnavailable("user_0 did not answer in time")
        pool.gates[0].set()
        with pytest.raises(PoolUnavailable):
            await first
        await settle()
        pool.gates[1].set()
        assert await second == 4, "the next batch is sent after a failure"

    asyncio.run(scenario())


def test_submit_many_keeps_order_across_batches():
    async def scenario():
        pool = GatedPool()
        batcher = CallBatcher(pool, "double", timeout=5, max_batch=2)
        task = asyncio.create_task(batcher.submit_many(0, [1, 2, 3, 4, 5]))
        for expected in ([1, 2], [3, 4], [5]):
            await settle()
            assert pool.calls[-1] == (0, expected)
            pool.gates[-1].set()
        assert await task == [2, 4, 6, 8, 10]

    asyncio.run(scenario())


def test_a_wrong_number_of_results_is_an_error_not_a_mixup():
    class Short(GatedPool):
        async def acall(self, idx, method, items, timeout=None):
            return [0]

    async def scenario():
        batcher = CallBatcher(Short(), "double", timeout=5)
        with pytest.raises(RuntimeError, match="1 results for 2 items"):
            await batcher.submit_many(0, [1, 2])

    asyncio.run(scenario())


def test_extra_arguments_follow_the_items_in_every_call():
    class Pool:
        calls: list = []

        async def acall(self, idx, method, items, *args, timeout=None):
            self.calls.append((method, list(items), args))
            return list(items)

    async def scenario():
        pool = Pool()
        assert await CallBatcher(pool, "intake_many", timeout=5, args=(False,)).submit(0, "m") == "m"
        assert pool.calls == [("intake_many", ["m"], (False,))]

    asyncio.run(scenario())


def test_a_lone_notification_goes_at_once_and_the_next_ones_together_at_the_window_end():
    async def scenario():
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, list, float]] = []
        gatherer = NotifyGatherer(lambda key, items: sent.append((key, list(items), loop.time())), window=0.1)
        gatherer.add("sat_0", [1])
        assert [s[:2] for s in sent] == [("sat_0", [1])], "nothing went to this key lately: sent at once"
        gatherer.add("sat_0", [2])
        gatherer.add("sat_0", [3])
        gatherer.add("sat_1", [10])
        assert [s[:2] for s in sent] == [("sat_0", [1]), ("sat_1", [10])], "another key is not held up"
        await eventually(lambda: len(sent) == 3)
        assert sent[2][:2] == ("sat_0", [2, 3]), "what came within the window goes together, in order"
        assert sent[2][2] - sent[0][2] >= 0.1 - 0.01, "not before the window ends"
        await eventually(lambda: loop.time() - sent[2][2] >= 0.1)  # a quiet window
        gatherer.add("sat_0", [4])
        assert sent[-1][:2] == ("sat_0", [4]), "after a quiet window, at once again"
        assert (gatherer.sent, gatherer.items) == (4, 5)

    asyncio.run(scenario())


def test_a_full_batch_flush_and_a_failing_send_do_not_wait_or_stop_the_rest():
    async def scenario():
        sent: list[tuple[str, list]] = []

        def send(key, items):
            if key == "broken":
                raise RuntimeError("a bug")
            sent.append((key, list(items)))

        gatherer = NotifyGatherer(send, window=60.0, max_items=3)
        gatherer.add("broken", [0])  # raises inside: logged, the sweep covers it
        gatherer.add("k", [1])
        gatherer.add("k", [2, 3, 4])
        assert sent == [("k", [1]), ("k", [2, 3, 4])], "as many as max_items waiting: sent without the window"
        gatherer.add("k", [5])
        gatherer.add("other", [6])
        gatherer.add("other", [7])
        gatherer.flush()
        assert sent[2:] == [("other", [6]), ("k", [5]), ("other", [7])], "flush: everything waiting goes now"
        assert not gatherer._timers, "a flushed key has no send left pending"

    asyncio.run(scenario())


class GatedCalls:
    """Stands in for the user desk of a ThreadBatcher: records each call; a call finishes when its gate opens."""

    def __init__(self):
        self.calls: list[tuple[int, list]] = []
        self.gates: list[threading.Event] = []
        self.fail: dict[int, Exception] = {}  # call number -> what it raises
        self.lock = threading.Lock()

    def __call__(self, idx, items):
        gate = threading.Event()
        with self.lock:
            self.calls.append((idx, list(items)))
            self.gates.append(gate)
            number = len(self.calls)
        assert gate.wait(10), "the test never opened this call's gate"
        if number in self.fail:
            raise self.fail[number]
        return [item * 2 for item in items]

    def open_all(self):
        with self.lock:
            for gate in self.gates:
                gate.set()


def test_threads_share_a_call_when_theirs_arrive_while_one_runs():
    desk = GatedCalls()
    batcher = ThreadBatcher(desk, lanes=2)
    with ThreadPoolExecutor(max_workers=8) as callers:
        first = callers.submit(batcher.call_each, [(0, 1)], 10)
        wait_until(lambda: len(desk.calls) == 1, what="the first item goes at once, alone")
        later = [callers.submit(batcher.call_each, [(0, n)], 10) for n in (2, 3, 4)]
        other_lane = callers.submit(batcher.call_each, [(1, 5)], 10)
        wait_until(lambda: (1, [5]) in desk.calls, what="another member's call does not wait for this one's")
        wait_until(lambda: len(batcher._waiting.get(0, [])) == 3, what="three items waiting for member 0")
        desk.open_all()
        wait_until(lambda: len(desk.calls) == 3, what="the waiting items go together in one call")
        desk.open_all()
        assert first.result(10) == [2]
        assert [f.result(10) for f in later] == [[4], [6], [8]]
        assert other_lane.result(10) == [10]
    assert desk.calls[2] == (0, [2, 3, 4])


def test_a_thread_call_that_fails_fails_only_its_own_items_and_results_keep_their_order():
    desk = GatedCalls()
    desk.fail[1] = ConnectionError("database gone")
    batcher = ThreadBatcher(desk, lanes=2)
    with ThreadPoolExecutor(max_workers=4) as callers:
        failing = callers.submit(batcher.call_each, [(0, 1)], 10)
        wait_until(lambda: len(desk.calls) == 1, what="the first call is made")
        mixed = callers.submit(batcher.call_each, [(1, 7), (0, 2), (1, 8)], 10)
        wait_until(lambda: len(desk.calls) == 2, what="the other member's call is made")
        desk.open_all()
        with pytest.raises(ConnectionError):
            failing.result(10)
        wait_until(lambda: len(desk.calls) == 4, what="the next calls of both members are made")
        desk.open_all()
        assert mixed.result(10) == [14, 4, 16]


def test_a_thread_caller_that_times_out_gets_timeout_error_and_its_unsent_items_are_left_out():
    desk = GatedCalls()
    batcher = ThreadBatcher(desk, lanes=1)
    with ThreadPoolExecutor(max_workers=4) as callers:
        blocking = callers.submit(batcher.call_each, [(0, 1)], 10)
        wait_until(lambda: len(desk.calls) == 1, what="the first call is made")
        with pytest.raises(TimeoutError):
            batcher.call_each([(0, 2)], 0.2)  # its call cannot start while the first runs
        after = callers.submit(batcher.call_each, [(0, 3)], 10)
        desk.open_all()
        assert blocking.result(10) == [2]
        wait_until(lambda: len(desk.calls) == 2, what="the next call is made")
        desk.open_all()
        assert after.result(10) == [6]
    assert desk.calls[1] == (0, [3])  # the item whose caller gave up was never sent
