"""runbackend joining a cluster (RAY_ADDRESS): its exit leaves the stack running; a new driver re-attaches to it
without duplicating anything; ``manage.py stop`` is what stops it.

The cluster is a real one, started here with ``ray start --head`` (its own temp dir and ports, the Ray pods'
settings as k8s/configmap.yaml gives them), and always ended with its process tree at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil
import pytest

from .backend_proc import ROOT, Backend, backend_env, healthz, manage, smtp_send
from .conftest import free_port, wait_until

pytestmark = pytest.mark.e2e

KIND_CLASSES = {"CourierActor"}

STACK_STATE = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
actors = [
    {"name": a["Name"], "cls": a["ActorClassName"], "id": a["ActorID"]}
    for a in ray._private.state.actors().values() if a["State"] == "ALIVE"
]
groups = [g["name"] for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
print(json.dumps({"actors": actors, "groups": groups}))
"""


def stack_state(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STACK_STATE, env["RAY_ADDRESS"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(state: dict) -> dict[str, str]:
    """name -> actor id of our pool members (exactly one per name, or the assertion says which are doubled)."""
    members = [a for a in state["actors"] if a["cls"] in KIND_CLASSES]
    doubled = [n for n, c in Counter(a["name"] for a in members).items() if c > 1]
    assert not doubled, f"duplicate actors: {doubled}"
    assert Counter(a["cls"] for a in members) == Counter(KIND_CLASSES), members
    return {a["name"]: a["id"] for a in members}


def message_status(data_dir: Path, subject: str) -> str | None:
    with sqlite3.connect(data_dir / "spacebeaver.sqlite3", timeout=30) as db:
        row = db.execute("SELECT status FROM delivery_message WHERE subject = ?", (subject,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def ray_cluster(tmp_path):
    """A one-node Ray cluster of our own (`ray start --head --block`), its whole process tree ended afterwards."""
    from messaging.operations.haproxy_admin import write_launcher
    from messaging.sandbox.fake_twilio import SANDBOX_AUTH_TOKEN

    # The cluster's own token (not ~/.ray/auth_token, which other local clusters may rewrite), for every client.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    # The credentials every node of a cluster has from its environment (the Ray pods' Secret): here the
    # sandbox's, which the drivers use too (secrets never travel through Ray; runbackend checks they agree).
    auth.update(
        SWARM_PASSWORD="sandbox",
        ROCKBLOCK_PASSWORD="sandbox",
        TWILIO_AUTH_TOKEN=SANDBOX_AUTH_TOKEN,
        SWARM_WEBHOOK_SECRET=secrets.token_urlsafe(24),
    )
    temp = Path(tempfile.mkdtemp(prefix="rayc-"))  # short: Ray's socket paths must stay under ~100 bytes
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SERVE_")) and k != "DATABASE_URL"}
    env.update(
        PYTHONPATH=str(ROOT),
        # What k8s/configmap.yaml gives the Ray pods: HAProxy through our launcher, admin ports of our own.
        RAY_SERVE_ENABLE_HA_PROXY="1",
        RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="5",
        RAY_SERVE_HAPROXY_BINARY_PATH=write_launcher(),
        SERVE_HAPROXY_HOST="127.0.0.1",
        SERVE_HAPROXY_STATS_PORT=str(free_port()),
        SERVE_HAPROXY_METRICS_PORT=str(free_port()),
        RAY_prestart_worker_first_driver="0",
        **auth,
    )
    log = open(tmp_path / "ray-start.log", "w")  # noqa: SIM115 - closed below
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--dashboard-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--temp-dir={temp}",
    ]
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[int, psutil.Process] = {}

    def note():
        try:
            for child in psutil.Process(head.pid).children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    try:

        def started():
            note()
            assert head.poll() is None, (tmp_path / "ray-start.log").read_text()[-3000:]
            return "Ray runtime started" in (tmp_path / "ray-start.log").read_text()

        wait_until(started, timeout=120, interval=0.5, what="ray start --head")
        yield {"RAY_ADDRESS": f"127.0.0.1:{port}", **auth}
    finally:
        note()
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for p in seen.values():  # and whatever did not stop with it
            try:
                p.kill()
            except psutil.NoSuchProcess:
                continue
        log.close()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_the_drivers_exit_leaves_the_stack_running_and_a_new_driver_reattaches(tmp_path, ray_cluster):
    data = tmp_path / "data"
    env = backend_env(data, **ray_cluster)
    first = Backend(env, tmp_path / "first.log")
    second = None
    try:
        first.wait_ready()
        assert healthz(env) == 200
        before = stack_state(env)
        members = ours(before)

        first.signal(signal.SIGTERM)
        assert first.wait() == 0, first.output[-3000:]
        assert "the stack keeps running" in first.output
        # No driver now: mail is still accepted (250 only once stored) and the webhooks still answer.
        smtp_send(env, "while no driver runs")
        assert message_status(data, "while no driver runs") is not None
        assert healthz(env) == 200
        assert ours(stack_state(env)) == members

        second = Backend(env, tmp_path / "second.log")
        second.wait_ready()
        after = stack_state(env)
        assert ours(after) == members  # the same actors: re-attached, none new, none doubled
        assert Counter(after["groups"]) == Counter(before["groups"])  # placement groups reused
        # The fake Hive is back with the new driver (same port): the message reaches the device.
        wait_until(
            lambda: message_status(data, "while no driver runs") == "sent",
            timeout=90,
            interval=0.5,
            what="the message stored without a driver to reach the device",
        )
        second.signal(signal.SIGTERM)
        assert second.wait() == 0, second.output[-3000:]

        stopped = manage(env, "stop")
        assert stopped.returncode == 0, stopped.stdout[-3000:] + stopped.stderr[-3000:]
        assert "Draining first" in stopped.stdout and "Stopped." in stopped.stdout
        left = stack_state(env)
        assert not [a for a in left["actors"] if a["cls"] in KIND_CLASSES or a["cls"].startswith("Serve")]
        assert not left["groups"]
    finally:
        first.kill_all()
        if second is not None:
            second.kill_all()
