"""The local Ray of ``make run`` (operations/local_ray.py): the GCS, the raylet and its agents, and nothing that
only idles; stopping it leaves no process behind. (That the workers' warnings still reach the console through
the driver's log follower: test_driver_console.py.)

Each test starts a node of its own, next to the session's stack: the node's processes are the descendants of
this process that were not there before.
"""

from __future__ import annotations

import psutil
import pytest

from messaging.operations import local_ray

from .conftest import free_port, wait_until

pytestmark = pytest.mark.e2e


def _descendants() -> dict[int, str]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            found[child.pid] = " ".join(child.cmdline()) or child.name()
        except psutil.Error:
            continue
    return found


def test_local_ray_runs_no_monitor_log_monitor_or_dashboard_and_stops_whole(e2e):
    from ray.experimental.internal_kv import _internal_kv_get

    from messaging.operations.launch import CONFIG_KV_NAMESPACE, _config_key

    before = set(_descendants())
    local = local_ray.start(dashboard=False, dashboard_host="127.0.0.1", dashboard_port=free_port())
    try:
        # this process's driver (joined to the session's stack) still reads that stack's key-value store
        assert _internal_kv_get(_config_key(e2e.config.ray_namespace), namespace=CONFIG_KV_NAMESPACE)
        wait_until(
            lambda: any("dashboard/agent.py" in c for p, c in _descendants().items() if p not in before),
            timeout=60,
            what="the raylet's dashboard agent",
        )
        ours = {pid: cmd for pid, cmd in _descendants().items() if pid not in before}
        commands = "\n".join(ours.values())
        assert "gcs_server" in commands and "raylet" in commands, commands
        for idle in ("monitor.py", "log_monitor.py", "dashboard/dashboard.py"):
            assert not [c for c in ours.values() if f"/{idle}" in c], f"{idle} runs:\n{commands}"
        assert local.address and not local.stopping()
    finally:
        local.stop()
    wait_until(
        lambda: not [p for p in ours if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
        timeout=30,
        what="every process of the stopped node to end",
    )


def test_the_dashboard_runs_when_asked():
    before = set(_descendants())
    local = local_ray.start(dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port())
    try:
        wait_until(
            lambda: any("dashboard/dashboard.py" in c for p, c in _descendants().items() if p not in before),
            timeout=60,
            what="the dashboard process",
        )
    finally:
        local.stop()
