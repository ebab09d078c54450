"""The backend under test: ``manage.py runbackend`` in a subprocess, its processes, memory, CPU, and its database.

``start_backend`` starts the remote services' fakes in this process (benchmarks/remotes.py) and runs the real
launch path against them as in production (``SANDBOX=0``, a fresh SQLite file, a Ray of its own with a private
temp dir, free ports) and times it; ``stop_backend`` stops it with SIGINT, as a person does, then the fakes.
The database helpers run in a short-lived Django process against the same DATA_DIR
(``python -m benchmarks.backend seed|count``), never inside the harness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import psutil

from benchmarks.bare_servers import free_port, http_ready, smtp_ready, wait_for
from benchmarks.cpu import ProcSample, cpu_by_title
from benchmarks.remotes import Endpoints, Remotes, remote_env, start_remotes
from messaging.runtime.config import Config, WebSettings

REPO = Path(__file__).resolve().parent.parent
PUBLIC_SMS_URL = "https://sms.bench.test/sms"  # what Twilio would be configured with; signatures use it
EMAIL_DOMAIN = "bench.test"
# Environment that would point the stack elsewhere than at its own fresh Ray, database and fakes: every variable
# of the stack's configuration (the harness sets what it means) and Ray's own address.
DROPPED_ENV = frozenset({f.name.upper() for cls in (Config, WebSettings) for f in fields(cls)} | {"RAY_ADDRESS"})


@dataclass
class Backend:
    proc: subprocess.Popen
    env: dict[str, str]
    workdir: Path
    log_path: Path
    ports: dict[str, int]
    remotes: Remotes
    smtp_ready_s: float | None = None
    serve_ready_s: float | None = None
    all_up_s: float | None = None  # runbackend printed "Ready in": every actor up (the senders start last)
    stats: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def ray_tmp(self) -> Path:
        return self.workdir / "ray"

    @property
    def sms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['serve']}/sms"

    @property
    def relay_record(self) -> Path:
        return self.remotes.relay_record


def backend_env(
    workdir: Path,
    ports: dict[str, int],
    pool_size: int,
    poll_interval: float,
    endpoints: Endpoints,
    environ: dict[str, str] | None = None,
    abuse_limits: int = 0,
) -> dict[str, str]:
    """The backend's environment: the harness's own minus any stack configuration, plus the production
    configuration of the remote services at ``endpoints`` and the benchmark's settings. ``abuse_limits``: both
    hourly limits at this (0: off)."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in DROPPED_ENV}
    env.update(remote_env(endpoints))
    env.update(
        DATA_DIR=str(workdir / "data"),
        RAY_TMPDIR=str(workdir / "ray"),  # a Ray of our own: never joins another local cluster
        RAY_NAMESPACE=f"bench{os.getpid()}x{int(time.time())}",
        DJANGO_SETTINGS_MODULE="web.settings",
        EMAIL_DOMAIN=EMAIL_DOMAIN,
        TWILIO_WEBHOOK_PUBLIC_URL=PUBLIC_SMS_URL,
        SMTP_LISTEN_PORT=str(ports["smtp"]),
        SERVE_HTTP_PORT=str(ports["serve"]),
        SERVE_HAPROXY_STATS_PORT=str(free_port()),  # not the fixed defaults: another stack may run here
        SERVE_HAPROXY_METRICS_PORT=str(free_port()),
        POOL_SIZE=str(pool_size),
        # Load from few devices and senders: production's limits (60, 20) would refuse it. Off by default; set
        # high (--abuse-limits), every message is counted again in its storing transaction, as in production.
        DEVICE_OUTBOUND_PER_HOUR=str(abuse_limits),
        INBOUND_PER_SENDER_PER_HOUR=str(abuse_limits),
        SWARM_POLL_INTERVAL=str(poll_interval),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_backend(
    log_path: Path, *, pool_size: int = 2, poll_interval: float = 0.2, timeout: float = 240, abuse_limits: int = 0
) -> Backend:
    """Start the fakes here, then runbackend against them; return once SMTP answers EHLO, Serve answers /healthz and
    runbackend says every actor is up (each timed from the run command, the fakes already up, as remote services
    are)."""
    workdir = Path(tempfile.mkdtemp(prefix="sbb-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    (workdir / "ray").mkdir()
    ports = {name: free_port() for name in ("smtp", "serve")}
    remotes = start_remotes(workdir, ports["serve"], EMAIL_DOMAIN)
    env = backend_env(workdir, ports, pool_size, poll_interval, remotes.endpoints, abuse_limits=abuse_limits)
    out = log_path.open("ab")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runbackend", "--no-demo"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C on the harness reaches it only through stop_backend
        )
    except BaseException:
        remotes.stop()
        raise
    finally:
        out.close()
    backend = Backend(proc=proc, env=env, workdir=workdir, log_path=log_path, ports=ports, remotes=remotes)
    try:
        wait_for(lambda: smtp_ready("127.0.0.1", ports["smtp"]), timeout, "backend SMTP", interval=0.1, proc=proc)
        backend.smtp_ready_s = time.monotonic() - started
        health = f"http://127.0.0.1:{ports['serve']}/healthz"
        wait_for(lambda: http_ready(health), timeout, "backend Serve", interval=0.1, proc=proc)
        backend.serve_ready_s = time.monotonic() - started
        # The figures above are when intake answers; idle memory and CPU are read once every actor is up.
        wait_for(lambda: b"Ready in" in log_path.read_bytes(), timeout, "backend ready", interval=0.1, proc=proc)
        backend.all_up_s = time.monotonic() - started
    except RuntimeError:
        stop_backend(backend)
        raise
    return backend


def stack_processes(backend: Backend) -> list[psutil.Process]:
    """runbackend and every process under it, plus any process whose command line names our Ray temp dir."""
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(backend.proc.pid)
        found[root.pid] = root
        found.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    marker = str(backend.ray_tmp)
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (p.info["cmdline"] or ())):
            found.setdefault(p.pid, p)
    return list(found.values())


def process_title(p: psutil.Process) -> str:
    """A short name: ``ray::CourierActor`` for Ray workers, else the program (and script) name."""
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if not cmd:
        return p.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0].split(".")[0]
    script = next((os.path.basename(a) for a in cmd[1:] if a.endswith(".py")), "")
    module = cmd[cmd.index("-m") + 1] if "-m" in cmd[:-1] else ""
    return " ".join(x for x in (os.path.basename(cmd[0]), script or module) if x)


