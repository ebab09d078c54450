"""The sandbox: local fakes for the remote services, wired into the config, or none of them.

All or nothing (fail closed): ``SANDBOX=1`` fakes every remote service; ``SANDBOX=0`` fakes none and needs every
service's credentials; ``SANDBOX=auto`` (the default) fakes every service when no credential of any service is
set (``make run`` on a fresh machine) and otherwise needs them all. A partly configured service is always an
error: a missing ``TWILIO_AUTH_TOKEN`` must not mean webhooks checked against the fake's public token, nor a
missing relay mean mail "sent" into a loopback sink.

The mail server offers STARTTLS in the sandbox too: without SMTP_TLS_CERT_FILE / SMTP_TLS_KEY_FILE a self-signed
certificate for EMAIL_DOMAIN is made on first start (``<record_dir>/tls``, reused while it is valid for the
domain; a temporary directory without a record dir) and the config points at it.

Fake Hive, fake Twilio API and an SMTP relay sink run as threads of the process that starts the
stack (``manage.py runbackend`` or the end-to-end tests), on loopback, speaking the real wire formats.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from messaging.runtime.config import TWILIO_DEFAULT_API_BASE_URL, Config, ConfigError, parse_bool

# SANDBOX is an on/off setting (config.parse_bool) with a third value, auto (or empty), and two more words for on/off.
_AUTO = {"auto", ""}
_WORDS = {"all": "1", "none": "0"}


@dataclass
class Sandbox:
    hive: object | None = None
    twilio: object | None = None
    relay: object | None = None
    dns: object | None = None
    rockblock: object | None = None
    started: list[str] = field(default_factory=list)
    scratch: Path | None = None  # a directory of our own to remove on stop (the certificate without a record dir)

    def stop(self) -> None:
        for fake in (self.hive, self.twilio, self.relay, self.dns, self.rockblock):
            if fake is not None:
                fake.stop()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _missing_text(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{service}: {', '.join(names)}" for service, names in missing.items())


def sandboxed(config: Config) -> bool:
    """Whether to start the fakes of every remote service (True) or none (False).

    Raises ConfigError, naming every missing variable, for a configuration that would otherwise run
    half-faked or half-configured.
    """
    word = config.sandbox.strip().lower()
    if word not in _AUTO:
        switch = parse_bool(_WORDS.get(word, word))
        if switch is None:
            raise ConfigError(f"SANDBOX must be auto, 1 or 0, not {config.sandbox!r}")
        if switch:
            return True
        missing = config.unconfigured_services()
        if missing:
            raise ConfigError(f"SANDBOX=0 needs every service's credentials; missing {_missing_text(missing)}")
        return False
    if not config.any_credential_set():
        return True
    missing = config.unconfigured_services()
    if missing:
        raise ConfigError(
            f"credentials are set but incomplete; missing {_missing_text(missing)} "
            "(set them all, or none of them for the all-fakes sandbox, or SANDBOX=1)"
        )
    return False


def start_sandbox(
    config: Config, record_dir: Path | None = None, ephemeral_ports: bool = False
) -> tuple[Config, Sandbox]:
    """Start the fakes the config calls for (all or none, see :func:`sandboxed`, which raises ConfigError before
    anything starts); return the config pointing at them, with ``sandbox="1"`` when they run."""
    # The fakes load only when a sandbox starts: web.settings imports this module in every Django process.
    from messaging.sandbox.fake_hive import FakeHive
    from messaging.sandbox.fake_twilio import FakeTwilio
    from messaging.sandbox.relay_sink import RelaySink

    box = Sandbox()
    if not sandboxed(config):
        if config.twilio_api_base_url == "":
            config = dataclasses.replace(config, twilio_api_base_url=TWILIO_DEFAULT_API_BASE_URL)
        return config, box

    def port(p: int) -> int:
        return 0 if ephemeral_ports else p

    box.hive = FakeHive(port=port(config.sandbox_hive_port), username="sandbox", password="sandbox").start()
    box.started.append(f"fake Swarm Hive      {box.hive.base_url}  (user sandbox / sandbox)")
    box.rockblock = _start_fake_rockblock(config, port(config.sandbox_rockblock_port))
    box.started.append(f"fake RockBLOCK       {box.rockblock.base_url}  (user sandbox / sandbox; MO to /rockblock)")
    box.twilio = FakeTwilio(port=port(config.sandbox_twilio_port)).start()
    box.started.append(f"fake Twilio API      {box.twilio.base_url}")
    record = (record_dir / "relay.jsonl") if record_dir else None
    if record:
        record.parent.mkdir(parents=True, exist_ok=True)
    box.relay = RelaySink(port=port(config.sandbox_relay_port), record_path=record)
    box.relay.start()
    box.started.append(
        f"SMTP relay sink      127.0.0.1:{box.relay.port}" + (f"  (records to {record})" if record else "")
    )
    if not config.dns_nameservers:  # the sender checks (SPF, DKIM, DMARC) ask a DNS of our own, offline
        from messaging.sandbox.fake_dns import FakeDNS  # only when the sandbox answers DNS itself

        box.dns = FakeDNS().start()
        box.started.append(f"DNS for sender checks {box.dns.nameservers}  (answers NXDOMAIN unless told otherwise)")
    changes: dict[str, object] = dict(
        sandbox="1",
        dns_nameservers=box.dns.nameservers if box.dns is not None else config.dns_nameservers,
        swarm_hive_url=box.hive.base_url,
        swarm_username="sandbox",
        swarm_password="sandbox",
        swarm_poll_interval=min(config.swarm_poll_interval, 2.0),  # a quick loop to watch
        swarm_webhook_secret=config.swarm_webhook_secret or secrets.token_urlsafe(24),
        rockblock_api_url=box.rockblock.base_url,
        rockblock_username=box.rockblock.username,
        rockblock_password=box.rockblock.password,
        rockblock_jwt_public_key_file=str(box.rockblock.public_key_file),
        twilio_account_sid=box.twilio.account_sid,
        twilio_auth_token=box.twilio.auth_token,
        twilio_api_base_url=box.twilio.base_url,
        twilio_webhook_public_url=config.twilio_webhook_public_url or f"http://127.0.0.1:{config.serve_http_port}/sms",
        email_relay_host="127.0.0.1",
        email_relay_port=box.relay.port,
        sandbox_relay_port=box.relay.port,  # the web's mail (verification, reset) goes to this sink too
        email_relay_starttls=False,
        email_relay_username="",
        email_relay_password="",
    )
    if not config.smtp_tls_cert_file:  # STARTTLS as in production, with a self-signed certificate (Config: both)
        from messaging.sandbox.selfsigned import certificate  # cryptography: only when a certificate is made

        if record_dir is None:
            box.scratch = Path(tempfile.mkdtemp(prefix="spacebeaver-tls-"))
        cert, key = certificate((record_dir / "tls") if record_dir else box.scratch, config.email_domain)
        changes.update(smtp_tls_cert_file=str(cert), smtp_tls_key_file=str(key))
        box.started.append(f"STARTTLS certificate {cert}  (self-signed for {config.email_domain})")
    return dataclasses.replace(config, **changes), box


def _start_fake_rockblock(config: Config, port: int):
    """The fake RockBLOCK, posting MO messages to the Serve app's ``/rockblock`` and signing them with a key of
    its own (the config points ROCKBLOCK_JWT_PUBLIC_KEY_FILE at its public half)."""
    from messaging.sandbox.fake_rockblock import FakeRockBlock  # (the fakes load only when a sandbox starts)

    mo_url = f"http://127.0.0.1:{config.serve_http_port}/rockblock"
    return FakeRockBlock(port=port, username="sandbox", password="sandbox", mo_url=mo_url).start()
