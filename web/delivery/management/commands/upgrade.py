"""``manage.py upgrade``: rolling replacement of every actor (new code), losing nothing."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from messaging.operations.lifecycle import upgrade

from ._ray import join_running_stack


class Command(BaseCommand):
    help = "Replace every actor one at a time (drain, kill, restart under the same name); redeploy the Serve app."

    def handle(self, *args, **options) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        config = join_running_stack()
        self.stdout.write(f"Rolling upgrade of namespace {config.ray_namespace!r}, {config.pool_size} per kind ...")
        upgrade(config, self.stdout.write)
