"""Turning Hive packets into stored messages: shared by the satellite poll and the /swarm webhook.

A packet may be acknowledged to the Hive only when this says so: every message in it is stored, or the
packet is stored as a dead letter because it can never be decoded.
"""

from __future__ import annotations

import asyncio
import logging

from messaging.core.codec import PacketDecodeError, decode_hive_packet
from messaging.runtime.batching import CallBatcher
from messaging.runtime.pool import NamedPool
from messaging.satellite.swarm import HivePacket, MalformedPacket

log = logging.getLogger("messaging.intake.device_packets")


async def intake_device_packets(
    packets: list[HivePacket], users: NamedPool, store: CallBatcher, *, timeout: float = 20.0
) -> list[bool]:
    """Store the messages of one device's packets, in order, through its user actor (one call when the
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
            decoded = decode_hive_packet(packet.data, device_id=packet.device_id, packet_id=packet.packet_id)
        except PacketDecodeError as exc:
            log.warning("packet %s from device %s undecodable: %s", packet.packet_id, device_id, exc)
            await users.acall(
                idx,
                "dead_letter",
                f"hive:{packet.packet_id}",
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
        log.debug(  # the user actor logs the stored message (its key names the packet)
            "packet %s message %s -> %s (%s)",
            packets[n].packet_id,
            result.message_id,
            result.verdict.value,
            message.idempotency_key,
        )
    return safe


async def dead_letter_malformed(items: list[MalformedPacket], users: NamedPool, *, timeout: float = 20.0) -> list[int]:
    """Store Hive items that are not readable packets as dead letters, each on its own (one failing never
    holds back another). Returns the packet ids now safe to ack (items without a usable id cannot be acked:
    the Hive shows them again, and storing them again stores nothing new)."""

    async def store(item: MalformedPacket) -> int | None:
        try:
            await users.acall(
                users.index_for(item.key()),
                "dead_letter",
                item.key(),
                f"device:{item.device_id}" if item.device_id is not None else "hive",
                item.raw,
                f"malformed Hive item: {item.reason}",
                item.device_id,
                timeout=timeout,
            )
        except Exception as exc:  # stays at the Hive for the next poll
            log.warning("malformed packet %s not stored: %s: %s", item.packet_id, type(exc).__name__, exc)
            return None
        return item.packet_id

    stored = await asyncio.gather(*(store(item) for item in items))
    return [packet_id for packet_id in stored if packet_id is not None]


def by_device(packets: list[HivePacket]) -> dict[int, list[HivePacket]]:
    """Packets grouped per device, each group in the order given (the Hive's order)."""
    groups: dict[int, list[HivePacket]] = {}
    for packet in packets:
        groups.setdefault(packet.device_id, []).append(packet)
    return groups
