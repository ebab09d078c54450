"""CallBatcher: calls to one member coalesce while one is in flight; results and failures reach the right caller.
NotifyGatherer: fire-and-forget calls to one key coalesce within a window; a lone one is not delayed."""

from __future__ import annotations

import asyncio

import pytest

from messaging.runtime.batching import CallBatcher, NotifyGatherer
from messaging.runtime.pool import PoolUnavailable
from tests.waiting import eventually


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
