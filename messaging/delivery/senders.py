"""The outbound email and SMS senders: device -> relay (email) and device -> Twilio (SMS).

Each is a ``SenderBase`` (logic, testable without Ray); one async Ray actor kind, ``OutboundActor``, holds both
(one process per pool member instead of one per channel: they are idle most of the time). The first outbound
actor also runs the reconciliation sweep (``intake/sms_reconcile.py``): inbound texts Twilio has that we never
stored.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from messaging.core.errors import PermanentDeliveryError
from messaging.core.location import with_position
from messaging.core.phones import parse_countries, sms_destination_refusal
from messaging.core.types import Channel, Direction, Protocol
from messaging.delivery.base import SEND_THREADS, SenderBase, SenderShell
from messaging.delivery.email_relay import RelaySessions, build_outbound
from messaging.intake.sms_reconcile import Reconciler, pool_store
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool
from messaging.sms.twilio import TwilioSender

log = logging.getLogger("messaging.delivery.senders")


def outgoing_text(row) -> str:
    """A device's message as it goes out: with its position when its owner shares their location."""
    return with_position(
        row.text,
        share=row.user.share_location,
        latitude=row.latitude,
        longitude=row.longitude,
        cep_km=row.location_cep_km,
    )


class MailOutSender(SenderBase):
    channel = Channel.MAILOUT
    direction = Direction.FROM_DEVICE
    protocols = (Protocol.EMAIL,)

    def __init__(self, config: Config, policy=None):
        super().__init__(config, policy)
        self.relay = RelaySessions(
            config.email_relay_host,
            config.email_relay_port,
            config.email_relay_username,
            config.email_relay_password,
            config.email_relay_starttls,
            keep=SEND_THREADS,  # one kept session per thread that may send at once
        )

    def send(self, row) -> str:
        cfg = self.config
        email = build_outbound(
            from_addr=f"{row.user.username}@{cfg.email_domain}",
            to_addr=row.recipient,
            text=outgoing_text(row),
            subject_text=row.text,
            domain=cfg.email_domain,
            message_id_hint=row.idempotency_key,
        )
        return self.relay.send(email)


class SmsSender(SenderBase):
    channel = Channel.SMS
    direction = Direction.FROM_DEVICE
    protocols = (Protocol.SMS,)

    def __init__(self, config: Config, policy=None):
        super().__init__(config, policy)
        self.twilio = TwilioSender(config.twilio_account_sid, config.twilio_auth_token, config.twilio_api_base_url)
        self.allowed_countries = parse_countries(config.sms_allowed_countries)

    def send(self, row) -> str:
        if not row.user.twilio_number:
            raise PermanentDeliveryError(f"user {row.user.username} has no Twilio number to send from")
        # Intake refuses these already; this catches a row stored before the rule (or the countries) changed.
        refusal = sms_destination_refusal(row.recipient, self.allowed_countries)
        if refusal is not None:
            raise PermanentDeliveryError(refusal)
        return self.twilio.send(from_=row.user.twilio_number, to=row.recipient, body=outgoing_text(row))


def runs_reconcile(config: Config, index: int, has_users: bool) -> bool:
    """One outbound actor (index 0) sweeps Twilio's message list, when it is on and the actor can store."""
    return has_users and index == 0 and config.twilio_reconcile_interval > 0


class Outbound(SenderShell):
    """Email and SMS from devices in one process: a kick names its channel (``deliver_many(ids, "mailout")``),
    each channel has its queue and claims, one sweep covers both. The Ray actor is ``OutboundActor``."""

    _reconciling = False

    def __init__(self, config: Config, users: NamedPool | None = None, index: int = 0):
        self.senders = (MailOutSender(config), SmsSender(config))
        self.autostart(config.outbox_sweep_interval)
        if runs_reconcile(config, index, users is not None):
            self.reconciler = Reconciler(config, pool_store(users, timeout=config.smtp_store_timeout))
            asyncio.get_running_loop().create_task(self._reconcile_loop(config.twilio_reconcile_interval))

    async def _reconcile_loop(self, interval: float) -> None:
        while not self._stopping:
            self._reconciling = True
            try:
                await asyncio.to_thread(self.reconciler.sweep)
            except Exception:  # e.g. the database is away: Twilio keeps the messages, the next sweep finds them
                log.exception("sms reconcile sweep failed; trying again")
            finally:
                self._reconciling = False
            await asyncio.sleep(interval)

    async def stats(self) -> dict:
        stats = await super().stats()
        return stats | {"in_flight": stats["in_flight"] + int(self._reconciling)}


@ray.remote(max_restarts=-1, max_task_retries=3)
class OutboundActor(Outbound):
    pass
