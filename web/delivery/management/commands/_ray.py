"""Joining the Ray cluster that runs the stack, for drain and upgrade."""

from __future__ import annotations

import ray
from django.conf import settings
from django.core.management.base import CommandError

from messaging.operations.console import default_log_file, route_driver_logs
from messaging.operations.launch import SECRET_ENV, ray_runtime_env, running_config, worker_env
from messaging.runtime.config import Config


def join_running_stack() -> Config:
    """Connect to the running stack's Ray (RAY_ADDRESS, else the local one) and return its config."""
    route_driver_logs(default_log_file(settings.DATA_DIR, "manage"))
    env = Config.from_env()
    try:
        ray.init(
            address=env.ray_address or "auto",
            namespace=env.ray_namespace,
            logging_level="WARNING",
            # never secrets: a runtime_env is kept in the GCS; workers have them in their own environment
            runtime_env=ray_runtime_env({k: v for k, v in worker_env().items() if k not in SECRET_ENV}),
        )
    except ConnectionError as exc:
        raise CommandError(f"no running Ray found ({exc}); is `make run` / runbackend running?") from exc
    try:
        return running_config(env.ray_namespace)
    except ValueError as exc:
        raise CommandError(f"no stack is running in Ray namespace {env.ray_namespace!r}") from exc
