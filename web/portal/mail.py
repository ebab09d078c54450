"""A Django email backend that sends through our outbound SMTP relay (messaging.delivery.email_relay).

The relay is the one the sender actors use: EMAIL_RELAY_HOST, EMAIL_RELAY_PORT, EMAIL_RELAY_USERNAME,
EMAIL_RELAY_PASSWORD, EMAIL_RELAY_STARTTLS (``Config.from_env``). In the sandbox (no relay configured) it is the
sandbox relay sink on 127.0.0.1:SANDBOX_RELAY_PORT, which records every message (``$DATA_DIR/sandbox/relay.jsonl``
under ``make run``), as the sender actors do. Outside the sandbox a missing EMAIL_RELAY_HOST is an error,
never mail dropped quietly.

Relay errors are messaging.core.errors.TemporaryDeliveryError / PermanentDeliveryError (raised unless
``fail_silently``); each message goes to each recipient on its own (the relay client takes one per message).
"""

from __future__ import annotations

import email
import logging
from email import policy

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.base import BaseEmailBackend

from messaging.core.errors import DeliveryError
from messaging.core.redact import mask_email
from messaging.delivery.email_relay import RelaySessions
from messaging.runtime.config import Config

log = logging.getLogger(__name__)


def relay_sessions(config: Config | None = None, *, sandbox: bool | None = None) -> RelaySessions:
    """Sessions to the configured relay (the sandbox relay sink in the sandbox)."""
    config = config or Config.from_env()
    sandbox = settings.SANDBOX if sandbox is None else sandbox
    if sandbox:  # all fakes (SANDBOX=1 even when a relay is configured): the relay sink, as the sender actors use
        return RelaySessions("127.0.0.1", config.sandbox_relay_port, timeout=20, keep=1)
    if not config.email_relay_host:
        raise ImproperlyConfigured(
            "EMAIL_RELAY_HOST is not set: the web cannot send mail (verification, password reset)"
        )
    return RelaySessions(
        config.email_relay_host,
        config.email_relay_port,
        config.email_relay_username,
        config.email_relay_password,
        config.email_relay_starttls,
        timeout=20,
        keep=1,
    )


class RelayEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages) -> int:
        if not email_messages:
            return 0
        try:
            relay = relay_sessions()
        except ImproperlyConfigured:
            if self.fail_silently:
                return 0
            raise
        sent = 0
        try:
            for message in email_messages:
                try:
                    for recipient in message.recipients():
                        relay.send(_one_copy(message, recipient))
                        log.info("web mail sent to=%s subject_len=%d", mask_email(recipient), len(message.subject))
                    sent += 1
                except DeliveryError as exc:
                    log.warning("web mail not sent: %s", type(exc).__name__)
                    if not self.fail_silently:
                        raise
        finally:
            relay.close()
        return sent


def _one_copy(message, recipient: str) -> email.message.EmailMessage:
    """Django's message as the stdlib EmailMessage the relay client sends, addressed to ``recipient`` alone."""
    copy = email.message_from_bytes(message.message().as_bytes(), policy=policy.default)
    del copy["To"]
    del copy["Cc"]
    copy["To"] = recipient
    return copy
