"""The satellite poll: fetch device packets from the polled networks, store them with this process's user desk, and
ack each packet only once every message in it is stored (e.g. Swarm's rxack).

``DevicePoller`` runs inside the sender actor (``delivery/senders.py``), on its event loop: the network clients
and the outbox are sync, so fetches and acks run in threads. Which network does what is behind
``satellite/transport.py``; nothing here is specific to one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from messaging.intake.device_packets import by_device, dead_letter_malformed, intake_device_packets
from messaging.intake.user_store import UserStore
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool
from messaging.satellite.transport import SatelliteNetwork

log = logging.getLogger("messaging.intake.satellite_poll")

ACK_CONCURRENCY = 16  # acks in flight at once per poller (the network client keeps a connection for each)
TAKEOVER_AFTER = 30.0  # seconds a packet may wait for its own poller before any other takes it


def takes_packet(
    packet_id: int, index: int, pool_size: int, waited: float, takeover_after: float = TAKEOVER_AFTER
) -> bool:
    """Does poller ``index`` handle this packet? Each packet has one owner (packet id modulo the pool), so
    pollers do not all store and ack the same packets; one left waiting (its owner is down) goes to anyone."""
    return packet_id % pool_size == index or waited >= takeover_after


class DevicePoller:
    """Polls every polled network in ``networks`` (this member's share of their packets: ``index`` of the pool)
    until ``stop``; ``polling`` is True inside a batch (fetch -> store -> ack), which a drain waits out."""

    def __init__(
        self, config: Config, networks: dict[str, SatelliteNetwork], users: NamedPool, store: UserStore, index: int
    ):
        self.config = config
        self.networks = networks
        self.users = users
        self.store = store
        self.index = index
        self._first_seen: dict[str, dict[int, float]] = {}  # per network: packet id -> when first fetched
        self.full_batch = False
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._ack_threads: ThreadPoolExecutor | None = None  # made at the first ack
        self.polled = 0
        self.polling = False

    def start(self) -> None:
        """Start polling (idempotent); on the running event loop."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._poll_loop())

    def stop(self) -> None:
        """No batch after the current one."""
        self._stopping = True

    async def poll_once(self) -> int:
        """Fetch one batch, store it, ack what was stored. Returns the number of packets acked."""
        self.polling = True
        try:
            return await self._poll_batch()
        finally:
            self.polling = False

    async def _poll_batch(self) -> int:
        """One batch from each polled network: this member's share of the pending packets, stored (each device's
        in order), then acked."""
        polled = [network for network in self.networks.values() if network.polled]
        acked = await asyncio.gather(*(self._poll_network(network) for network in polled))
        self.full_batch = any(full for _, full in acked)
        return sum(count for count, _ in acked)

    async def _poll_network(self, network: SatelliteNetwork) -> tuple[int, bool]:
        """One batch from one network: packets acked, and whether the batch was full."""
        packets, malformed = await asyncio.to_thread(network.fetch_batch, self.config.swarm_poll_count)
        full = len(packets) + len(malformed) >= self.config.swarm_poll_count
        now = time.monotonic()
        ids = [p.packet_id for p in packets] + [m.packet_id for m in malformed if m.packet_id is not None]
        seen = self._first_seen.get(network.name, {})
        seen = self._first_seen[network.name] = {i: seen.get(i, now) for i in ids}

        def mine(packet_id: int | None) -> bool:
            if packet_id is None:  # no id to share by: the first poller stores it
                return self.index == 0
            return takes_packet(packet_id, self.index, self.config.pool_size, now - seen[packet_id])

        share = [p for p in packets if mine(p.packet_id)]

        async def store_then_ack(device_packets: list) -> int:
            return await self._ack(network, [packet.packet_id for packet in await self._store(device_packets)])

        async def dead_letters_then_ack() -> int:
            stored = await dead_letter_malformed(
                [m for m in malformed if mine(m.packet_id)], self.users, timeout=self.config.smtp_store_timeout
            )
            return await self._ack(network, stored)

        # each device's packets are acked as soon as they are stored, while other devices' are still being stored
        groups = [store_then_ack(group) for group in by_device(share).values()]
        acked = sum(await asyncio.gather(*groups, dead_letters_then_ack()))
        self.polled += acked
        return acked, full

    async def _ack(self, network: SatelliteNetwork, packet_ids: list[int]) -> int:
        """Ack stored packets, ACK_CONCURRENCY at once over the network client's kept-alive connections (in
        threads of their own: the event loop's default ones also run the deliveries). Returns how many were acked;
        one not acked is seen again at the next poll, stored already, and acked then."""
        if not packet_ids:
            return 0
        if self._ack_threads is None:
            self._ack_threads = ThreadPoolExecutor(max_workers=ACK_CONCURRENCY, thread_name_prefix="satellite-ack")
        loop = asyncio.get_running_loop()

        async def ack(packet_id: int) -> bool:
            try:
                await loop.run_in_executor(self._ack_threads, network.ack, packet_id)
            except Exception as exc:  # stored already: the next poll sees it again and acks it then
                log.warning("packet %s stored but not acked (%s); acking it next poll", packet_id, exc)
                return False
            return True  # (the network's client logs the ack, at DEBUG: the message's line said it was stored)

        return sum(await asyncio.gather(*(ack(packet_id) for packet_id in packet_ids)))

    async def _store(self, packets: list) -> list:
        """Store one device's packets in order; the packets that may be acked (up to the first that could not)."""
        try:
            safe = await intake_device_packets(packets, self.users, self.store, timeout=self.config.smtp_store_timeout)
        except Exception as exc:  # pool down, database trouble: the packets stay at their network for the next poll
            log.warning("device %s: %d packets not stored (%s)", packets[0].device_id, len(packets), exc)
            return []
        ok = []
        for packet, stored in zip(packets, safe, strict=True):
            if not stored:
                break
            ok.append(packet)
        return ok

    async def _poll_loop(self) -> None:
        delay = self.config.swarm_poll_interval
        while not self._stopping:
            # a network down, auth trouble: keep polling, with backoff from twice the last pause (at least 1 s) to 300 s
            got = await AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                wait=wait_exponential(multiplier=min(max(delay * 2, 1.0), 300.0), max=300.0),
                before_sleep=lambda state: log.warning("satellite poll failed: %s", state.outcome.exception()),
            )(self._poll_unless_stopping)
            if got is None:
                break
            delay = 0 if (got and self.full_batch) else self.config.swarm_poll_interval
            await asyncio.sleep(delay)

    async def _poll_unless_stopping(self) -> int | None:
        return None if self._stopping else await self.poll_once()
