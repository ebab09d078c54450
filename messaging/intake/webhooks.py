"""The HTTP side, as one Ray Serve deployment (FastAPI ingress).

* ``POST /sms``   Twilio's inbound-SMS webhook: signature checked against TWILIO_WEBHOOK_PUBLIC_URL (403 if
  wrong), stored through the user pool, then ``200`` with empty TwiML; ``503`` when it could not be stored
  within SMS_WEBHOOK_TIMEOUT, well inside Twilio's 15 s, or was not stored because its sender is over
  INBOUND_PER_SENDER_PER_HOUR (Twilio retries as the URL's ``#rc=..&rp=..`` overrides allow; what it never
  delivers, the reconciliation sweep stores). A malformed webhook gets ``400``.
* ``POST /swarm`` the Hive's push webhook (one packet JSON, or a list): header ``X-Swarm-Secret`` must equal
  SWARM_WEBHOOK_SECRET; same intake path as the satellite poll; ``200`` once stored, ``503`` otherwise.
* ``POST /rockblock`` RockBLOCK's MO webhook (form or JSON, RS256 JWT checked with ROCKBLOCK_JWT_PUBLIC_KEY_FILE):
  ``403`` when forged, ``200`` once stored (an unreadable post as a dead letter), ``503`` otherwise, within
  Ground Control's 3 s (messaging/intake/rockblock_webhook.py).
* ``GET /healthz`` liveness.
* everything else: the Django admin (Django's ASGI app mounted at ``/``).
"""

import asyncio
import hmac
import json
import logging
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request, Response
from ray import serve

from messaging.intake import rockblock_webhook
from messaging.intake.device_packets import by_device, dead_letter_malformed, intake_device_packets
from messaging.runtime.batching import CallBatcher
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool
from messaging.satellite import rockblock
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import DevicePacket, MalformedItem
from messaging.sms.twilio import EMPTY_TWIML, BadWebhook, parse_inbound_sms, validate_signature

log = logging.getLogger("messaging.intake.webhooks")


def read_packets(payload: object) -> tuple[list[DevicePacket], list[MalformedItem]]:
    """A Swarm push body (one packet object, or a list) as readable packets and the items that are not."""
    return SwarmNetwork.read_push(payload)


app = FastAPI(title="Space Beaver webhooks", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
@serve.ingress(app)
class Webhooks:
    def __init__(self, config: Config, users: NamedPool, mount_admin: bool = True):
        self.config = config
        self.users = users
        self.store = CallBatcher(users, "intake_many", timeout=config.smtp_store_timeout)
        self.rockblock_key = rockblock.public_key(config)  # a missing or unreadable key file refuses to start
        if mount_admin:
            from messaging.runtime.djangoenv import ensure_django

            ensure_django()
            from django.core.asgi import get_asgi_application

            app.mount("/", get_asgi_application())

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {"ok": True}

    @app.post("/sms")
    async def sms(self, request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        signature = request.headers.get("x-twilio-signature", "")
        if not self._signed_by_twilio(params, signature):
            log.warning("sms webhook: bad signature from %s", request.client.host if request.client else "?")
            return Response("invalid signature", status_code=403, media_type="text/plain")
        try:
            msg = parse_inbound_sms(params)
        except BadWebhook as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        try:
            result = await asyncio.wait_for(
                self.store.submit(self.users.index_for(msg.routing_key()), msg), timeout=self.config.sms_webhook_timeout
            )
        except Exception as exc:  # pool down, slow, database trouble: 503 (Twilio may retry; reconciliation will)
            log.warning("sms %s not stored: %s: %s", msg.idempotency_key, type(exc).__name__, exc)
            return Response("temporarily unavailable", status_code=503, media_type="text/plain")
        if not result.stored:  # a temporary refusal (this number's hourly limit to the user): Twilio retries
            log.info("sms %s not stored (%s): answering 503", msg.idempotency_key, result.verdict.value)
            return Response("too many messages, try again later", status_code=503, media_type="text/plain")
        log.info("sms %s -> message %s (%s)", msg.idempotency_key, result.message_id, result.verdict.value)
        return Response(EMPTY_TWIML, status_code=200, media_type="text/xml")

    def _signed_by_twilio(self, params: dict[str, str], signature: str) -> bool:
        """Check against the public URL; a connection-override fragment (``#rc=5&rp=all``) is not sent by
        Twilio with the request, so the URL without it is tried first."""
        public = self.config.twilio_webhook_public_url
        candidates = [public.split("#", 1)[0], public] if "#" in public else [public]
        return any(
            validate_signature(
                auth_token=self.config.twilio_auth_token, public_url=url, params=params, signature=signature
            )
            for url in candidates
        )

    @app.post("/swarm")
    async def swarm(self, request: Request) -> Response:
        secret = self.config.swarm_webhook_secret
        given = request.headers.get("x-swarm-secret", "")
        if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
            return Response("forbidden", status_code=403, media_type="text/plain")
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return Response(f"bad request: body is not JSON: {exc}", status_code=400, media_type="text/plain")
        packets, malformed = read_packets(payload)
        try:
            for group in by_device(packets).values():
                safe = await intake_device_packets(
                    group, self.users, self.store, timeout=self.config.smtp_store_timeout
                )
                if not all(safe):
                    return Response("not stored", status_code=503, media_type="text/plain")
            dead = await dead_letter_malformed(malformed, self.users, timeout=self.config.smtp_store_timeout)
        except Exception as exc:  # pool down, database trouble: the Hive pushes again
            log.warning("swarm webhook: not stored: %s: %s", type(exc).__name__, exc)
            return Response("temporarily unavailable", status_code=503, media_type="text/plain")
        if len(dead) < sum(1 for m in malformed if m.packet_id is not None):
            return Response("not stored", status_code=503, media_type="text/plain")
        answer = {"stored": len(packets), "dead_lettered": len(malformed)}
        return Response(json.dumps(answer), status_code=200, media_type="application/json")

    @app.post("/rockblock")
    async def rockblock(self, request: Request) -> Response:
        body, content_type = await request.body(), request.headers.get("content-type", "")
        status, text = await rockblock_webhook.take_post(body, content_type, self.rockblock_key, self.users, self.store)
        return Response(text, status_code=status, media_type="text/plain")
