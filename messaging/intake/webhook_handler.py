"""What the webhooks decide, apart from HTTP and Serve: each call takes the request's bytes and headers and
gives the answer to send (:class:`Reply`). The Serve deployment (:mod:`messaging.intake.webhooks`) only adapts.

* :meth:`WebhookHandler.sms` Twilio's inbound-SMS webhook: signature checked against TWILIO_WEBHOOK_PUBLIC_URL
  (403 if wrong), stored with the user desk, then ``200`` with empty TwiML; ``503`` when it could not be
  stored within SMS_WEBHOOK_TIMEOUT, well inside Twilio's 15 s, or was not stored because its sender is over
  INBOUND_PER_SENDER_PER_HOUR (Twilio retries as the URL's ``#rc=..&rp=..`` overrides allow; what it never
  delivers, the reconciliation sweep stores). A malformed webhook gets ``400``.
* :meth:`WebhookHandler.swarm` the Hive's push webhook (one packet JSON, or a list): header ``X-Swarm-Secret``
  must equal SWARM_WEBHOOK_SECRET; same intake path as the satellite poll; ``200`` once stored, ``503``
  otherwise.

Its collaborators are given to it: the user desk (``LocalUsers``: ``index_for``, ``acall``) and the store (``submit``,
``submit_many``; by default a :class:`UserStore` over the desk's ``intake_many``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator

from messaging.intake import rockblock_webhook
from messaging.intake.device_packets import by_device, dead_letter_malformed, intake_device_packets
from messaging.intake.user_store import UserStore
from messaging.runtime.config import Config
from messaging.satellite import rockblock
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import DevicePacket, MalformedItem
from messaging.sms.twilio import EMPTY_TWIML, BadWebhook, parse_inbound_sms

log = logging.getLogger("messaging.intake.webhooks")


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body and its media type."""

    status: int
    body: str
    media_type: str = "text/plain"


def read_packets(payload: object) -> tuple[list[DevicePacket], list[MalformedItem]]:
    """A Swarm push body (one packet object, or a list) as readable packets and the items that are not."""
    return SwarmNetwork.read_push(payload)


def signature_urls(public_url: str) -> list[str]:
    """The URLs a Twilio signature may be over: a connection-override fragment (``#rc=5&rp=all``) is not sent
    by Twilio with the request, so the URL without it comes first; each as written, then with its default
    port added or its port taken off (Twilio signs one or the other, as its own validator allows)."""
    bases = [public_url.split("#", 1)[0], public_url] if "#" in public_url else [public_url]
    urls: list[str] = []
    for url in bases:
        parts = urlsplit(url)
        host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
        default_port = 443 if parts.scheme == "https" else 80
        for netloc in (parts.netloc, host, f"{host}:{parts.port or default_port}"):
            variant = parts._replace(netloc=netloc).geturl()
            if variant not in urls:
                urls.append(variant)
    return urls


class WebhookHandler:
    def __init__(self, config: Config, users: Any, store: Any = None):
        self.config = config
        self.users = users
        if store is None:
            store = UserStore(config, users)
        self.store = store
        self.rockblock_key = rockblock.public_key(config)  # a missing or unreadable key file refuses to start
        # Made once, not per webhook: the signer and the URLs a signature may be over.
        self._twilio = RequestValidator(config.twilio_auth_token) if config.twilio_auth_token else None
        public_url = config.twilio_webhook_public_url
        self._signed_urls = signature_urls(public_url) if public_url else []

    async def rockblock(self, body: bytes, content_type: str) -> Reply:
        """One RockBLOCK MO post (see messaging/intake/rockblock_webhook.py)."""
        status, text = await rockblock_webhook.take_post(body, content_type, self.rockblock_key, self.users, self.store)
        return Reply(status, text)

    def signed_by_twilio(self, params: dict[str, str], signature: str) -> bool:
        """Twilio's HMAC of ``params`` posted to one of the public URLs (stops at the first that matches)."""
        if self._twilio is None or not signature:
            return False
        given = signature.encode("utf-8", "replace")
        return any(
            hmac.compare_digest(self._twilio.compute_signature(url, params).encode(), given)
            for url in self._signed_urls
        )

    async def sms(self, body: bytes, signature: str, peer: str = "?") -> Reply:
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if not self.signed_by_twilio(params, signature):
            log.warning("sms webhook: bad signature from %s", peer)
            return Reply(403, "invalid signature")
        try:
            msg = parse_inbound_sms(params)
        except BadWebhook as exc:
            return Reply(400, str(exc))
        try:
            async with asyncio.timeout(self.config.sms_webhook_timeout):
                result = await self.store.submit(self.users.index_for(msg.routing_key()), msg)
        except Exception as exc:  # pool down, slow, database trouble: 503 (Twilio may retry; reconciliation will)
            log.warning("sms %s not stored: %s: %s", msg.idempotency_key, type(exc).__name__, exc)
            return Reply(503, "temporarily unavailable")
        if not result.stored:  # a temporary refusal (this number's hourly limit to the user): Twilio retries
            log.info("sms %s not stored (%s): answering 503", msg.idempotency_key, result.verdict.value)
            return Reply(503, "too many messages, try again later")
        # The message's own line (outbox/store.py) says it was stored; this one only ties the SID to its id.
        log.debug("sms %s -> message %s (%s)", msg.idempotency_key, result.message_id, result.verdict.value)
        return Reply(200, EMPTY_TWIML, "text/xml")

    async def swarm(self, body: bytes, secret: str) -> Reply:
        expected = self.config.swarm_webhook_secret
        if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
            return Reply(403, "forbidden")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return Reply(400, f"bad request: body is not JSON: {exc}")
        packets, malformed = read_packets(payload)
        timeout = self.config.smtp_store_timeout
        try:
            for group in by_device(packets).values():
                safe = await intake_device_packets(group, self.users, self.store, timeout=timeout)
                if not all(safe):
                    return Reply(503, "not stored")
            dead = await dead_letter_malformed(malformed, self.users, timeout=timeout)
        except Exception as exc:  # pool down, database trouble: the Hive pushes again
            log.warning("swarm webhook: not stored: %s: %s", type(exc).__name__, exc)
            return Reply(503, "temporarily unavailable")
        if len(dead) < sum(1 for m in malformed if m.packet_id is not None):
            return Reply(503, "not stored")
        answer = {"stored": len(packets), "dead_lettered": len(malformed)}
        return Reply(200, json.dumps(answer), "application/json")
