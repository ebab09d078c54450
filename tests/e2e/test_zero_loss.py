"""Lose no message: steady load through upgrades, kill -9 of actors, remote faults, and a mail-server drain.

Every message carries a unique token; the destination fakes are searched for each token, and the
tests print how many were sent, delivered, lost and duplicated.
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import time

import pytest
import ray

from messaging.operations.kinds import KIND_NAMES
from messaging.operations.lifecycle import busy, replace_member, upgrade
from messaging.runtime.pool import member_name
from messaging.sandbox.traffic import Person, Traffic

from .conftest import device_texts, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def people(new_user):
    """Three people on Swarm and one on RockBLOCK."""
    from web.accounts.models import Device

    users = [new_user() for _ in range(3)]
    on_swarm = [Person(u.username, u.twilio_number, u.devices.get().device_id) for u in users]
    sailor = new_user(device=False)
    imei = int(f"3005{int(time.time() * 1000) % 10**11:011d}")
    Device.objects.create(network="rockblock", device_id=imei, owner=sailor)
    return [*on_swarm, Person(sailor.username, sailor.twilio_number, imei, network="rockblock")]


def test_upgrades_under_load_lose_nothing(e2e, people):
    traffic = Traffic(e2e.config, e2e.box, people, rate=4, seed=11).start()
    gaps = []
    for _ in range(2):
        gaps.append(upgrade(e2e.config, echo=print))
    traffic.stop()
    report = traffic.wait_delivered(timeout=120)
    print(f"\nupgrades x2 under load: {report.line()}; longest member gap {max(max(g.values()) for g in gaps):.1f}s")
    assert report.sent >= 30
    assert report.lost == [], f"lost: {report.lost[:10]}"
    assert report.duplicated == {}, f"duplicated: {report.duplicated}"


def _alive_members(config) -> list:
    from ray.util.state import list_actors

    names = {member_name(k, i) for k in KIND_NAMES for i in range(config.pool_size)}
    gcs = ray.get_runtime_context().gcs_address  # this session's cluster, even when another one runs
    return [a for a in list_actors(address=gcs, filters=[("state", "=", "ALIVE")], limit=1000) if a.name in names]


def test_an_upgrade_retires_an_earlier_versions_sender_and_mail_server_after_their_work_in_hand(e2e, new_user):
    """A stack upgraded from a version with senders and mail servers of their own still runs them (say
    ``outbound_<n>`` and ``mailserver_<n>``) beside the couriers: once the new kinds are up they are drained and
    removed, what the sender held is still sent once, and SMTP on the shared port still answers."""
    from messaging.core.types import CombinedMessage, Direction, Protocol
    from messaging.delivery.senders import Senders
    from messaging.intake.smtp.server import MailServer
    from messaging.operations.kinds import sender_pools
    from messaging.operations.launch import make_pools
    from messaging.operations.lifecycle import retire_old_kinds
    from messaging.outbox import store as outbox

    config = e2e.config
    options = {"namespace": config.ray_namespace, "lifetime": "detached", "num_cpus": 0}
    # the earlier versions' sender of device email and mail server, as far as the stack can tell: named actors
    # over the same plain classes, the mail server listening on the couriers' port (SO_REUSEPORT)
    old = ray.remote(Senders).options(name=member_name("outbound", 0), **options).remote(config)
    ray.get(old.start.remote(config.outbox_sweep_interval), timeout=60)
    old_mail = ray.remote(MailServer).options(name=member_name("mailserver", 0), **options)
    old_mail = old_mail.remote(config, sender_pools(make_pools(config)))
    ray.get(old_mail.start.remote(), timeout=60)
    user = new_user()
    recipients = [f"retire{n}.{user.username}@example.org" for n in range(3)]
    ids = [
        outbox.record(
            CombinedMessage(Direction.FROM_DEVICE, Protocol.EMAIL, "device:1", to, f"note {n}", f"retire:{to}"),
            user_id=user.id,
            device_id=user.devices.get().id,
            accepted=True,
        ).message_id
        for n, to in enumerate(recipients)
    ]
    old.deliver_many.remote(ids, "mailout")
    assert retire_old_kinds(config, echo=print) == [member_name("outbound", 0), member_name("mailserver", 0)]
    for name in ("outbound", "mailserver"):
        with pytest.raises(ValueError):
            ray.get_actor(member_name(name, 0), namespace=config.ray_namespace)
    for _ in range(8):  # the couriers alone take every connection (a retired mail server's would be refused)
        with smtplib.SMTP("127.0.0.1", config.smtp_listen_port, timeout=30) as session:
            assert session.noop()[0] == 250

    def sent_once() -> bool:
        rcpts = [r for m in e2e.box.relay.messages for r in m["rcpt_tos"] if r in recipients]
        assert len(rcpts) == len(set(rcpts)), f"sent twice: {rcpts}"
        return sorted(rcpts) == sorted(recipients)

    wait_until(sent_once, timeout=60, what="each message at the relay once")
    assert retire_old_kinds(config, echo=print) == [], "nothing left to retire"


def test_kill_9_of_random_actors_under_load_loses_nothing(e2e, people):
    rng = random.Random(5)
    traffic = Traffic(e2e.config, e2e.box, people, rate=4, seed=12).start()
    killed = []
    for _ in range(4):
        victim = rng.choice(_alive_members(e2e.config))
        os.kill(victim.pid, signal.SIGKILL)
        killed.append(victim.name)
        wait_until(
            lambda v=victim: any(a.name == v.name and a.pid != v.pid for a in _alive_members(e2e.config)),
            timeout=60,
            what=f"{victim.name} restarted",
        )
        time.sleep(1.0)  # let traffic flow through the restarted member before the next kill
    traffic.stop()
    report = traffic.wait_delivered(timeout=180)
    print(f"\nkill -9 of {killed}: {report.line()}")
    assert report.lost == [], f"lost: {report.lost[:10]}"
    # A sender killed after the remote accepted but before it recorded 'sent' sends again: at least once.
    assert len(report.duplicated) <= len(killed)


def test_remote_faults_delay_but_lose_nothing(e2e, people):
    from web.delivery.models import Message

    box = e2e.box
    box.hive.set_faults(error_rate=0.3, status=503, seed=3)
    box.twilio.set_faults(error_rate=0.3, status=503, seed=4)
    box.rockblock.set_faults(error_rate=0.3, status=99, seed=5)  # FAILED,99: retried, never dead
    traffic = Traffic(e2e.config, box, people, rate=4, seed=13).start()
    box.relay.stop()  # relay down for a while
    time.sleep(3)
    box.relay.start()
    traffic.stop()
    box.hive.clear_faults()
    box.rockblock.clear_faults()
    box.twilio.set_faults(error_rate=0.0)
    report = traffic.wait_delivered(timeout=180)
    print(f"\nremote faults: {report.line()}")
    assert report.lost == [], f"lost: {report.lost[:10]}"
    tokens = set(traffic.sent)
    dead = [m for m in Message.objects.filter(status="dead") if any(t in m.text for t in tokens)]
    assert dead == [], "temporary errors never dead-letter a message"


def test_drain_finishes_the_session_in_flight_and_turns_new_ones_away(e2e, new_user):
    """Draining the couriers: the SMTP session in flight completes and its mail is stored; new sessions get 421.
    The couriers' senders are drained too, so the mail reaches the device once the members are replaced."""
    config = e2e.config
    user = new_user()
    device_id = user.devices.get().device_id
    servers = [
        ray.get_actor(member_name("courier", i), namespace=config.ray_namespace) for i in range(config.pool_size)
    ]
    session = smtplib.SMTP("127.0.0.1", config.smtp_listen_port, timeout=30)
    session.ehlo()
    session.mail("friend@example.org")
    assert session.rcpt(f"{user.username}@beaver.test")[0] == 250
    try:
        for server in servers:
            ray.get(server.drain.remote())
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", config.smtp_listen_port, timeout=30)
        assert refused.value.smtp_code == 421
        assert sum(busy("courier", ray.get(s.stats.remote())) for s in servers) >= 1
        code, _ = session.data(b"Subject: in flight\r\n\r\nsent during the drain\r\n")
        assert code == 250, "the session in flight completes"
        session.quit()
        wait_until(lambda: sum(busy("courier", ray.get(s.stats.remote())) for s in servers) == 0, what="couriers idle")
    finally:
        for idx in range(config.pool_size):
            replace_member(config, "courier", idx, echo=print)
    with smtplib.SMTP("127.0.0.1", config.smtp_listen_port, timeout=30) as again:
        assert again.noop()[0] == 250, "intake open again after the replacement"
    wait_until(
        lambda: any("sent during the drain" in t for t in device_texts(e2e, device_id)),
        what="the mail accepted during the drain reaches the device",
    )