def memory(backend: Backend, *, proportional: bool = False) -> dict:
    """Resident memory summed over the stack's processes; with ``proportional`` also PSS (shared pages
    counted once), RSS by kind of process (``{title: [processes, MB]}``, biggest first) and every process
    (``[[pid, title, RSS MB, PSS MB], ...]``, biggest first)."""
    rss = pss = 0
    count = 0
    by_title: dict[str, list[float]] = {}
    each: list[list] = []
    for p in stack_processes(backend):
        try:
            info = p.memory_full_info() if proportional else p.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", 0)
        count += 1
        if proportional:
            title = process_title(p)
            entry = by_title.setdefault(title, [0, 0.0])
            entry[0] += 1
            entry[1] += info.rss / 1e6
            each.append([p.pid, title, info.rss / 1e6, getattr(info, "pss", 0) / 1e6])
    out: dict = {"rss_gb": rss / 1e9, "processes": count}
    if proportional:
        out["pss_gb"] = pss / 1e9
        out["rss_mb_by_process"] = dict(sorted(by_title.items(), key=lambda item: -item[1][1]))
        out["each_process"] = sorted(each, key=lambda row: -row[2])
    return out


def sample(p: psutil.Process) -> tuple[tuple[int, float], ProcSample, int] | None:
    """One process's CPU sample (see benchmarks/cpu.py) and its RSS in bytes; None if it is gone."""
    try:
        with p.oneshot():
            times = p.cpu_times()
            key = (p.pid, p.create_time())
            rss = p.memory_info().rss
            ppid = p.ppid()
        title = process_title(p)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    own = times.user + times.system
    children = times.children_user + times.children_system
    return key, ProcSample(own, children, ppid, title), rss


def snapshot(backend: Backend) -> tuple[dict[tuple[int, float], ProcSample], int]:
    """Every stack process's CPU sample, and their RSS summed (bytes)."""
    samples: dict[tuple[int, float], ProcSample] = {}
    rss = 0
    for p in stack_processes(backend):
        got = sample(p)
        if got is not None:
            samples[got[0]] = got[1]
            rss += got[2]
    return samples, rss


