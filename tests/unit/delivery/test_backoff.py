"""The pauses of the retries outside the outbox's stored schedule, without Ray: the Hive poll's backoff and the
SMTP listener's. The poller's loop runs on a poll that fails as told; the mail server's methods run on a stand-in
``self``; asyncio's sleep is recorded, not slept."""

from __future__ import annotations

import asyncio
import logging
import types

import pytest

from messaging.intake.satellite_poll import DevicePoller
from messaging.intake.smtp.server import MailServer
from messaging.runtime.config import Config


@pytest.fixture
def pauses(monkeypatch) -> list[float]:
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay, *args, **kwargs):
        recorded.append(float(delay))
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return recorded


def test_hive_poll_backs_off_from_twice_the_last_pause_to_300s_and_resets_after_a_poll(pauses, caplog):
    outcomes = [OSError("hive down")] * 3 + [5] + [OSError("hive down")] + [2] + [OSError("hive down")] * 9 + [1]
    poller = DevicePoller(Config(swarm_poll_interval=10.0), {}, users=None, store=None, index=0)

    async def poll_once() -> int:
        outcome = outcomes.pop(0)
        if not outcomes:
            poller._stopping = True
        if isinstance(outcome, Exception):
            raise outcome
        poller.full_batch = outcome == 5  # a full batch: poll again at once
        return outcome

    poller.poll_once = poll_once
    with caplog.at_level(logging.WARNING, logger="messaging.intake.satellite_poll"):
        asyncio.run(poller._poll_loop())
    assert pauses == [20.0, 40.0, 80.0, 0, 1.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0, 300.0, 300.0, 10.0]
    assert [r.getMessage() for r in caplog.records].count("satellite poll failed: hive down") == 13


def test_hive_poll_stops_after_its_pause_when_stopping_meanwhile(pauses):
    poller = DevicePoller(Config(swarm_poll_interval=10.0), {}, users=None, store=None, index=0)
    polls = []

    async def poll_once() -> int:
        polls.append(1)
        poller._stopping = True  # a drain comes while this poll fails
        raise OSError("hive down")

    poller.poll_once = poll_once
    asyncio.run(poller._poll_loop())
    assert polls == [1] and pauses == [20.0]


def test_smtp_listener_retries_binding_doubling_to_30s(pauses, caplog):
    actor_class = MailServer
    server = types.SimpleNamespace(config=Config(), server=None, _ingress_wanted=False, _labelling=None)
    failures = [OSError("address in use")] * 8

    async def bind() -> None:
        if failures:
            raise failures.pop()
        server.server = object()

    server._bind = bind
    server._cannot_listen = types.MethodType(actor_class._cannot_listen, server)
    with caplog.at_level(logging.ERROR, logger="messaging.intake.smtp.server"):
        asyncio.run(actor_class._listen(server))
    assert server.server is not None
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 8 and messages[0].endswith("address in use; retrying in 0s")
    assert messages[-1].endswith("retrying in 30s")
