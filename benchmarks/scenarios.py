"""The benchmark scenarios. Each returns a JSON-able dict of what it measured; ``run.py`` sequences them.

Deliveries are checked by the tokens the load generators put into every message: a scenario reports
how many accepted messages arrived where they should (device, relay, Twilio), how many were lost and
how many arrived more than once, read back from the fakes (threads of the harness, benchmarks/remotes.py).

Around each load against the backend a :class:`~benchmarks.backend.StackMeter` measures the stack's CPU (all
its processes, the fakes not among them) and its peak RSS; the CPU is divided by the messages delivered.
"""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import smtp_load, webhook_load
from benchmarks.backend import PUBLIC_SMS_URL, Backend, StackMeter, actor_pids
from benchmarks.bare_servers import free_port, start_bare, stop_process
from benchmarks.cpu import cpu_figures
from benchmarks.report import native_share, package_shares, top_frames
from messaging.core.codec import encode_from_device
from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Protocol

TOKEN = re.compile(r"tok ([0-9A-Za-z]+-\d{6})")
BARE_PUBLIC_URL = "https://sms.bare.test/sms"
BARE_AUTH_TOKEN = "bare-bench-token"


@dataclass(frozen=True)
class Group:
    """Benchmark users of one scenario: mailboxes, Twilio numbers, device ids (same order)."""

    mailboxes: list[str]
    numbers: list[str]
    devices: list[int]

    @classmethod
    def from_seed(cls, seeded: dict) -> Group:
        people = seeded["people"]
        return cls([p["mailbox"] for p in people], [p["number"] for p in people], [p["device"] for p in people])


def poll_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Epoch time at which ``condition()`` first held, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(interval)
    return None


def tokens_in(texts: list[str], tag: str) -> Counter[str]:
    """In how many of ``texts`` each token of run ``tag`` occurs."""
    found: Counter[str] = Counter()
    for text in texts:
        found.update({t for t in TOKEN.findall(text) if t.startswith(f"{tag}-")})
    return found


def delivery_check(expected: set[str], found: Counter[str]) -> dict:
    """Accepted-vs-arrived accounting: delivered, lost (accepted, never arrived), duplicated."""
    return {
        "expected": len(expected),
        "delivered": sum(1 for t in expected if found[t]),
        "lost": sorted(t for t in expected if not found[t])[:20],
        "lost_count": sum(1 for t in expected if not found[t]),
        "duplicated": sum(1 for t in expected if found[t] > 1),
    }


