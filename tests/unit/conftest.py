"""Fakes of the remote services the unit tests share, each on loopback over a real socket."""

from __future__ import annotations

import pytest


@pytest.fixture
def dns():
    """The DNS the mail server's sender checks ask: a server on loopback (no test depends on outside DNS)."""
    from messaging.sandbox.fake_dns import FakeDNS

    with FakeDNS() as server:
        yield server


@pytest.fixture
def hive():
    """A fake Swarm Hive with its default account and any device."""
    from messaging.sandbox.fake_hive import FakeHive

    with FakeHive() as fake:
        yield fake
