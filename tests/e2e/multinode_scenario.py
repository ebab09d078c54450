"""Multi-node scenario, run in its own process by test_multinode.py (one Ray per process).

A real three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, custom resources per
node), the backend launched against it as runbackend does, the sandbox fakes in this process. It checks
placement, sends mail and device packets across nodes, removes a worker node, sends more, and prints a
JSON report on its last line.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import smtplib
import sys
import time
from email.message import EmailMessage


def wait_until(condition, timeout=180.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from messaging.core.codec import encode_from_device
    from messaging.core.types import Protocol
    from messaging.operations.kinds import KIND_NAMES
    from messaging.operations.launch import (
        connect_ray,
        export_for_local_ray,
        start_actors,
        stop_stack,
        worker_env,
    )
    from messaging.runtime.config import Config
    from messaging.runtime.djangoenv import ensure_django
    from messaging.sandbox.stack import start_sandbox

    smtp_port, dashboard_port, pool = int(sys.argv[1]), int(sys.argv[2]), 3
    ensure_django()
    from django.utils import timezone

    from web.accounts.models import Device, User

    started_at = timezone.now()
    stamp = int(time.time())
    users = []
    for i in range(6):
        user = User.objects.create(username=f"mn{stamp}u{i}", twilio_number=f"+1555{stamp % 10**5:05d}{i:02d}")
        Device.objects.create(device_id=int(f"8{stamp % 10**6:06d}{i:02d}"), owner=user)
        users.append(user)

    config = Config(
        email_domain="beaver.test",
        smtp_listen_port=smtp_port,
        pool_size=pool,
        sandbox="1",
        ray_namespace="multinode",
        swarm_poll_interval=0.2,
        outbox_sweep_interval=0.5,
        outbox_base_delay=0.2,
        outbox_lease_seconds=10.0,
        outbox_max_delay=2.0,
        device_outbound_per_hour=0,  # load from few devices and senders: no abuse limits
        inbound_per_sender_per_hour=0,
    )
    config, box = start_sandbox(config, ephemeral_ports=True)
    env = worker_env({"DATABASE_URL": os.environ["DATABASE_URL"]})
    export_for_local_ray(config, env)  # the nodes started here inherit the secrets (never sent through Ray)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"node_head": 1},
            "include_dashboard": True,
            "dashboard_port": dashboard_port,
        },
    )
    workers = [cluster.add_node(num_cpus=1, resources={f"node_w{i}": 1}) for i in range(2)]
    cluster.wait_for_nodes()
    config = dataclasses.replace(config, ray_address=cluster.address)
    connect_ray(config, env)
    report: dict = {"nodes": len(ray.nodes())}
    try:
        start_actors(config)

        def placement() -> dict[str, str]:
            return {
                a.name: a.node_id
                for a in list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")], limit=1000)
                if a.name and a.name.split("_")[0] in KIND_NAMES
            }

        where = placement()
        report["courier_nodes"] = len({where[f"courier_{i}"] for i in range(pool)})

        def send_mail(user, tag):
            mail = EmailMessage()
            mail["From"], mail["To"], mail["Subject"] = "friend@example.org", f"{user.username}@beaver.test", tag
            mail.set_content(f"body {tag}")
            for _ in range(60):  # like a real MTA: retry a temporary refusal
                try:
                    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
                        smtp.send_message(mail)
                    return
                except (OSError, smtplib.SMTPException):
                    time.sleep(0.5)
            raise AssertionError(f"mail {tag} never accepted")

        def device_texts() -> str:
            return " ".join(base64.b64decode(p["data"]).decode("utf-8", "replace") for p in box.hive.to_device())

        tags = [f"tag-before-{i:03d}" for i in range(12)]
        for i, tag in enumerate(tags):
            send_mail(users[i % len(users)], tag)
        for i, user in enumerate(users):
            data = encode_from_device([(f"tag-dev-{i:03d}", Protocol.EMAIL, "mum@example.org")])
            box.hive.device_send(user.devices.get().device_id, base64.b64encode(data).decode())
        tags += [f"tag-dev-{i:03d}" for i in range(len(users))]
        wait_until(lambda: all(t in device_texts() for t in tags[:12]), what="mail delivered to devices")
        wait_until(
            lambda: sum(1 for m in box.relay.messages if b"tag-dev-" in m["raw"]) >= len(users),
            what="device mail at relay",
        )
        accepted = {
            i: ray.get(ray.get_actor(f"courier_{i}", namespace="multinode").stats.remote())["accepted"]
            for i in range(pool)
        }
        report["accepted_per_courier"] = accepted
        from messaging.runtime.pool import stable_index

        crossings = sum(
            1
            for i in range(pool)
            if accepted[i]
            for u in users
            if where[f"courier_{stable_index(f'user:{u.id}', pool)}"] != where[f"courier_{i}"]
        )
        report["cross_node_pairs"] = crossings

        victim = workers[0]
        moved = [name for name, node in where.items() if node == victim.node_id]
        report["actors_on_removed_node"] = len(moved)
        cluster.remove_node(victim, allow_graceful=False)
        started = time.monotonic()
        wait_until(
            lambda: all(placement().get(n) not in (None, victim.node_id) for n in moved),
            timeout=180,
            what="actors of the removed node alive elsewhere",
        )
        report["recovery_seconds"] = round(time.monotonic() - started, 1)
        after = [f"tag-after-{i:03d}" for i in range(12)]
        for i, tag in enumerate(after):
            send_mail(users[i % len(users)], tag)
        tags += after
        wait_until(lambda: all(t in device_texts() for t in after), timeout=120, what="mail after node loss")
        to_devices = [t for t in tags if not t.startswith("tag-dev-")]
        texts = device_texts()
        relayed = b" ".join(m["raw"] for m in box.relay.messages)
        report["lost"] = [t for t in to_devices if t not in texts] + [
            t for t in tags if t.startswith("tag-dev-") and t.encode() not in relayed
        ]
        report["delivered"] = len(tags) - len(report["lost"])
        report["placement_after"] = len(set(placement().values()))
    except Exception:
        from web.delivery.models import Message

        for m in Message.objects.filter(created_at__gte=started_at).order_by("id"):  # the database, for the log
            print(
                f"message {m.id} {m.direction} {m.status} {m.recipient} attempts={m.attempts} {m.last_error[:100]!r}"
                f" text={m.text[:40]!r}",
                file=sys.stderr,
            )
        print(
            f"relay sink holds {len(box.relay.messages)}, devices got {len(box.hive.to_device())}, "
            f"hive state {box.hive.state()}, pending {[p['packetId'] for p in box.hive.pending()]}",
            file=sys.stderr,
        )
        raise
    finally:
        stop_stack(config, echo=lambda _: None)
        ray.shutdown()
        box.stop()
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