class Fakes:
    """What the remote services' fakes (in this process) hold: the Hive, Twilio, the relay sink's record file."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.remotes = backend.remotes

    def hive_state(self) -> dict:
        return self.remotes.hive.state()

    def device_texts(self, devices: list[int]) -> list[str]:
        texts = []
        for device in devices:
            for packet in self.remotes.hive.to_device(device):
                msg = pb.MessageDataPB()
                msg.ParseFromString(base64.b64decode(packet["data"]))
                texts.extend(m.text for m in msg.message)
        return texts

    def twilio_bodies(self) -> list[str]:
        return [m.get("body", "") for m in self.remotes.twilio.messages]

    def routed(self) -> int:
        """Messages that went out: mail taken by the relay plus SMS taken by Twilio."""
        return len(self.remotes.relay.messages) + len(self.remotes.twilio.messages)

    def relay_texts(self) -> list[str]:
        path = self.backend.relay_record
        return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []


def cpu_result(meter: StackMeter, delivered: int) -> dict:
    """The stack's CPU over a metered load, per message delivered; and the harness's (the fakes run in it)."""
    figures = cpu_figures(meter.cpu_by_title, delivered, meter.wall_s)
    figures["harness_cpu_s"] = meter.harness_cpu_s
    return figures


@dataclass(frozen=True)
class Load:
    """How much load one run sends: ``count`` messages, ``concurrency`` at a time, for at most ``max_seconds``."""

    count: int
    concurrency: int
    max_seconds: float | None = None


def spawn_smtp(port: int, load: Load, recipients: list[str], tag: str) -> subprocess.Popen:
    return smtp_load.spawn(
        "127.0.0.1", port, load.count, load.concurrency, recipients, tag, max_seconds=load.max_seconds
    )


def spawn_webhook(url: str, public_url: str, token: str, load: Load, numbers: list[str], tag: str) -> subprocess.Popen:
    return webhook_load.spawn(
        url, public_url, token, numbers, load.count, load.concurrency, tag, max_seconds=load.max_seconds
    )


# --------------------------------------------------------------------------- baselines


def bare_smtp(load: Load, tag: str, log: Path) -> dict:
    port = free_port()
    proc = start_bare("smtp", port, log)
    try:
        result = smtp_load.collect(spawn_smtp(port, load, [f"r{i}@bare.test" for i in range(8)], tag))
    finally:
        stop_process(proc)
    return {"load": result.figures()}


def bare_webhook(load: Load, tag: str, log: Path) -> dict:
    port = free_port()
    proc = start_bare("webhook", port, log, auth_token=BARE_AUTH_TOKEN, public_url=BARE_PUBLIC_URL)
    try:
        url = f"http://127.0.0.1:{port}/sms"
        numbers = [f"+1415555{i:04d}" for i in range(8)]
        result = smtp_load.collect(spawn_webhook(url, BARE_PUBLIC_URL, BARE_AUTH_TOKEN, load, numbers, tag))
    finally:
        stop_process(proc)
    return {"load": result.figures()}


# --------------------------------------------------------------------------- the backend


def _load_to_devices(
    fakes: Fakes, spawned: subprocess.Popen, devices: list[int], tag: str, timeout: float = 120.0
) -> tuple[smtp_load.LoadResult, dict]:
    """Wait for a spawned load generator and then for the Hive to have one packet per accepted message."""
    base = fakes.hive_state()["sent"]
    results: list[smtp_load.LoadResult] = []

    def all_at_hive() -> bool:
        if not results and spawned.poll() is not None:
            results.append(smtp_load.collect(spawned))
        return bool(results) and fakes.hive_state()["sent"] - base >= results[0].ok

    load_ended = poll_until(lambda: spawned.poll() is not None, 900, interval=0.05)
    done_at = poll_until(all_at_hive, timeout) if load_ended is not None else None
    if not results:
        results.append(smtp_load.collect(spawned, timeout=60))
    result = results[0]
    check = delivery_check(set(result.accepted), tokens_in(fakes.device_texts(devices), tag))
    e2e_s = done_at - result.start if done_at is not None else None
    check.update(e2e_s=e2e_s, e2e_rate=(result.ok / e2e_s) if e2e_s else None, timed_out=done_at is None)
    return result, check


def smtp_backend(backend: Backend, group: Group, load: Load, tag: str, warmup: int) -> dict:
    """Mail to the benchmark users over C connections; then the time until the Hive has every message."""
    fakes = Fakes(backend)
    port = backend.ports["smtp"]
    if warmup:
        _load_to_devices(fakes, spawn_smtp(port, Load(warmup, 1), group.mailboxes, f"{tag}w"), group.devices, f"{tag}w")
    with StackMeter(backend) as meter:
        result, e2e = _load_to_devices(fakes, spawn_smtp(port, load, group.mailboxes, tag), group.devices, tag)
    return {
        "load": result.figures(),
        "end_to_end": e2e,
        "rss_peak_gb": meter.peak_gb,
        "cpu": cpu_result(meter, e2e["delivered"]),
    }


def webhook_backend(backend: Backend, group: Group, load: Load, tag: str, warmup: int) -> dict:
    """Signed Twilio webhooks to Serve; then (for information) the time until the Hive has every message."""
    fakes = Fakes(backend)

    def spawn(spec: Load, t: str) -> subprocess.Popen:
        return spawn_webhook(backend.sms_url, PUBLIC_SMS_URL, _auth_token(backend), spec, group.numbers, t)

    if warmup:
        _load_to_devices(fakes, spawn(Load(warmup, 1), f"{tag}w"), group.devices, f"{tag}w")
    with StackMeter(backend) as meter:
        result, e2e = _load_to_devices(fakes, spawn(load, tag), group.devices, tag)
    return {
        "load": result.figures(),
        "end_to_end": e2e,
        "rss_peak_gb": meter.peak_gb,
        "cpu": cpu_result(meter, e2e["delivered"]),
    }


def _auth_token(backend: Backend) -> str:
    """The Twilio auth token the backend checks webhook signatures with (the fake Twilio's, made per run)."""
    return backend.remotes.endpoints.twilio_auth_token


def _device_packets(group: Group, count: int, tag: str) -> list[tuple[str, int, str]]:
    """(token, device id, base64 packet): alternately an email and an SMS from the group's devices."""
    packets = []
    for i in range(count):
        tok = smtp_load.token(tag, i)
        if i % 2:
            message = (f"tok {tok}", Protocol.SMS, f"+1415555{9000 + i % 1000:04d}")
        else:
            message = (f"tok {tok}", Protocol.EMAIL, f"out{i}@elsewhere.test")
        data = base64.b64encode(encode_from_device([message])).decode("ascii")
        packets.append((tok, group.devices[i % len(group.devices)], data))
    return packets


def _inject(backend: Backend, packets: list[tuple[str, int, str]]) -> None:
    """Queue the packets at the fake Hive (in this process) as if the devices had sent them, all at once (the
    scenario times the backend, not how fast a client can fill the fake)."""
    hive = backend.remotes.hive
    for _, device, data in packets:
        hive.device_send(device, data)


def hive_poll(backend: Backend, group: Group, count: int, tag: str, warmup: int) -> dict:
    """``count`` device packets at the Hive; time until all are stored and acked, and until all went out."""
    fakes = Fakes(backend)
    routed = fakes.routed

    if warmup:
        base = routed()
        _inject(backend, _device_packets(group, warmup, f"{tag}w"))
        poll_until(lambda: routed() - base >= warmup, 120, interval=0.2)
    before, routed_before = fakes.hive_state(), routed()
    packets = _device_packets(group, count, tag)
    with StackMeter(backend) as meter:
        marks: dict[str, float] = {}
        failures: list[BaseException] = []

        def inject() -> None:
            try:
                _inject(backend, packets)
                marks["injected"] = time.time()
            except Exception as exc:  # re-raised below, in the scenario's thread
                failures.append(exc)

        started = time.time()
        injector = threading.Thread(target=inject)
        injector.start()  # polled while it runs: the stack may ack the first packets before the reply comes

        def all_done() -> bool:
            if failures:
                return True
            if "acked" not in marks and fakes.hive_state()["acked"] - before["acked"] >= count:
                marks["acked"] = time.time()
            if "routed" not in marks and routed() - routed_before >= count:
                marks["routed"] = time.time()
            return "acked" in marks and "routed" in marks

        poll_until(all_done, 120.0, interval=0.1)
        injector.join()
        if failures:
            raise RuntimeError(f"queuing packets at the fake Hive failed: {failures[0]!r}")
        acked_at, routed_at = marks.get("acked"), marks.get("routed")
        injected_s = marks["injected"] - started if "injected" in marks else None
    after = fakes.hive_state()
    check = delivery_check({t for t, _, _ in packets}, tokens_in(fakes.relay_texts() + fakes.twilio_bodies(), tag))
    return {
        "packets": count,
        "inject_s": injected_s,
        "acked_s": acked_at - started if acked_at else None,
        "routed_s": routed_at - started if routed_at else None,
        "acked": after["acked"] - before["acked"],
        "duplicate_acks": after["duplicate_acks"] - before["duplicate_acks"],
        "still_pending": after["pending"],
        "routed": check,
        "rss_peak_gb": meter.peak_gb,
        "cpu": cpu_result(meter, check["delivered"]),
    }


# --------------------------------------------------------------------------- py-spy


PROFILED = {  # the actors each path runs through (every intake stores itself: no user actors since 2026-11-25)
    "smtp": ("CourierActor",),
    "webhook": ("ServeReplica", "ProxyActor", "CourierActor"),
    "hive": ("CourierActor",),
}


def _start_spies(backend: Backend, classes: tuple[str, ...], out_dir: Path, label: str, gil: bool = False) -> dict:
    """py-spy on every actor of ``classes``: every thread's stack (waits included), or with ``gil`` only the thread
    holding the GIL (where the Python CPU goes; native work with the GIL released, e.g. a SQLite commit, is not
    seen)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    spies = {}
    for cls in classes:
        for pid in actor_pids(backend, cls):
            path = out_dir / f"profile{'-gil' if gil else ''}-{label}-{cls}-{pid}.txt"
            cmd = [str(py_spy), "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nonblocking"]
            cmd += ["--gil"] if gil else []
            cmd += ["--output", str(path)]
            spies[f"{cls}-{pid}"] = (path, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return spies


def _stop_spies(spies: dict) -> dict:
    profiles = {}
    for name, (path, proc) in spies.items():
        proc.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if not path.exists():
            profiles[name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        collapsed = path.read_text(encoding="utf-8", errors="replace")
        profiles[name] = {
            "file": str(path),
            "native_share": native_share(collapsed),
            "packages": package_shares(collapsed),
            "self": top_frames(collapsed, 12, leaf=True),
            "inclusive": top_frames(collapsed, 40, leaf=False),
            "ours": top_frames(collapsed, 12, leaf=False, focus="messaging/"),
        }
    return profiles


def profile_load(
    backend: Backend, kind: str, group: Group, load: Load, tag: str, out_dir: Path, gil: bool = False
) -> dict:
    """An extra load (not in the figures) with py-spy on the actors that serve it: where their time goes (with
    ``gil``: their Python CPU, see _start_spies). ``kind`` smtp or webhook: ``load`` to the devices; hive:
    ``load.count`` device packets out as email/SMS."""
    fakes = Fakes(backend)
    spies = _start_spies(backend, PROFILED[kind], out_dir, kind, gil)
    try:
        if kind == "hive":
            base = fakes.routed()
            started = time.monotonic()
            _inject(backend, _device_packets(group, load.count, tag))
            poll_until(lambda: fakes.routed() - base >= load.count, 120, interval=0.1)
            rate = (fakes.routed() - base) / (time.monotonic() - started)
        else:
            if kind == "smtp":
                spawned = spawn_smtp(backend.ports["smtp"], load, group.mailboxes, tag)
            else:
                token = _auth_token(backend)
                spawned = spawn_webhook(backend.sms_url, PUBLIC_SMS_URL, token, load, group.numbers, tag)
            result, _ = _load_to_devices(fakes, spawned, group.devices, tag)
            rate = result.rate
    finally:
        profiles = _stop_spies(spies)
    return {"load_rate": rate, "profiles": profiles}
