"""The sandbox: local fakes for the remote services that have no credentials, wired into the config.

Fake Hive, fake Twilio API and an SMTP relay sink run as threads of the process that starts the
stack (``manage.py runbackend`` or the end-to-end tests), on loopback, speaking the real wire formats.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ..config import TWILIO_DEFAULT_API_BASE_URL, Config


@dataclass
class Sandbox:
    hive: object | None = None
    twilio: object | None = None
    relay: object | None = None
    started: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for fake in (self.hive, self.twilio, self.relay):
            if fake is not None:
                fake.stop()


def wants(config: Config, has_credentials: bool) -> bool:
    mode = config.sandbox.strip().lower()
    if mode in {"1", "true", "yes", "on", "all"}:
        return True
    if mode in {"0", "false", "no", "off", "none"}:
        return False
    return not has_credentials


def start_sandbox(
    config: Config, record_dir: Path | None = None, ephemeral_ports: bool = False
) -> tuple[Config, Sandbox]:
    """Start the fakes the config calls for; return the config pointing at them."""
    from .fake_hive import FakeHive
    from .fake_twilio import FakeTwilio

    box = Sandbox()
    changes: dict[str, object] = {}

    def port(p: int) -> int:
        return 0 if ephemeral_ports else p

    if wants(config, config.has_swarm_credentials):
        box.hive = FakeHive(port=port(config.sandbox_hive_port), username="sandbox", password="sandbox").start()
        changes.update(
            swarm_hive_url=box.hive.base_url,
            swarm_username="sandbox",
            swarm_password="sandbox",
            swarm_poll_interval=min(config.swarm_poll_interval, 2.0),
        )  # a quick loop to watch
        box.started.append(f"fake Swarm Hive      {box.hive.base_url}  (user sandbox / sandbox)")
    if not config.swarm_webhook_secret:
        changes["swarm_webhook_secret"] = secrets.token_urlsafe(24)
    if wants(config, config.has_twilio_credentials):
        box.twilio = FakeTwilio(port=port(config.sandbox_twilio_port)).start()
        changes.update(
            twilio_account_sid=box.twilio.account_sid,
            twilio_auth_token=box.twilio.auth_token,
            twilio_api_base_url=box.twilio.base_url,
        )
        if not config.twilio_webhook_public_url:
            changes["twilio_webhook_public_url"] = f"http://127.0.0.1:{config.serve_http_port}/sms"
        box.started.append(f"fake Twilio API      {box.twilio.base_url}")
    if wants(config, config.has_relay):
        from .relay_sink import RelaySink

        record = (record_dir / "relay.jsonl") if record_dir else None
        if record:
            record.parent.mkdir(parents=True, exist_ok=True)
        box.relay = RelaySink(port=port(config.sandbox_relay_port), record_path=record)
        box.relay.start()
        changes.update(
            email_relay_host="127.0.0.1",
            email_relay_port=box.relay.port,
            email_relay_starttls=False,
            email_relay_username="",
            email_relay_password="",
        )
        box.started.append(
            f"SMTP relay sink      127.0.0.1:{box.relay.port}" + (f"  (records to {record})" if record else "")
        )
    if changes.get("twilio_api_base_url") is None and config.twilio_api_base_url == "":
        changes["twilio_api_base_url"] = TWILIO_DEFAULT_API_BASE_URL
    return dataclasses.replace(config, **changes), box
