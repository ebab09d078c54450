"""``manage.py runbackend``: the whole stack on Ray, with sandbox fakes for services without credentials."""

from __future__ import annotations

import os
import signal
import threading
import time

import ray
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from messaging.intake.smtp.tls import check_local_files
from messaging.operations import reaper
from messaging.operations.activity import activity_line, read_counters
from messaging.operations.console import default_log_file, ray_logs_dir, route_driver_logs
from messaging.operations.launch import (
    ActorsNotUp,
    IngressNotAnswering,
    actors_failure,
    connect_ray,
    disconnect_ray,
    ingress_failure,
    ingress_ports,
    local_ray_stopping,
    port_is_taken,
    start_stack,
    stop_stack,
    worker_env,
)
from messaging.operations.lifecycle import drain_all
from messaging.runtime.config import Config, ConfigError, ray_serve_haproxy
from messaging.sandbox.stack import sandboxed, start_sandbox
from web.accounts.models import Device, User


class Command(BaseCommand):
    help = "Start the messaging backend on Ray (local or RAY_ADDRESS): actors, Serve app, admin, sandbox fakes."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-demo", action="store_true", help="Do not create the sandbox demo user/device.")

    def handle(self, *args, **options) -> None:
        echo = self.stdout.write
        t0 = time.monotonic()
        log_file = route_driver_logs(default_log_file(settings.DATA_DIR, "runbackend"))
        try:  # fail closed before anything starts: all fakes, or every credential (messaging/sandbox/stack.py)
            config = Config.from_env()
            sandboxed(config)
            check_local_files(config)
        except (ConfigError, ValueError) as exc:
            raise CommandError(f"refusing to start: {exc}") from None
        echo("Space Beaver backend starting")
        echo("Database: applying migrations (while Ray starts) ...")
        migrating = Migrating()
        config, box = start_sandbox(config, record_dir=settings.DATA_DIR / "sandbox")
        for line in box.started:
            echo(f"  sandbox    {line}")
        joined = bool(config.ray_address)
        if not joined:  # whatever happens to this process, the local Ray it starts ends with it
            self._reaper = reaper.start()
        failure = None
        # SIGTERM (a pod stopping, `kill`) ends the process like Ctrl-C, even during start-up; ignored once the
        # stop below has begun, so it is not cut short.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            connect_ray(config, worker_env(), echo)
            signal.signal(signal.SIGTERM, _interrupt)  # again: ray.init puts a handler of its own that aborts
            self._ray_logs = f"{'on the Ray nodes in ' if joined else ''}{ray_logs_dir()}/"
            echo(
                f"Logs: this driver's in {log_file}; each message's state changes (messages-*.log), Ray's, "
                f"Serve's and HAProxy's {self._ray_logs}"
            )
            migrating.wait()
            echo(f"Database: migrations applied ({migrating.seconds:.1f}s)")
            if box.hive is not None and not options["no_demo"]:
                self._demo_user(echo)
            echo("Actors:")
            start_stack(config, echo)
            self._summary(config, box, time.monotonic() - t0, joined)
            self._report_activity(config)
        except KeyboardInterrupt:
            pass
        # e.g. a Ray node lacks the driver's secrets (ConfigError), the database cannot be migrated
        except (IngressNotAnswering, ActorsNotUp, ConfigError, MigrationsFailed) as exc:
            failure = exc
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._stop(config, box, joined, failure)
        if isinstance(failure, ConfigError):
            raise CommandError(f"refusing to start: {failure}")
        if isinstance(failure, MigrationsFailed):
            raise CommandError(str(failure))
        if failure is not None:
            raise CommandError(self._failure_line(config, failure, joined))

    def _stop(self, config, box, joined: bool, failure) -> None:
        """A Ray we started: drain and stop everything. A cluster we joined: leave the stack running there."""
        echo = self.stdout.write
        if joined:
            if ray.is_initialized():
                ray.shutdown()
            box.stop()
            echo(
                f"Driver stopped; the stack keeps running in the cluster at {config.ray_address} "
                f"(namespace {config.ray_namespace!r}). `python manage.py stop` stops it."
            )
            return
        if ray.is_initialized():
            self._logs = _serve_log_dir()

            def stop_everything() -> None:
                if local_ray_stopping():  # the signal reached Ray's own processes too (a process-group kill)
                    echo("Ray is stopping already: nothing left to drain.")
                else:
                    if failure is None:
                        echo("Stopping: draining first ...")
                        try:
                            drain_all(config, timeout=30, echo=echo)
                        except Exception as exc:  # still stop
                            echo(f"  drain failed: {exc}")
                    else:
                        echo("Stopping what was started ...")
                    try:
                        stop_stack(config, echo)
                    except Exception as exc:  # Ray itself still goes below
                        echo(f"  stop failed: {exc}")
                disconnect_ray()

            # A Ray that went away under us (its GCS stopped mid-drain) blocks its calls with no time limit of
            # their own: the stop is bounded here, and what would be left is ended with this process (reaper).
            stopper = threading.Thread(target=stop_everything, name="stop", daemon=True)
            stopper.start()
            stopper.join(STOP_DEADLINE)
            if stopper.is_alive():
                box.stop()
                echo(f"Stopping did not finish in {STOP_DEADLINE:.0f}s (Ray not answering); exiting now.")
                self.stdout.flush()
                os._exit(1)
        else:
            disconnect_ray()  # a local Ray started, but the driver never joined it
        box.stop()
        echo("Stopped.")

    def _failure_line(self, config, failure, joined: bool) -> str:
        if isinstance(failure, ActorsNotUp):  # checked once what was started has stopped: another process's port
            smtp = f"{config.smtp_listen_host or '0.0.0.0'}:{config.smtp_listen_port}"
            taken = None if joined else port_is_taken(config.smtp_listen_host, config.smtp_listen_port)
            where = getattr(self, "_ray_logs", "")
            return actors_failure(failure, smtp, taken, f"the actors' output{'' if joined else ' in'} {where}".rstrip())
        ports = ingress_ports(config)
        if joined:  # the ports are on the cluster's nodes: name the likely ones
            logs = "the Serve logs (/tmp/ray/session_latest/logs/serve/ on the Ray nodes)"
            return ingress_failure(failure, {}, {p: w for p, (w, _) in ports.items()}, logs)
        taken = {port: what for port, (what, host) in ports.items() if port_is_taken(host, port)}
        return ingress_failure(failure, taken, {p: w for p, (w, _) in ports.items()}, getattr(self, "_logs", ""))

    def _report_activity(self, config) -> None:
        """Until interrupted: every ``ACTIVITY_INTERVAL`` seconds, a line of what the stack did, if anything."""
        if config.activity_interval <= 0:
            while True:
                time.sleep(3600)
        before = read_counters(config)
        while True:
            time.sleep(config.activity_interval)
            after = read_counters(config)
            line = activity_line(before, after, config.activity_interval)
            if line:
                self.stdout.write(line)
            before = after

    def _summary(self, config, box, elapsed: float, joined: bool) -> None:
        echo = self.stdout.write
        base = f"http://{config.serve_http_host}:{config.serve_http_port}"
        echo(self.style.SUCCESS(f"Ready in {elapsed:.1f}s."))
        echo(
            f"  SMTP intake      {config.smtp_listen_host}:{config.smtp_listen_port}  (mail for @{config.email_domain})"
        )
        echo(f"  Twilio webhook   {base}/sms   (signed against {config.twilio_webhook_public_url or 'UNSET'})")
        echo(f"  Hive webhook     {base}/swarm (header X-Swarm-Secret)")
        echo(f"  Admin            {base}/admin/  (create a login: python manage.py createsuperuser)")
        mail_note = "; its mail: python manage.py sandbox_mail" if box.relay is not None else ""
        echo(f"  Self-service web {base}/  (sign up: {base}/signup/{mail_note})")
        haproxy = ray_serve_haproxy()
        echo(f"  HTTP ingress     {'HAProxy' if haproxy else 'Serve proxy'} (RAY_SERVE_ENABLE_HA_PROXY)")
        if box.hive is not None:
            echo(
                "  Try it:          python manage.py device_send --device 1234 --to friend@example.org "
                "'Hello from the hills'"
            )
        if joined:
            echo("Ctrl-C / SIGTERM ends this driver only; the stack keeps running. `python manage.py stop` stops it.")
        else:
            echo("Ctrl-C stops (drains first).")

    @staticmethod
    def _demo_user(echo) -> None:
        user, created = User.objects.get_or_create(username="demo", defaults={"twilio_number": "+15005550006"})
        if created:
            user.set_unusable_password()
            user.save()
        Device.objects.get_or_create(device_id=1234, defaults={"owner": user, "nickname": "demo device"})
        echo("  sandbox    demo user 'demo' (Twilio number +15005550006) with device 1234")
        sailor, created = User.objects.get_or_create(
            username="sailor", defaults={"twilio_number": "+15005550007", "share_location": True}
        )
        if created:
            sailor.set_unusable_password()
            sailor.save()
        Device.objects.get_or_create(
            device_id=DEMO_IMEI, defaults={"owner": sailor, "network": "rockblock", "nickname": "demo RockBLOCK"}
        )
        echo(
            f"  sandbox    demo user 'sailor' (Twilio number +15005550007, shares location) with RockBLOCK {DEMO_IMEI}"
        )