class StackMeter:
    """Around a load (the ``with`` block): the stack's CPU seconds per process title, from a snapshot at the
    start and one at the end (benchmarks/cpu.py), and its peak RSS, sampled every ``interval`` seconds in a
    thread (those samples also catch processes that end during the load). The harness's own CPU (the fakes
    of the remote services run in it) is measured over the same window, apart."""

    def __init__(self, backend: Backend, interval: float = 0.5):
        self.backend = backend
        self.interval = interval
        self.peak_gb = 0.0
        self.seen: dict[tuple[int, float], ProcSample] = {}
        self.cpu_by_title: dict[str, float] = {}
        self.wall_s = 0.0
        self.harness_cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _take(self) -> dict[tuple[int, float], ProcSample]:
        samples, rss = snapshot(self.backend)
        self.seen.update(samples)
        self.peak_gb = max(self.peak_gb, rss / 1e9)
        return samples

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    @staticmethod
    def _harness_cpu() -> float:
        times = psutil.Process().cpu_times()
        return times.user + times.system

    def __enter__(self) -> StackMeter:
        self._harness_start = self._harness_cpu()
        self._before = self._take()
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        after = self._take()
        self.wall_s = time.monotonic() - self._started
        self.harness_cpu_s = self._harness_cpu() - self._harness_start
        self.cpu_by_title = cpu_by_title(self._before, after, self.seen)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_title.values())


def idle_cpu(backend: Backend, seconds: float = 5.0) -> dict:
    """The stack's CPU while nothing is sent for ``seconds``: cores busy on average, and by process title."""
    with StackMeter(backend) as meter:
        threading.Event().wait(seconds)  # a measuring window, nothing to wait for
    cores = {title: s / meter.wall_s for title, s in meter.cpu_by_title.items()}
    return {"wall_s": meter.wall_s, "cores": meter.cpu_s / meter.wall_s, "cores_by_title": cores}


def actor_pids(backend: Backend, class_name: str) -> list[int]:
    """Pids of the Ray workers running actors of ``class_name`` (Ray titles them ``ray::<Class>...``)."""
    pids = []
    for p in stack_processes(backend):
        try:
            title = " ".join(p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith(f"ray::{class_name}"):
            pids.append(p.pid)
    return sorted(pids)


def stop_backend(backend: Backend, timeout: float = 180, keep_workdir: bool = False) -> dict:
    """SIGINT (Ctrl-C) and wait for a clean exit; then kill anything of our Ray that is still alive. SIGTERM (runbackend
    drains on it the same) when this harness ignores SIGINT: started in the background by a shell, it passed that
    on to runbackend, which would wait out ``timeout`` before anything stopped it.

    The work dir (database, sandbox records, Ray logs) is removed unless ``keep_workdir``.
    """
    started = time.monotonic()
    proc = backend.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    stopped_s = time.monotonic() - started
    leftovers = [p for p in stack_processes(backend) if p.pid != proc.pid]
    for p in leftovers:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    backend.remotes.stop()
    if not keep_workdir:
        shutil.rmtree(backend.workdir, ignore_errors=True)
    return {"stop_s": stopped_s, "exit_code": proc.returncode, "leftover_processes": len(leftovers)}


# --------------------------------------------------------------------------- database helpers (subprocess)


def django_call(backend: Backend, *args: str, timeout: float = 120) -> dict:
    """Run ``python -m benchmarks.backend ARGS`` against the backend's database; returns its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.backend", *args],
        cwd=REPO,
        env=backend.env,
        capture_output=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.backend {args[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(done.stdout)


def seed(prefix: str, count: int, first_number: int, first_device: int) -> dict:
    """Create ``count`` users ``<prefix><i>`` each with a Twilio number and an active device."""
    import django

    django.setup()
    from django.db import transaction

    from web.accounts.models import Device, User

    people = []
    with transaction.atomic():
        for i in range(count):
            user = User(username=f"{prefix}{i}", twilio_number=f"+1415555{first_number + i:04d}")
            user.set_unusable_password()
            user.save()
            device = Device.objects.create(device_id=first_device + i, owner=user, nickname=f"bench {prefix}{i}")
            people.append(
                {"mailbox": f"{user.username}@{EMAIL_DOMAIN}", "number": user.twilio_number, "device": device.device_id}
            )
    return {"people": people}


def count_messages() -> dict:
    """Rows of the Message table by direction / protocol / status."""
    import django

    django.setup()
    from django.db.models import Count

    from web.delivery.models import Message

    rows = Message.objects.values("direction", "protocol", "status").annotate(n=Count("id"))
    return {f"{r['direction']}/{r['protocol']}/{r['status']}": r["n"] for r in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Benchmark database helpers (run with the backend's env).")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--prefix", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--first-number", type=int, required=True)
    s.add_argument("--first-device", type=int, required=True)
    sub.add_parser("count")
    args = parser.parse_args(argv)
    if args.command == "seed":
        result = seed(args.prefix, args.count, args.first_number, args.first_device)
    else:
        result = count_messages()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
