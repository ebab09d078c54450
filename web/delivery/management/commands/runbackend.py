"""``manage.py runbackend``: the whole stack on Ray, with sandbox fakes for services without credentials."""

from __future__ import annotations

import os
import signal
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Start the messaging backend on Ray (local or RAY_ADDRESS): actors, Serve app, admin, sandbox fakes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="Do not create the sandbox demo user/device.")

    def handle(self, *args, **options) -> None:
        from messaging.config import Config, ConfigError
        from messaging.launch import connect_ray, start_actors, start_serve, stop_stack, worker_env
        from messaging.sandbox.stack import sandboxed, start_sandbox
        from messaging.tls import check_local_files

        echo = self.stdout.write
        t0 = time.monotonic()
        try:  # fail closed before anything starts: all fakes, or every credential (messaging/sandbox/stack.py)
            config = Config.from_env()
            sandboxed(config)
            check_local_files(config)
        except (ConfigError, ValueError) as exc:
            raise CommandError(f"refusing to start: {exc}") from None
        echo("Space Beaver backend starting")
        echo("Database: applying migrations ...")
        call_command("migrate", interactive=False, verbosity=0)
        config, box = start_sandbox(config, record_dir=settings.DATA_DIR / "sandbox")
        for line in box.started:
            echo(f"  sandbox    {line}")
        if box.hive is not None and not options["no_demo"]:
            self._demo_user(echo)
        try:
            connect_ray(config, worker_env(), echo)
        except ConfigError as exc:
            box.stop()
            raise CommandError(f"refusing to start: {exc}") from None
        stop = threading.Event()
        try:
            echo("Actors:")
            stack = start_actors(config, echo)
            start_serve(config, stack, echo)
            self._summary(config, box, time.monotonic() - t0)
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            from messaging.lifecycle import drain_all

            echo("Stopping: draining first ...")
            try:
                drain_all(config, timeout=30, echo=echo)
            except Exception as exc:  # still stop
                echo(f"  drain failed: {exc}")
            stop_stack(config, echo)
            import ray

            ray.shutdown()
            box.stop()
            echo("Stopped.")

    def _summary(self, config, box, elapsed: float) -> None:
        echo = self.stdout.write
        base = f"http://{config.serve_http_host}:{config.serve_http_port}"
        echo(self.style.SUCCESS(f"Ready in {elapsed:.1f}s."))
        echo(
            f"  SMTP intake      {config.smtp_listen_host}:{config.smtp_listen_port}  (mail for @{config.email_domain})"
        )
        echo(f"  Twilio webhook   {base}/sms   (signed against {config.twilio_webhook_public_url or 'UNSET'})")
        echo(f"  Hive webhook     {base}/swarm (header X-Swarm-Secret)")
        echo(f"  Admin            {base}/admin/  (create a login: python manage.py createsuperuser)")
        haproxy = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
        echo(f"  HTTP ingress     {'HAProxy' if haproxy else 'Serve proxy'} (RAY_SERVE_ENABLE_HA_PROXY)")
        if box.hive is not None:
            echo(
                "  Try it:          python manage.py device_send --device 1234 --to friend@example.org "
                "'Hello from the hills'"
            )
        echo("Ctrl-C stops.")

    @staticmethod
    def _demo_user(echo) -> None:
        from web.accounts.models import Device, User

        user, created = User.objects.get_or_create(username="demo", defaults={"twilio_number": "+15005550006"})
        if created:
            user.set_unusable_password()
            user.save()
        Device.objects.get_or_create(device_id=1234, defaults={"owner": user, "nickname": "demo device"})
        echo("  sandbox    demo user 'demo' (Twilio number +15005550006) with device 1234")
