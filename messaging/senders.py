"""The outbound email and SMS senders: device -> relay (email) and device -> Twilio (SMS).

Each is a ``SenderBase`` (logic, testable without Ray) and an async Ray actor shell.
"""

from __future__ import annotations

import ray

from .config import Config
from .delivery import SEND_CONCURRENCY, SenderBase, SenderShell


class MailOutSender(SenderBase):
    channel = "mailout"
    direction = "from_device"
    protocols = ("email",)

    def __init__(self, config: Config, policy=None):
        super().__init__(config, policy)
        from .mailout import RelaySessions

        self.relay = RelaySessions(
            config.email_relay_host,
            config.email_relay_port,
            config.email_relay_username,
            config.email_relay_password,
            config.email_relay_starttls,
            keep=SEND_CONCURRENCY,
        )

    def send(self, row) -> str:
        from .mailout import build_outbound

        cfg = self.config
        email = build_outbound(
            from_addr=f"{row.user.username}@{cfg.email_domain}",
            to_addr=row.recipient,
            text=row.text,
            domain=cfg.email_domain,
            message_id_hint=row.idempotency_key,
        )
        return self.relay.send(email)


class SmsSender(SenderBase):
    channel = "sms"
    direction = "from_device"
    protocols = ("sms",)

    def __init__(self, config: Config, policy=None):
        super().__init__(config, policy)
        from .phones import parse_countries
        from .smsio import TwilioSender

        self.twilio = TwilioSender(config.twilio_account_sid, config.twilio_auth_token, config.twilio_api_base_url)
        self.allowed_countries = parse_countries(config.sms_allowed_countries)

    def send(self, row) -> str:
        from .errors import PermanentDeliveryError
        from .phones import sms_destination_refusal

        if not row.user.twilio_number:
            raise PermanentDeliveryError(f"user {row.user.username} has no Twilio number to send from")
        # Intake refuses these already; this catches a row stored before the rule (or the countries) changed.
        refusal = sms_destination_refusal(row.recipient, self.allowed_countries)
        if refusal is not None:
            raise PermanentDeliveryError(refusal)
        return self.twilio.send(from_=row.user.twilio_number, to=row.recipient, body=row.text)


@ray.remote(max_restarts=-1, max_task_retries=3)
class MailOutActor(SenderShell):
    def __init__(self, config: Config):
        self.base = MailOutSender(config)
        self.autostart(config.outbox_sweep_interval)


@ray.remote(max_restarts=-1, max_task_retries=3)
class SmsActor(SenderShell):
    def __init__(self, config: Config):
        self.base = SmsSender(config)
        self.autostart(config.outbox_sweep_interval)
