"""RockBLOCK's MO webhook (``POST /rockblock``): what to do with one post, and doing it.

Ground Control posts each message from a RockBLOCK (form-encoded, or JSON) with an RS256 ``JWT`` over its fields,
and retries until we answer 200; it waits 3 seconds for that answer. So:

* a post whose JWT the configured key does not verify (or whose fields differ from the signed ones) is refused
  with ``403`` and nothing is stored: anyone can post to the URL;
* a verified post whose fields cannot be read (``BadPost``) can never be read, however often it comes: it is
  stored as a dead letter and answered ``200``, so it is not redelivered forever (and stored once: its key is a
  digest of the post);
* otherwise its packet is stored like any device packet (``intake/device_packets.py``: an undecodable payload,
  bad hex or protobuf, is a dead letter there), and answered ``200`` only once stored; ``503`` when it could not
  be stored within ``MO_STORE_TIMEOUT`` (Ground Control posts it again; its key is ``imei:momsn:transmit_time``,
  so a redelivery stores nothing new).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from messaging.intake.device_packets import intake_device_packets
from messaging.intake.user_store import UserStore
from messaging.runtime.pool import NamedPool
from messaging.satellite.rockblock import KEY_PREFIX, BadPost, ForgedPost, verify_post
from messaging.satellite.transport import DevicePacket, MalformedItem

log = logging.getLogger("messaging.intake.rockblock_webhook")

MO_STORE_TIMEOUT = 2.5  # seconds: Ground Control waits 3 for our answer; past this we answer 503 in time


class UnreadableBody(ValueError):
    """A body that is neither a form nor a JSON object."""


@dataclass(frozen=True)
class MoDecision:
    """What one post is: ``forged`` (403, nothing stored), a ``dead_letter`` to store, or a ``packet`` to store."""

    forged: str = ""
    dead_letter: MalformedItem | None = None
    packet: DevicePacket | None = None


def read_body(body: bytes, content_type: str) -> dict[str, Any]:
    """The posted fields: JSON (``HTTP_JSON``) or a form (``HTTP_POST``)."""
    if "json" in content_type.lower():
        try:
            fields = json.loads(body)
        except ValueError as exc:
            raise UnreadableBody(f"body is not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise UnreadableBody(f"expected a JSON object, got {type(fields).__name__}")
        return fields
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnreadableBody(f"body is not a form: {exc}") from None


def decide(fields: dict[str, Any], public_key: str) -> MoDecision:
    """Pure: what the post with these fields is (see the module docstring)."""
    try:
        post = verify_post(fields, public_key)
    except ForgedPost as exc:
        return MoDecision(forged=str(exc))
    except BadPost as exc:
        signed = {k: v for k, v in fields.items() if k != "JWT"}
        item = MalformedItem.of(KEY_PREFIX, signed, str(exc), packet_id=None, device_id=None)
        return MoDecision(dead_letter=item)
    return MoDecision(packet=post.device_packet())


async def store_dead_letter(item: MalformedItem, users: NamedPool, *, timeout: float) -> None:
    key = item.key()
    await users.acall(
        users.index_for(key),
        "dead_letter",
        key,
        item.key_prefix,
        item.raw,
        f"unreadable RockBLOCK post: {item.reason}",
        None,
        timeout=timeout,
    )


async def take_post(
    body: bytes, content_type: str, public_key: str, users: NamedPool, store: UserStore
) -> tuple[int, str]:
    """Handle one post: the HTTP status and text to answer with."""
    try:
        fields = read_body(body, content_type)
    except UnreadableBody as exc:
        return 400, f"bad request: {exc}"
    decision = decide(fields, public_key)
    if decision.forged:
        log.warning("rockblock post refused: %s", decision.forged)
        return 403, "forbidden"
    try:
        if decision.dead_letter is not None:
            await asyncio.wait_for(
                store_dead_letter(decision.dead_letter, users, timeout=MO_STORE_TIMEOUT), MO_STORE_TIMEOUT
            )
            return 200, "stored as a dead letter"
        packet = decision.packet
        assert packet is not None
        (safe,) = await asyncio.wait_for(
            intake_device_packets([packet], users, store, timeout=MO_STORE_TIMEOUT), MO_STORE_TIMEOUT
        )
    except Exception as exc:  # slow, pool down, database trouble: Ground Control posts it again
        log.warning("rockblock post not stored: %s: %s", type(exc).__name__, exc)
        return 503, "temporarily unavailable"
    if not safe:
        return 503, "not stored"
    return 200, "OK"
