"""``manage.py stop``: drain, then stop the whole stack (actors, Serve app, placement groups, published config)."""

from __future__ import annotations

import ray
from django.core.management.base import BaseCommand

from messaging.operations.launch import stop_stack
from messaging.operations.lifecycle import drain_all

from ._ray import join_running_stack


class Command(BaseCommand):
    help = "Stop the running stack: drain it (intake first), then stop every actor and the Serve app."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the drain (default 120)")
        parser.add_argument("--no-drain", action="store_true", help="stop at once, without draining first")

    def handle(self, *args, **options) -> None:
        config = join_running_stack()
        echo = self.stdout.write
        echo(f"Stopping the stack in namespace {config.ray_namespace!r} ...")
        if not options["no_drain"]:
            echo("Draining first ...")
            if not drain_all(config, options["timeout"], echo):
                echo("  drain timed out; stopping anyway (what was not sent stays stored and is sent after a restart)")
        stop_stack(config, echo)
        ray.shutdown()
        echo("Stopped. (A runbackend driver still running against this cluster does not start it again by itself.)")
