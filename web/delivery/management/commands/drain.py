"""``manage.py drain``: stop intake and let every actor finish what it has in flight."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from messaging.operations.lifecycle import drain_all

from ._ray import join_running_stack


class Command(BaseCommand):
    help = "Drain the running stack: mail servers refuse new sessions, satellites stop polling, queues empty."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for idle (default 120)")

    def handle(self, *args, **options) -> None:
        config = join_running_stack()
        self.stdout.write(f"Draining the stack in namespace {config.ray_namespace!r} ...")
        if not drain_all(config, options["timeout"], self.stdout.write):
            raise CommandError("drain timed out; see above what was still busy")
