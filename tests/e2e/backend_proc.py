"""``manage.py runbackend`` (and other commands) as real subprocesses, with what they leave behind watched.

For the driver tests: each run gets its own DATA_DIR (SQLite database, sandbox records), free ports for
everything it listens on, and the sandbox fakes. While a driver runs, every process below it (Ray's head
processes, workers, Serve's HAProxy, ...) is noted, so a test can check that none of them survives it.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from tests.paths import REPO_ROOT

from .conftest import free_port, wait_until

ROOT = REPO_ROOT


def backend_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """A runbackend environment of its own: DATA_DIR, sandbox fakes and every port free (HAProxy's too)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SERVE_", "SANDBOX", "SMTP_"))}
    env.pop("DATABASE_URL", None)  # SQLite in DATA_DIR: nothing shared with the test database
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="web.settings",
        DATA_DIR=str(data_dir),
        SANDBOX="1",
        SANDBOX_HIVE_PORT=str(free_port()),
        SANDBOX_TWILIO_PORT=str(free_port()),
        SANDBOX_RELAY_PORT=str(free_port()),
        SANDBOX_ROCKBLOCK_PORT=str(free_port()),
        SMTP_LISTEN_PORT=str(free_port()),
        SERVE_HTTP_PORT=str(free_port()),
        SERVE_HAPROXY_STATS_PORT=str(free_port()),
        SERVE_HAPROXY_METRICS_PORT=str(free_port()),
        RAY_NAMESPACE=f"drv{os.getpid()}",
        POOL_SIZE="1",
        SWARM_POLL_INTERVAL="0.5",
        OUTBOX_SWEEP_INTERVAL="0.5",
        OUTBOX_BASE_DELAY="0.2",
        OUTBOX_MAX_DELAY="2",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


class Backend:
    """One ``manage.py runbackend`` process; its output goes to a file the test can read."""

    def __init__(self, env: dict[str, str], log: Path, *, own_group: bool = False) -> None:
        self.env = env
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runbackend"],
            cwd=ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,  # a process group of its own, which a test may signal as a whole
        )
        self.seen: dict[int, psutil.Process] = {}

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def note_processes(self) -> None:
        """Remember every process below the driver now (call it while the driver runs)."""
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def wait_ready(self, timeout: float = 240) -> None:
        def ready():
            self.note_processes()
            if self.proc.poll() is not None:
                raise AssertionError(f"runbackend exited with {self.proc.returncode}:\n{self.output[-4000:]}")
            return "Ready in" in self.output

        wait_until(ready, timeout=timeout, interval=0.5, what="runbackend to be ready")
        self.note_processes()

    def wait(self, timeout: float = 240) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.note_processes()
            if time.monotonic() > deadline:
                self.kill_all()
                raise AssertionError(f"runbackend still running after {timeout}s:\n{self.output[-4000:]}")
            time.sleep(0.5)
        self._out.close()
        return self.proc.returncode

    def signal(self, sig: int) -> None:
        self.note_processes()
        self.proc.send_signal(sig)

    def survivors(self) -> list[str]:
        """Processes that ran below the driver and still run (zombies count as gone: they hold nothing)."""
        left = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            except psutil.NoSuchProcess:
                continue
        return left

    def kill_all(self) -> None:
        """Clean-up after a failed test: the driver and everything noted below it."""
        self.note_processes()
        if self.proc.poll() is None:
            self.proc.kill()
        for p in self.seen.values():
            try:
                if p.is_running():
                    p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        if not self._out.closed:
            self._out.close()


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    from messaging.operations.launch import port_is_taken

    return not port_is_taken(host, port)


def stack_ports(env: dict[str, str]) -> list[int]:
    names = ("SMTP_LISTEN_PORT", "SERVE_HTTP_PORT", "SERVE_HAPROXY_STATS_PORT", "SERVE_HAPROXY_METRICS_PORT")
    return [int(env[n]) for n in names]


def healthz(env: dict[str, str]) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['SERVE_HTTP_PORT']}/healthz", timeout=10) as r:
        return r.status


def smtp_send(env: dict[str, str], subject: str, to: str = "demo@example.com") -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "friend@example.org", to, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    msg.set_content(f"{subject}: how is the trail?")
    with smtplib.SMTP("127.0.0.1", int(env["SMTP_LISTEN_PORT"]), timeout=30) as s:
        s.send_message(msg)  # raises unless 250: stored
