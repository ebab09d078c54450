"""Chaos run: the zero-loss scenarios of tests/e2e/test_zero_loss.py, longer, with the figures printed.

    .venv/bin/python -m benchmarks.chaos [--minutes-per-scenario 3] [--pool-size 2] [--rate 5]

Brings the whole stack up in-process on a local Ray (fresh SQLite in a temp dir, or DATABASE_URL), with
the sandbox fakes, then for each scenario runs steady traffic through SMTP, Twilio webhooks and Hive
packets (every message a unique token) while it: upgrades the stack again and again; kill -9s a random
actor's worker process every few seconds; injects remote faults (Hive and Twilio 5xx on 30% of calls,
the relay down for a while). After each scenario it waits for every token and prints sent / delivered
/ lost / duplicated / dead letters, and at the end drains the stack under load and prints the time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes-per-scenario", type=float, default=3.0)
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per intake path")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    duration = args.minutes_per_scenario * 60

    tmp = Path(tempfile.mkdtemp(prefix="spacebeaver-chaos-"))
    os.environ.setdefault("DATA_DIR", str(tmp))
    os.environ["DJANGO_SETTINGS_MODULE"] = "web.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)

    import ray
    from ray.util.state import list_actors

    from messaging.operations.kinds import KIND_NAMES
    from messaging.operations.launch import (
        connect_ray,
        disconnect_ray,
        private_ingress_ports,
        start_stack,
        stop_stack,
        worker_env,
    )
    from messaging.operations.lifecycle import drain_all, upgrade
    from messaging.runtime.config import Config
    from messaging.runtime.pool import member_name
    from messaging.sandbox.stack import start_sandbox
    from messaging.sandbox.traffic import Person, Traffic
    from web.accounts.models import Device, User
    from web.delivery.models import Message

    def free_port() -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    config = Config(
        email_domain="beaver.test",
        smtp_listen_port=free_port(),
        serve_http_port=free_port(),
        twilio_webhook_public_url="https://sms.beaver.test/sms",
        pool_size=args.pool_size,
        sandbox="1",
        swarm_poll_interval=0.2,
        outbox_sweep_interval=0.5,
        outbox_base_delay=0.2,
        outbox_max_delay=2.0,
        ray_namespace="chaos",
        device_outbound_per_hour=0,  # steady load from few devices and senders: the abuse limits would refuse it
        inbound_per_sender_per_hour=0,
        ray_dashboard=True,  # the kill -9 scenario finds actor pids through the state API, a dashboard module
        ray_dashboard_port=free_port(),
    )
    config, box = start_sandbox(config, ephemeral_ports=True)
    stamp = int(time.time()) % 10**6
    people = []
    for i in range(5):
        user = User.objects.create(username=f"chaos{stamp}u{i}", twilio_number=f"+1555{stamp:06d}{i}")
        device = Device.objects.create(device_id=int(f"6{stamp:06d}{i}"), owner=user)
        people.append(Person(user.username, user.twilio_number, device.device_id))
    db = Path(os.environ["DATA_DIR"]) / "spacebeaver.sqlite3"
    env = worker_env({"DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{db}"})
    private_ingress_ports(free_port)
    connect_ray(config, env)
    results = []
    try:
        start_stack(config)
        rng = random.Random(args.seed)

        def run(name, disturb) -> None:
            traffic = Traffic(config, box, people, rate=args.rate, seed=rng.randrange(10**6)).start()
            started = time.monotonic()
            events = disturb(started)
            traffic.stop()
            box.hive.clear_faults()
            box.twilio.set_faults(error_rate=0.0)
            wait_started = time.monotonic()
            report = traffic.wait_delivered(timeout=600)
            tokens = set(traffic.sent)
            dead = sum(
                1 for m in Message.objects.filter(status="dead").only("text") if any(t in m.text for t in tokens)
            )
            row = {
                "scenario": name,
                "events": events,
                "sent": report.sent,
                "delivered": report.delivered,
                "lost": len(report.lost),
                "duplicated": len(report.duplicated),
                "dead": dead,
                "sender_retries": report.retries,
                "seconds_to_settle": round(time.monotonic() - wait_started, 1),
                "by_path": report.by_path,
            }
            results.append(row)
            print(f"[{name}] {json.dumps(row)}", flush=True)

        def upgrades(started) -> int:
            n = 0
            while time.monotonic() - started < duration:
                upgrade(config, echo=lambda line: None)
                n += 1
                print(f"  upgrade {n} done at {time.monotonic() - started:.0f}s", flush=True)
            return n

        def kills(started) -> int:
            names = {member_name(k, i) for k in KIND_NAMES for i in range(config.pool_size)}
            gcs = ray.get_runtime_context().gcs_address
            n = 0
            while time.monotonic() - started < duration:
                alive = [
                    a
                    for a in list_actors(address=gcs, filters=[("state", "=", "ALIVE")], limit=1000)
                    if a.name in names
                ]
                victim = rng.choice(alive)
                os.kill(victim.pid, signal.SIGKILL)
                n += 1
                print(f"  kill -9 {victim.name} (pid {victim.pid}) at {time.monotonic() - started:.0f}s", flush=True)
                time.sleep(rng.uniform(3, 8))
            return n

        def faults(started) -> int:
            box.hive.set_faults(error_rate=0.3, status=503, seed=args.seed)
            box.twilio.set_faults(error_rate=0.3, status=503, seed=args.seed)
            outages = 0
            while time.monotonic() - started < duration:
                time.sleep(min(20, max(duration - (time.monotonic() - started), 0)))
                box.relay.stop()
                outages += 1
                print(f"  relay down at {time.monotonic() - started:.0f}s", flush=True)
                time.sleep(5)
                box.relay.start()
            return outages

        run("upgrades", upgrades)
        run("kill -9", kills)
        run("remote faults", faults)

        traffic = Traffic(config, box, people, rate=args.rate, seed=1).start()
        time.sleep(10)
        drain_started = time.monotonic()
        drained = drain_all(config, timeout=120, echo=lambda line: None)
        drain_seconds = round(time.monotonic() - drain_started, 1)
        traffic.halt()  # intake is closed now: stop making new messages
        print(f"[drain under load] idle={drained} seconds={drain_seconds}", flush=True)
        results.append({"scenario": "drain under load", "idle": drained, "seconds": drain_seconds})
    finally:
        stop_stack(config, echo=lambda line: None)
        disconnect_ray()
        box.stop()
    print("\nscenario          sent  delivered  lost  dup  dead  settle_s  events")
    for r in results:
        if "sent" in r:
            print(
                f"{r['scenario']:<16}{r['sent']:>6}{r['delivered']:>11}{r['lost']:>6}{r['duplicated']:>5}"
                f"{r['dead']:>6}{r['seconds_to_settle']:>10}  {r['events']}"
            )
        else:
            print(f"{r['scenario']:<16} idle={r['idle']} after {r['seconds']}s")
    return 0 if all(r.get("lost", 0) == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
