"""The senders: every message that leaves us: to devices over their satellite network, and from devices as email
(relay) and SMS (Twilio). ``Senders`` also polls the satellite networks for device packets
(``intake/satellite_poll.py``), and on member 0 reconciles inbound SMS with Twilio (``intake/sms_reconcile.py``).

Each channel is a ``SenderBase`` (logic, testable without Ray) with a queue and claims of its own; one sweep
covers them all. They run in the process of each pool member, the courier (``operations/courier.py``), beside its
mail server: a Ray worker process is about 115 MB before any work, and these are idle most of the time.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from messaging.core.errors import PermanentDeliveryError
from messaging.core.location import with_position
from messaging.core.phones import parse_countries, sms_destination_refusal
from messaging.core.types import Channel, Direction, Protocol
from messaging.delivery.base import RUNNERS, SEND_THREADS, SenderBase, SenderShell
from messaging.delivery.email_relay import RelaySessions, build_outbound
from messaging.delivery.satellite import SatelliteBase
from messaging.intake.satellite_poll import DevicePoller
from messaging.intake.sms_reconcile import Reconciler, pool_store
from messaging.intake.user_store import UserStore
from messaging.runtime.config import Config
from messaging.sms.twilio import TwilioSender

if TYPE_CHECKING:
    from messaging.routing.user_desk import Kick

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
    """One sender actor (index 0) sweeps Twilio's message list, when it is on and the actor can store."""
    return has_users and index == 0 and config.twilio_reconcile_interval > 0


class Senders(SenderShell):
    """Every sender in one process: a kick names its channel (``deliver_many(ids, "mailout")``), each channel has
    its queue and claims, one sweep covers all. With ``users`` (where messages are stored: ``LocalUsers``) it also
    polls the satellite networks (this member's share of the packets) and, as member 0, reconciles inbound SMS.
    ``more_threads``: threads the event loop's default pool keeps for others of the process (``asyncio.to_thread``).
    The Ray actor is the courier's (``operations/courier.py``)."""

    _reconciling = False

    def __init__(self, config: Config, users: Any = None, index: int = 0, more_threads: int = 0):
        satellite = SatelliteBase(config)
        self.senders = (satellite, MailOutSender(config), SmsSender(config))
        self.index = index
        # The loop's threads: each lane's batches (RUNNERS), the sweep, a fetch per polled network, the reconcile
        # sweep. Its default pool (CPUs + 4) would let one channel's slow remote hold up another channel.
        polled = sum(1 for network in satellite.networks.values() if network.polled)
        loop = asyncio.get_running_loop()
        threads = len(self.senders) * RUNNERS + 1 + polled + 1 + more_threads
        loop.set_default_executor(ThreadPoolExecutor(max_workers=threads))
        self.poller: DevicePoller | None = None
        if users is not None:
            # Kicks for stored packets: this member's own lanes take theirs without a Ray call.
            self.store = UserStore(config, users, local=self._kick_here)
            self.poller = DevicePoller(config, satellite.networks, users, self.store, index)
        self.autostart(config.outbox_sweep_interval)
        if runs_reconcile(config, index, users is not None):
            self.reconciler = Reconciler(config, pool_store(users, timeout=config.smtp_store_timeout))
            loop.create_task(self._reconcile_loop(config.twilio_reconcile_interval))

    def _kick_here(self, kick: Kick, message_ids: list[int]) -> bool:
        """Queue a kick meant for this member here (on the event loop); False when it is for another one."""
        if kick.member != self.index or kick.channel not in self.lanes:
            return False
        self.queue(self.lanes[kick.channel], message_ids)
        return True

    async def start(self, sweep_interval: float = 5.0) -> str:
        await SenderShell.start(self, sweep_interval)
        if self.poller is not None:
            self.poller.start()
        return "started"

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

    async def drain(self) -> dict:
        """Stop polling (after the batch under way) and sweeping; deliveries in flight finish (watch ``stats``)."""
        if self.poller is not None:
            self.poller.stop()
        return await SenderShell.drain(self)

    async def stats(self) -> dict:
        if self._stopping and self.poller is not None:  # the kicks still gathered go now: when a drain sees
            self.store.flush()  # nothing in flight, none is left
        stats = await SenderShell.stats(self)
        stats["in_flight"] += int(self._reconciling)
        if self.poller is not None:
            stats.update(polling=self.poller.polling, polled=self.poller.polled)
        return stats
