"""Turning a Hive packet into stored messages: shared by the satellite poll and the /swarm webhook.

A packet may be acknowledged to the Hive only when this returns True: every message in it is stored,
or the packet is stored as a dead letter because it can never be decoded.
"""

from __future__ import annotations

import asyncio
import logging

from .codec import PacketDecodeError, decode_hive_packet
from .hive import HivePacket
from .pool import NamedPool

log = logging.getLogger("messaging.intake")


async def intake_hive_packet(packet: HivePacket, users: NamedPool, *, timeout: float = 20.0) -> bool:
    """Store every message of ``packet`` through the user pool. True when it is safe to ack."""
    device_key = f"device:{packet.device_id}"
    idx = users.index_for(device_key)
    try:
        messages = decode_hive_packet(packet.data, device_id=packet.device_id, packet_id=packet.packet_id)
    except PacketDecodeError as exc:
        log.warning("packet %s from device %s undecodable: %s", packet.packet_id, packet.device_id, exc)
        await users.acall(
            idx,
            "dead_letter",
            f"hive:{packet.packet_id}",
            device_key,
            packet.data,
            f"undecodable packet: {exc}",
            packet.device_id,
            timeout=timeout,
        )
        return True
    results = await asyncio.gather(
        *(users.acall(users.index_for(m.routing_key()), "intake", m, timeout=timeout) for m in messages)
    )
    stored = all(r.stored for r in results)
    for m, r in zip(messages, results, strict=True):
        log.info(
            "packet %s message %s -> %s (%s)",
            packet.packet_id,
            r.message_id,
            r.verdict.value,
            m.idempotency_key,
        )
    return stored
