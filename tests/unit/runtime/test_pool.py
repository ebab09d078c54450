"""NamedPool's waits without Ray: the name lookup (``try_get``) and the members' handles are stood in for.
Only the asynchronous calls are driven here: the synchronous ``call`` goes through ``ray.get``, which would
start Ray (the end-to-end tests cover it)."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest
from ray.exceptions import RayActorError

from messaging.runtime.pool import NamedPool, PoolUnavailable


class Ref:
    def __init__(self, outcome):
        self.outcome = outcome

    def future(self) -> Future:
        f: Future = Future()
        if isinstance(self.outcome, BaseException):
            f.set_exception(self.outcome)
        else:
            f.set_result(self.outcome)
        return f


class Handle:
    """A member's handle whose ``echo`` answers with the next scripted outcome."""

    def __init__(self, outcomes: list):
        self.outcomes = outcomes
        self.echo = self

    def remote(self, *args):
        return Ref(self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0])


class ScriptedPool(NamedPool):
    """The name resolves to ``handles`` in turn (None: not up yet); every lookup is counted."""

    def __init__(self, handles: list, **options):
        super().__init__("user", 1, "test", **options)
        self.handles = handles
        self.lookups = 0

    def try_get(self, idx: int):
        self.lookups += 1
        cached = self._handles.get(idx)
        if cached is not None:
            return cached
        handle = self.handles.pop(0) if len(self.handles) > 1 else self.handles[0]
        if handle is not None:
            self._handles[idx] = handle
        return handle


def test_get_waits_for_the_name_to_resolve():
    handle = Handle(["ok"])
    pool = ScriptedPool([None, None, handle], wait_timeout=30.0)
    assert pool.get(0) is handle and pool.lookups == 3
    pool = ScriptedPool([None, None, handle], wait_timeout=30.0)
    assert asyncio.run(pool.aget(0)) is handle and pool.lookups == 3


def test_get_gives_up_after_wait_timeout():
    pool = ScriptedPool([None], wait_timeout=0.0)
    with pytest.raises(PoolUnavailable, match="user_0 did not come up in 0s"):
        pool.get(0)
    assert pool.lookups == 1
    with pytest.raises(PoolUnavailable, match="user_0 did not come up"):
        asyncio.run(pool.aget(0))


def test_a_gone_member_is_resolved_again_and_called_once_more():
    gone, replacement = Handle([RayActorError()]), Handle(["answer"])
    pool = ScriptedPool([gone, replacement])
    assert asyncio.run(pool.acall(0, "echo", timeout=30.0)) == "answer"


def test_a_member_gone_for_the_whole_timeout_is_unavailable():
    pool = ScriptedPool([Handle([RayActorError()])])
    with pytest.raises(PoolUnavailable, match="user_0 unavailable"):
        asyncio.run(pool.acall(0, "echo", timeout=0.3))
    assert pool.lookups >= 2, "resolved again between the calls"
    assert pool._handles == {}, "the gone handle is not kept"


def test_other_errors_of_a_call_are_not_retried():
    pool = ScriptedPool([Handle([ValueError("bad input")])])
    with pytest.raises(ValueError, match="bad input"):
        asyncio.run(pool.acall(0, "echo", timeout=30.0))
    assert pool.lookups == 1


class Silent:
    """A member that never answers."""

    def __init__(self):
        self.echo = self

    def remote(self, *args):
        return self

    def future(self) -> Future:
        return Future()


def test_a_member_that_does_not_answer_in_time_is_unavailable_without_a_second_call():
    pool = ScriptedPool([Silent()])
    with pytest.raises(PoolUnavailable, match="user_0 did not answer in time"):
        asyncio.run(pool.acall(0, "echo", timeout=0.05))
    assert pool.lookups == 1, "not resolved again: the member is up, only slow"
