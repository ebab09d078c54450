"""Turning device packets from any satellite network into stored messages: shared by the satellite poll and
the push webhooks.

A packet may be acknowledged to its network only when this says so: every message in it is stored, or the
packet is stored as a dead letter because it can never be decoded.
"""

from __future__ import annotations

import asyncio
import logging

from messaging.core.codec import PacketDecodeError
from messaging.intake.user_store import UserStore
from messaging.runtime.pool import NamedPool
from messaging.satellite.transport import DevicePacket, MalformedItem

log = logging.getLogger("messaging.intake.device_packets")


async def intake_device_packets(
    packets: list[DevicePacket], users: NamedPool, store: UserStore, *, timeout: float = 20.0
) -> list[bool]:
    """Store the messages of one device's packets, in order, through the user desk (one batch when the
    batcher can). Returns, per packet, whether it is safe to ack; raises when nothing could be stored."""
    if not packets:
        return []
    device_id = packets[0].device_id
    if any(p.device_id != device_id for p in packets):
        raise ValueError("intake_device_packets takes the packets of one device")
    idx = users.index_for(f"device:{device_id}")
    messages, owners = [], []
    for n, packet in enumerate(packets):
        try:
            decoded = packet.messages()
        except PacketDecodeError as exc:
            log.warning("packet %s from device %s undecodable: %s", packet.packet_id, device_id, exc)
            await users.acall(
                idx,
                "dead_letter",
                packet.key,
                f"device:{device_id}",
                packet.data,
                f"undecodable packet: {exc}",
                device_id,
                timeout=timeout,
            )
            continue
        messages.extend(decoded)
        owners.extend([n] * len(decoded))
    results = await store.submit_many(idx, messages) if messages else []
    safe = [True] * len(packets)
    for n, message, result in zip(owners, messages, results, strict=True):
        safe[n] = safe[n] and result.stored
        log.debug(  # the user desk logs the stored message (its key names the packet)
            "packet %s message %s -> %s (%s)",
            packets[n].packet_id,
            result.message_id,
            result.verdict.value,
            message.idempotency_key,
        )
    return safe


async def dead_letter_malformed(items: list[MalformedItem], users: NamedPool, *, timeout: float = 20.0) -> list[int]:
    """Store items a network handed over that are not readable packets as dead letters, each on its own (one
    failing never holds back another). Returns the packet ids now safe to ack (items without a usable id cannot
    be acked: the network hands them over again, and storing them again stores nothing new)."""

    async def store(item: MalformedItem) -> int | None:
        try:
            await users.acall(
                users.index_for(item.key()),
                "dead_letter",
                item.key(),
                f"device:{item.device_id}" if item.device_id is not None else item.key_prefix,
                item.raw,
                f"malformed {item.source} item: {item.reason}",
                item.device_id,
                timeout=timeout,
            )
        except Exception as exc:  # stays at the network for the next poll or push
            log.warning("malformed packet %s not stored: %s: %s", item.packet_id, type(exc).__name__, exc)
            return None
        return item.packet_id

    stored = await asyncio.gather(*(store(item) for item in items))
    return [packet_id for packet_id in stored if packet_id is not None]


def by_device(packets: list[DevicePacket]) -> dict[int, list[DevicePacket]]:
    """Packets grouped per device, each group in the order given (the network's order)."""
    groups: dict[int, list[DevicePacket]] = {}
    for packet in packets:
        groups.setdefault(packet.device_id, []).append(packet)
    return groups
