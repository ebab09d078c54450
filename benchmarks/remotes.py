"""The remote services the backend talks to, faked in the harness process (not in the stack under test).

The backend runs as in production (``SANDBOX=0``): every remote service is configured by its ordinary variables
(``SWARM_HIVE_URL``, ``TWILIO_*``, ``EMAIL_RELAY_*``, ``ROCKBLOCK_*``, ``DNS_NAMESERVERS``), and those point at
the fakes of messaging/sandbox/ started here, on loopback and ephemeral ports. So the fakes' work (answering the
satellites' polls, taking the sent mail and SMS, answering DNS) is the harness's, not the stack's, and the
stack's CPU and memory figures are those of the stack alone. What production would also have is made in the
work dir: a Django secret key, a STARTTLS certificate for the mail domain, fresh credentials per run.

``remote_env`` (pure) is the backend's environment for given endpoints; ``start_remotes`` starts the fakes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from messaging.sandbox.fake_dns import FakeDNS
from messaging.sandbox.fake_hive import FakeHive
from messaging.sandbox.fake_rockblock import FakeRockBlock
from messaging.sandbox.fake_twilio import FakeTwilio
from messaging.sandbox.relay_sink import RelaySink
from messaging.sandbox.selfsigned import certificate


@dataclass(frozen=True)
class Endpoints:
    """Where the remote services answer and the credentials they take (what an operator would configure)."""

    hive_url: str
    hive_username: str
    hive_password: str
    hive_webhook_secret: str
    rockblock_url: str
    rockblock_username: str
    rockblock_password: str
    rockblock_public_key_file: str
    twilio_account_sid: str
    twilio_auth_token: str
    twilio_api_base_url: str
    relay_host: str
    relay_port: int
    nameservers: str
    tls_cert_file: str
    tls_key_file: str
    django_secret_key: str


def remote_env(endpoints: Endpoints) -> dict[str, str]:
    """The production configuration of the remote services (and Django's key) as environment variables."""
    e = endpoints
    return {
        "SANDBOX": "0",  # every service configured: the backend refuses to start if one is not (fail closed)
        "SWARM_HIVE_URL": e.hive_url,
        "SWARM_USERNAME": e.hive_username,
        "SWARM_PASSWORD": e.hive_password,
        "SWARM_WEBHOOK_SECRET": e.hive_webhook_secret,
        "ROCKBLOCK_API_URL": e.rockblock_url,
        "ROCKBLOCK_USERNAME": e.rockblock_username,
        "ROCKBLOCK_PASSWORD": e.rockblock_password,
        "ROCKBLOCK_JWT_PUBLIC_KEY_FILE": e.rockblock_public_key_file,
        "TWILIO_ACCOUNT_SID": e.twilio_account_sid,
        "TWILIO_AUTH_TOKEN": e.twilio_auth_token,
        "TWILIO_API_BASE_URL": e.twilio_api_base_url,
        "EMAIL_RELAY_HOST": e.relay_host,
        "EMAIL_RELAY_PORT": str(e.relay_port),
        "EMAIL_RELAY_STARTTLS": "0",
        "DNS_NAMESERVERS": e.nameservers,
        "SMTP_TLS_CERT_FILE": e.tls_cert_file,
        "SMTP_TLS_KEY_FILE": e.tls_key_file,
        "DJANGO_SECRET_KEY": e.django_secret_key,
    }


@dataclass
class Remotes:
    """The running fakes (threads of this process) and the endpoints pointing at them."""

    hive: FakeHive
    twilio: FakeTwilio
    relay: RelaySink
    dns: FakeDNS
    rockblock: FakeRockBlock
    endpoints: Endpoints
    relay_record: Path

    def stop(self) -> None:
        for fake in (self.hive, self.twilio, self.relay, self.dns, self.rockblock):
            try:
                fake.stop()
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                pass


def start_remotes(workdir: Path, serve_port: int, email_domain: str) -> Remotes:
    """Start every fake on an ephemeral loopback port with fresh credentials; the relay records to the work dir.

    ``serve_port`` is where the backend's Serve will answer: the fake RockBLOCK posts device messages there.
    """
    started: list = []
    try:
        hive = FakeHive(username=f"bench-{secrets.token_hex(4)}", password=secrets.token_urlsafe(16)).start()
        started.append(hive)
        rockblock = FakeRockBlock(
            username=f"bench-{secrets.token_hex(4)}",
            password=secrets.token_urlsafe(16),
            mo_url=f"http://127.0.0.1:{serve_port}/rockblock",
        ).start()
        started.append(rockblock)
        twilio = FakeTwilio(account_sid="AC" + secrets.token_hex(16), auth_token=secrets.token_hex(16)).start()
        started.append(twilio)
        record = workdir / "relay.jsonl"
        relay = RelaySink(record_path=record).start()
        started.append(relay)
        dns = FakeDNS().start()
        started.append(dns)
    except BaseException:
        for fake in started:
            fake.stop()
        raise
    cert, key = certificate(workdir / "tls", email_domain)
    endpoints = Endpoints(
        hive_url=hive.base_url,
        hive_username=hive.username,
        hive_password=hive.password,
        hive_webhook_secret=secrets.token_urlsafe(24),
        rockblock_url=rockblock.base_url,
        rockblock_username=rockblock.username,
        rockblock_password=rockblock.password,
        rockblock_public_key_file=str(rockblock.public_key_file),
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_api_base_url=twilio.base_url,
        relay_host="127.0.0.1",
        relay_port=relay.port,
        nameservers=dns.nameservers,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        django_secret_key=secrets.token_urlsafe(50),
    )
    return Remotes(hive, twilio, relay, dns, rockblock, endpoints, record)