class MigrationsFailed(Exception):
    """The database could not be migrated (unreachable, or a migration failed)."""


class Migrating:
    """``migrate`` in a thread of its own, started before Ray: a Ray we start needs no database, so the two overlap
    (on 2 cores busy with Ray's own start, by 0-1.5 s: benchmarks/README.md). ``wait`` before anything touches the
    database: it raises ``MigrationsFailed`` naming the cause."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="migrate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            call_command("migrate", interactive=False, verbosity=0)
        except BaseException as exc:  # reported by wait(), in the main thread
            self.error = exc
        finally:
            self.seconds = time.monotonic() - started
            connections.close_all()  # this thread's connection

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise MigrationsFailed(
                f"database migrations failed: {type(self.error).__name__}: {self.error}"
            ) from self.error


DEMO_IMEI = 300434063180550  # the sandbox's RockBLOCK (a made-up IMEI: 15 digits)
STOP_DEADLINE = 90.0  # seconds for drain (30) and stop of a local stack before the driver gives up and exits


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _serve_log_dir() -> str:
    """Where Serve (and its HAProxy manager) log, for a Ray we started."""
    try:
        return os.path.join(ray._private.worker._global_node.get_logs_dir_path(), "serve") + "/"
    except Exception:
        return "/tmp/ray/session_latest/logs/serve/"
