"""The satellite poller's fetch -> store -> ack, without Ray: an in-memory network and a store each test holds and
releases."""

from __future__ import annotations

import asyncio
import threading

from messaging.intake.satellite_poll import DevicePoller
from messaging.runtime.config import Config
from messaging.satellite.transport import DevicePacket
from tests.waiting import eventually


class _Network:
    """A polled network holding packets until acked; each ack records what was stored at that moment."""

    name = "test"
    polled = True

    def __init__(self, packets: list[DevicePacket], stored: set[int]) -> None:
        self.pending = list(packets)
        self.stored = stored
        self.acks: list[tuple[int, bool]] = []  # (packet id, stored when acked)
        self._lock = threading.Lock()

    def fetch_batch(self, count: int) -> tuple[list[DevicePacket], list]:
        with self._lock:
            return list(self.pending[:count]), []

    def ack(self, packet_id: int) -> None:
        with self._lock:
            self.acks.append((packet_id, packet_id in self.stored))
            self.pending = [p for p in self.pending if p.packet_id != packet_id]

    def acked(self) -> set[int]:
        with self._lock:
            return {packet_id for packet_id, _ in self.acks}


def _packet(device_id: int, packet_id: int) -> DevicePacket:
    return DevicePacket(key=f"test:{packet_id}", device_id=device_id, packet_id=packet_id, data="AA==")


def _poller(network: _Network, store) -> DevicePoller:
    poller = DevicePoller(
        Config(pool_size=1, swarm_poll_count=100), {network.name: network}, users=None, store=None, index=0
    )
    poller._store = store
    return poller


def test_each_devices_packets_are_acked_once_stored_while_another_device_is_still_being_stored():
    stored: set[int] = set()
    network = _Network([_packet(1, 11), _packet(2, 21), _packet(1, 12), _packet(2, 22), _packet(3, 31)], stored)

    async def scenario() -> None:
        release = {1: asyncio.Event(), 2: asyncio.Event(), 3: asyncio.Event()}

        async def store(packets: list[DevicePacket]) -> list[DevicePacket]:
            await release[packets[0].device_id].wait()
            if packets[0].device_id == 3:
                return []  # not stored (e.g. the database is away): stays at the network for the next poll
            stored.update(p.packet_id for p in packets)
            return packets

        poller = _poller(network, store)
        poll = asyncio.create_task(poller._poll_network(network))
        release[1].set()
        await eventually(lambda: network.acked() == {11, 12}, what="device 1's packets acked")
        assert not poll.done(), "device 2 is still being stored"
        release[2].set()
        release[3].set()
        assert await poll == (4, False)
        if poller._ack_threads is not None:
            poller._ack_threads.shutdown()

    asyncio.run(scenario())
    assert network.acked() == {11, 12, 21, 22}
    assert all(was_stored for _, was_stored in network.acks), "never an ack before the packet is stored"
    assert [p.packet_id for p in network.pending] == [31]
