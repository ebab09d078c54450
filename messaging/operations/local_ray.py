"""A Ray of our own on this machine, with the processes the stack uses and none that only idle.

``ray.init()`` without an address starts, next to the GCS and the raylet (which runs the dashboard agent and
the runtime-env agent), three Python processes a one-machine stack does not need:

- the autoscaler's monitor: one node of a fixed size, nothing to scale (87 MB resident);
- the log monitor, which sends the workers' output to the drivers. Here a thread of the driver does that work
  with Ray's own ``LogMonitor``, so warnings and errors from the actors reach the console as before (83 MB);
- the dashboard's API server. With ``RAY_DASHBOARD=0`` it loads only Ray's usage-statistics module, and
  ``ray.init`` turns usage statistics off anyway (137 MB). With ``RAY_DASHBOARD=1`` it runs, dashboard and all.

Measured on the 2-core VM (Ray 2.60, a driver and one bare actor): 822 MB over 9 processes became 516 MB
over 6, and the Ray start took 1.5 s instead of 3.8 s.

``ray.init`` has no option for these processes. ``ray start`` has ``--no-monitor`` and
``--include-log-monitor``, but it leaves the processes without an owner. So we start the head node as
``ray.init`` does, with Ray's ``Node`` class, the same token authentication and the same usage-statistics
choice, and the driver then joins it by its address. Every use of Ray's private modules is in this file;
check it again when the Ray pin moves.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time

import ray

log = logging.getLogger(__name__)

# How long the log follower waits when there was nothing new (Ray's log-monitor process: 0.1 s). Half a second
# later on the console is soon enough for a person, and the idle driver looks five times less often.
LOG_POLL_SECONDS = 0.5


class LocalRay:
    """The head node we started, plus the thread that passes its workers' output to the drivers."""

    def __init__(self, node, follower: _LogFollower):
        self._node = node
        self._follower = follower
        self.address = node.address  # the GCS address a driver joins (``ray.init(address=...)``)

    def stopping(self) -> bool:
        """Has one of its processes (GCS, raylet, ...) exited already, e.g. after a kill of the process group?"""
        try:
            return self._node is None or bool(self._node.dead_processes())
        except Exception:
            return False

    def stop(self) -> None:
        """Stop following the logs, then every process of the node, then let go of the node and its GCS client,
        as ``ray.shutdown`` does with the node it started (idempotent). Disconnect the driver first."""
        if self._node is None:
            return
        self._follower.stop()
        try:  # as ray.shutdown for a head node: objects spilled to external storage go with the session
            self._node.destroy_external_storage()
        except Exception as exc:  # the processes still stop
            log.warning("spilled objects not removed: %s", exc)
        self._node.kill_all_processes(check_alive=False, allow_graceful=True)
        self._node = None


class _LogFollower:
    """Ray's log monitor as a thread of the driver: new lines of the workers' output files are published to
    the GCS, from which every driver prints them (``ray.init``'s ``log_to_driver``), as the separate process
    does. The loop is ``LogMonitor.run`` with a way to stop."""

    def __init__(self, node):
        from ray._private.log_monitor import LogMonitor, is_proc_alive
        from ray._raylet import GcsClient

        logging.getLogger(LogMonitor.__module__).setLevel(logging.WARNING)  # not its start-up line on the console

        # gcs_address=None: the monitor then treats logs as with the first autoscaler, which has no process here.
        self._monitor = LogMonitor(
            node.node_ip_address, node.get_logs_dir_path(), GcsClient(address=node.gcs_address), is_proc_alive
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-log-follower", daemon=True)

    def start(self) -> _LogFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        monitor = self._monitor
        listed = 0.0
        while not self._stop.is_set():
            try:
                if monitor.should_update_filenames(listed):
                    monitor.update_log_filenames()
                    listed = time.time()
                monitor.open_closed_files()
                published = monitor.check_log_files_and_publish_updates()
            except Exception as exc:  # the node went away under us: nothing left to follow
                if not self._stop.is_set():
                    log.warning("worker output no longer reaches the console: %s", exc)
                return
            if not published:
                self._stop.wait(LOG_POLL_SECONDS)

    def stop(self) -> None:
        """Stop the thread, then let go of its GCS client."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._monitor = None


def start(*, dashboard: bool, dashboard_host: str, dashboard_port: int) -> LocalRay:
    """Start a head node on this machine, as ``ray.init()`` would, without the three processes above (the
    dashboard's API server only when ``dashboard`` is off). The caller then joins it with
    ``ray.init(address=local.address)`` and, when done, ``ray.shutdown()`` then ``local.stop()``."""
    from ray._common.usage import usage_lib
    from ray._private.authentication.authentication_token_setup import (
        enable_token_auth_by_default,
        ensure_token_if_auth_enabled,
    )
    from ray._private.node import Node
    from ray._private.parameter import RayParams
    from ray.experimental import internal_kv

    class HeadNode(Node):
        def start_api_server(self, *, include_dashboard, raise_on_failure):
            if include_dashboard:
                super().start_api_server(include_dashboard=include_dashboard, raise_on_failure=raise_on_failure)

    # What ray.init does for a cluster it starts: token authentication (a token in ~/.ray, made if missing,
    # which the driver joining below finds too) and no usage statistics.
    enable_token_auth_by_default()
    ensure_token_if_auth_enabled({}, create_token_if_missing=True)
    usage_lib.set_usage_stats_enabled_via_env_var(False)
    params = RayParams(
        include_dashboard=dashboard,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        no_monitor=True,
        include_log_monitor=False,
    )
    joined = internal_kv.global_gcs_client  # a driver of this process joined another Ray already (tests do)
    # shutdown_at_exit=False and spawn_reaper=True as ray.init: the processes end with this one (the kernel's
    # parent-death signal), and a normal exit stops them through the atexit hook below.
    node = HeadNode(params, head=True, shutdown_at_exit=False, spawn_reaper=True, ray_init_cluster=True)
    if joined is not None:  # Node points the process's key-value calls at its own GCS: back to the joined one
        internal_kv._initialize_internal_kv(joined)
    local = LocalRay(node, _LogFollower(node).start())
    atexit.register(_stop_at_exit, local)
    return local


def _stop_at_exit(local: LocalRay) -> None:
    if ray.is_initialized():
        ray.shutdown()
    local.stop()
