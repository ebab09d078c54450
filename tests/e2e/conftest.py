"""One real local Ray per test session, with the whole stack started the way runbackend starts it.

Only the remote services are replaced, at the network boundary: fake Hive, fake Twilio API and an
SMTP relay sink on loopback. Ray workers use the same test database as this process.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.waiting import wait_until  # noqa: F401  (the e2e modules import it from here)

pytestmark = pytest.mark.e2e


_HANDED_OUT: set[int] = set()
_PICKED = random.Random()
LISTEN_PORTS_FROM = 20_000  # above Ray's worker ports (10002-19999) and the stack's fixed defaults


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A loopback port free right now and never handed out before in this test run.

    Picked between Ray's worker ports (10002-19999) and the kernel's ephemeral range. A port the kernel hands
    out (bind to port 0) may be one Ray binds by default a moment later (its dashboard agent's 52365: HAProxy's
    stats port got it once and failed to start with "Address already in use"), or one an outgoing connection
    gets. Where the ephemeral range starts too low for that, the kernel picks; either way the ports handed out
    are remembered, so one never goes to two services of a test.
    """
    top = _ephemeral_start()
    for _ in range(200 if top > LISTEN_PORTS_FROM + 1_000 else 0):
        port = _PICKED.randrange(LISTEN_PORTS_FROM, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database this test process is using (the test database)."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    if "postgresql" in engine:
        user = quote(settings_dict.get("USER") or "")
        password = quote(settings_dict.get("PASSWORD") or "")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = settings_dict.get("PORT") or 5432
        return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"
    raise RuntimeError(f"no DATABASE_URL for engine {engine}")


def device_texts(e2e, device_id: int) -> list[str]:
    """Texts of every packet the fake Hive delivered to ``device_id``, decoded."""
    import base64

    from messaging.core.pb import MessageDataPB_pb2 as pb

    texts = []
    for packet in e2e.box.hive.to_device(device_id):
        msg = pb.MessageDataPB()
        msg.ParseFromString(base64.b64decode(packet["data"]))
        texts.extend(m.text for m in msg.message)
    return texts


@dataclass
class E2E:
    config: object
    box: object
    stack: object

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.config.serve_http_port}"


@pytest.fixture(scope="session")
def e2e(django_db_setup, django_db_blocker):
    from django.db import connection
    from ray import serve

    from messaging.operations.launch import (
        connect_ray,
        disconnect_ray,
        private_ingress_ports,
        start_stack,
        stop_stack,
        worker_env,
    )
    from messaging.runtime.config import Config
    from messaging.sandbox.stack import start_sandbox

    serve_port = free_port()
    config = Config(
        email_domain="beaver.test",
        smtp_listen_port=free_port(),
        serve_http_port=serve_port,
        twilio_webhook_public_url="https://sms.beaver.test/sms",
        pool_size=2,
        swarm_poll_interval=0.2,
        outbox_sweep_interval=0.5,
        smtp_store_timeout=15.0,
        sandbox="1",
        ray_namespace="e2e",
        ray_dashboard=True,  # test_zero_loss finds actor pids (kill -9) through the state API, a dashboard module
        ray_dashboard_port=free_port(),
        swarm_user_application_id=65002,
        outbox_base_delay=0.2,
        outbox_max_delay=2.0,
        outbox_lease_seconds=10.0,  # a send cut off by a kill is retried within the tests' patience
        device_outbound_per_hour=0,  # the zero-loss load comes from few devices and senders: no abuse limits
        inbound_per_sender_per_hour=0,
        twilio_reconcile_interval=1.0,  # a text whose webhook failed is found in Twilio's list within seconds
        rockblock_timeout=2.0,  # an MT post the fake holds longer is a timeout, retried within the tests' patience
    )
    config, box = start_sandbox(config, ephemeral_ports=True)
    with django_db_blocker.unblock():
        env = worker_env({"DATABASE_URL": database_url(connection.settings_dict)})
        private_ingress_ports(free_port)
        connect_ray(config, env)
        try:
            stack = start_stack(config)
            yield E2E(config=config, box=box, stack=stack)
        finally:
            stop_stack(config)
            serve.shutdown()
            disconnect_ray()
            box.stop()


@pytest.fixture
def orm(e2e, django_db_blocker):
    """Use the ORM (outside a test transaction, so Ray workers see the rows) during an e2e test."""
    with django_db_blocker.unblock():
        yield


_seq = iter(range(1, 10**6))


@pytest.fixture
def new_user(orm):
    """Create a committed user with an active device; unique names, numbers and device ids."""
    from web.accounts.models import BlockedSender, Device, User

    def make(*, device=True, blocked=(), quota=None, active=True):
        n = next(_seq)
        stamp = int(time.time() * 1000) % 10**6
        user = User.objects.create(
            username=f"e2e{stamp}x{n}",
            twilio_number=f"+1555{(stamp * 10 + n) % 10**7:07d}",
            monthly_quota=quota,
            is_active=active,
        )
        if device:
            Device.objects.create(device_id=int(f"7{stamp:06d}{n:03d}"), owner=user)
        for address in blocked:
            BlockedSender.objects.create(user=user, address=address)
        return user

    return make
