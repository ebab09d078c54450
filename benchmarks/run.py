"""The benchmark harness, one command: ``.venv/bin/python -m benchmarks.run [--quick]``.

Each round: the bare baselines (aiosmtpd, uvicorn), then a fresh backend (``manage.py runbackend`` in a
subprocess: start-up time, idle memory), SMTP intake with the end-to-end time to the Hive, Twilio
webhooks through Serve, a burst of device packets at the Hive, then a clean stop. Every round writes to
``benchmarks/results/bench-<stamp>.json`` (updated as it goes); the end prints min/median/max per
figure and a table with the targets. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import scenarios
from benchmarks.backend import django_call, idle_cpu, memory, start_backend, stop_backend
from benchmarks.cpu import net_of_idle_ms, shares_text
from benchmarks.report import TARGETS, path_table, ratio, summarise, table

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    rounds: int = 3
    smtp_count: int = 2000
    smtp_concurrency: int = 4
    webhook_count: int = 2000
    webhook_concurrency: int = 8
    hive_packets: int = 1000
    max_seconds: float = 60.0  # a load run starts no new message after this (guards the total run time)
    users: int = 8
    warmup: int = 20
    pool_size: int = 2
    poll_interval: float = 0.2
    abuse_limits: int = 0  # both hourly limits (DEVICE_OUTBOUND_PER_HOUR, INBOUND_PER_SENDER_PER_HOUR); 0: off
    profile: bool = False
    profile_gil: bool = False  # the profile samples only the thread holding the GIL (--profile-gil)
    keep_workdirs: bool = False

    @classmethod
    def quick(cls, **overrides) -> Plan:
        return cls(**{"rounds": 1, "smtp_count": 300, "webhook_count": 300, "max_seconds": 30.0, **overrides})

    @property
    def smtp(self) -> scenarios.Load:
        return scenarios.Load(self.smtp_count, self.smtp_concurrency, self.max_seconds)

    @property
    def webhook(self) -> scenarios.Load:
        return scenarios.Load(self.webhook_count, self.webhook_concurrency, self.max_seconds)


def echo(line: str = "") -> None:
    print(line, flush=True)


def attempt(name: str, fn: Callable[[], dict]) -> dict:
    """Run one scenario; a failure is recorded (and printed) instead of ending the whole run."""
    started = time.monotonic()
    try:
        result = fn()
    except Exception as exc:
        echo(f"  {name}: FAILED: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    result["scenario_s"] = time.monotonic() - started
    return result


CPU_KEYS = {"smtp backend": "cpu_smtp_ms", "webhook backend": "cpu_webhook_ms", "hive poll": "cpu_hive_ms"}


def cpu_line(name: str, result: dict) -> str:
    """``CPU 11.0 ms/msg (target <= 3.0 ms) = 1.6 cores; by process (ms/msg): ...; harness 0.9 s``."""
    cpu = result.get("cpu")
    if not cpu or cpu["cpu_ms_per_msg"] is None:
        return ""
    goal = next((t.goal_text() for t in TARGETS if t.key == CPU_KEYS.get(name)), "")
    goal = f" (target {goal})" if goal else ""
    net = cpu.get("net_of_idle_ms_per_msg")
    net = f" ({net:.1f} net of the idle CPU)" if net is not None else ""
    return (
        f"CPU {cpu['cpu_ms_per_msg']:.1f} ms/msg{goal}{net} over {cpu['messages']} delivered, "
        f"{cpu['cpu_s']:.1f}s in {cpu['wall_s']:.1f}s = {cpu['cores']:.2f} cores; ms/msg by process: "
        f"{shares_text(cpu['ms_per_msg_by_title'])}; harness with the fakes {cpu['harness_cpu_s']:.1f}s"
    )


def add_net_of_idle(result: dict, idle: dict | None) -> dict:
    """Put the CPU per message net of the idle CPU into a scenario's result (when both were measured)."""
    if "cpu" in result and idle:
        result["cpu"]["net_of_idle_ms_per_msg"] = net_of_idle_ms(result["cpu"], idle.get("cores"))
    return result


def describe(name: str, result: dict) -> None:
    """One to three lines per scenario as it finishes."""
    if "error" in result:
        return
    if "load" in result:
        load, lat = result["load"], result["load"]["latency"]
        errors = f" errors={load['errors']}" if load["errors"] else ""
        errors += f" (time cap: {load['skipped']} not sent)" if load["skipped"] else ""
        echo(
            f"  {name}: {load['ok']}/{load['sent']} ok in {load['wall_s']:.2f}s = {load['rate']:.0f}/s; "
            f"p50 {lat['p50_ms']:.1f} p95 {lat['p95_ms']:.1f} p99 {lat['p99_ms']:.1f} ms; "
            f"client cpu {load['client_cpu_s']:.2f}s{errors}"
        )
    if "end_to_end" in result:
        e2e = result["end_to_end"]
        took = f"{e2e['e2e_s']:.2f}s = {e2e['e2e_rate']:.0f}/s" if e2e["e2e_s"] else "TIMED OUT"
        echo(
            f"  {name} -> Hive: {took}; delivered {e2e['delivered']}/{e2e['expected']}, "
            f"lost {e2e['lost_count']}, duplicated {e2e['duplicated']}; peak RSS {result['rss_peak_gb']:.2f} GB"
        )
    if "packets" in result:
        routed = result["routed"]
        fmt = lambda v: f"{v:.2f}s" if v is not None else "TIMED OUT"  # noqa: E731
        echo(
            f"  {name}: {result['packets']} packets queued in {fmt(result['inject_s'])}; from the first one, all "
            f"acked after {fmt(result['acked_s'])}, all delivered out after {fmt(result['routed_s'])}; "
            f"delivered {routed['delivered']}/{routed['expected']}, lost {routed['lost_count']}, "
            f"duplicated {routed['duplicated']}, duplicate acks {result['duplicate_acks']}"
        )
    if line := cpu_line(name, result):
        echo(f"  {name}: {line}")


def flatten(rnd: dict) -> dict[str, float | None]:
    """The per-round figures the summary table is built from (None where a scenario failed)."""
    sc = rnd["scenarios"]

    def get(*path: str) -> float | None:
        node = sc
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    peaks = [get(name, "rss_peak_gb") for name in ("smtp_backend", "webhook_backend", "hive_poll")]
    flat = {
        "smtp_bare_rate": get("smtp_bare", "load", "rate"),
        "smtp_bare_data_p99_ms": get("smtp_bare", "load", "latency", "p99_ms"),
        "smtp_backend_rate": get("smtp_backend", "load", "rate"),
        "smtp_backend_data_p50_ms": get("smtp_backend", "load", "latency", "p50_ms"),
        "smtp_backend_data_p99_ms": get("smtp_backend", "load", "latency", "p99_ms"),
        "e2e_rate": get("smtp_backend", "end_to_end", "e2e_rate"),
        "webhook_bare_rate": get("webhook_bare", "load", "rate"),
        "webhook_backend_rate": get("webhook_backend", "load", "rate"),
        "webhook_backend_p50_ms": get("webhook_backend", "load", "latency", "p50_ms"),
        "webhook_backend_p99_ms": get("webhook_backend", "load", "latency", "p99_ms"),
        "hive_acked_s": get("hive_poll", "acked_s"),
        "hive_routed_s": get("hive_poll", "routed_s"),
        "webhook_e2e_rate": get("webhook_backend", "end_to_end", "e2e_rate"),
        "rss_peak_gb": max((p for p in peaks if p is not None), default=None),
        "rss_idle_gb": get("backend", "idle_memory", "rss_gb"),
        "pss_idle_gb": get("backend", "idle_memory", "pss_gb"),
        "startup_smtp_s": get("backend", "smtp_ready_s"),
        "startup_serve_s": get("backend", "serve_ready_s"),
        "startup_all_s": get("backend", "all_up_s"),
        "cpu_smtp_ms": get("smtp_backend", "cpu", "cpu_ms_per_msg"),
        "cpu_webhook_ms": get("webhook_backend", "cpu", "cpu_ms_per_msg"),
        "cpu_hive_ms": get("hive_poll", "cpu", "cpu_ms_per_msg"),
        "cpu_idle_cores": get("backend", "idle_cpu", "cores"),
    }
    flat["smtp_ratio"] = ratio(flat["smtp_backend_rate"], flat["smtp_bare_rate"])
    flat["webhook_ratio"] = ratio(flat["webhook_backend_rate"], flat["webhook_bare_rate"])
    routed = get("hive_poll", "routed", "delivered")
    flat["hive_routed_rate"] = ratio(routed, flat["hive_routed_s"])
    return flat


def run_round(plan: Plan, number: int, stamp: str, out_dir: Path) -> dict:
    tag = f"{stamp}r{number}"
    sc: dict[str, dict] = {}
    rnd = {"round": number, "scenarios": sc}
    echo(f"Round {number}/{plan.rounds}")
    bare_log = out_dir / "bare-servers.log"
    sc["smtp_bare"] = attempt("smtp bare", lambda: scenarios.bare_smtp(plan.smtp, f"{tag}b", bare_log))
    describe("smtp bare", sc["smtp_bare"])
    sc["webhook_bare"] = attempt(
        "webhook bare",
        lambda: scenarios.bare_webhook(plan.webhook, f"{tag}c", bare_log),
    )
    describe("webhook bare", sc["webhook_bare"])

    echo("  starting the backend (manage.py runbackend) ...")
    try:
        backend = start_backend(
            out_dir / f"backend-r{number}.log",
            pool_size=plan.pool_size,
            poll_interval=plan.poll_interval,
            abuse_limits=plan.abuse_limits,
        )
    except Exception as exc:
        echo(f"  backend did not start: {exc}")
        sc["backend"] = {"error": str(exc)}
        rnd["flat"] = flatten(rnd)
        return rnd
    info: dict = {
        "smtp_ready_s": backend.smtp_ready_s,
        "serve_ready_s": backend.serve_ready_s,
        "all_up_s": backend.all_up_s,
    }
    sc["backend"] = info
    echo(
        f"  SMTP accepting after {backend.smtp_ready_s:.1f}s, Serve answering after {backend.serve_ready_s:.1f}s, "
        f"every actor up after {backend.all_up_s:.1f}s"
    )
    try:
        groups = {
            name: scenarios.Group.from_seed(
                django_call(
                    backend,
                    "seed",
                    "--prefix",
                    f"b{name}",
                    "--count",
                    str(plan.users),
                    "--first-number",
                    str(100 * k),
                    "--first-device",
                    str(910000 + 1000 * k),
                )
            )
            for k, name in enumerate(("smtp", "sms", "hive"), start=1)
        }
        idle = info["idle_memory"] = memory(backend, proportional=True)
        echo(f"  idle: RSS {idle['rss_gb']:.2f} GB, PSS {idle['pss_gb']:.2f} GB over {idle['processes']} processes:")
        for line in process_lines(idle["each_process"]):
            echo(f"    {line}")
        quiet = info["idle_cpu"] = idle_cpu(backend)
        busiest = ", ".join(f"{t} {c * 100:.1f}%" for t, c in list(quiet["cores_by_title"].items())[:5])
        echo(f"  idle CPU over {quiet['wall_s']:.0f}s: {quiet['cores'] * 100:.1f}% of a core ({busiest})")
        sc["smtp_backend"] = attempt(
            "smtp backend",
            lambda: scenarios.smtp_backend(backend, groups["smtp"], plan.smtp, f"{tag}s", plan.warmup),
        )
        describe("smtp backend", add_net_of_idle(sc["smtp_backend"], quiet))
        sc["webhook_backend"] = attempt(
            "webhook backend",
            lambda: scenarios.webhook_backend(backend, groups["sms"], plan.webhook, f"{tag}t", plan.warmup),
        )
        describe("webhook backend", add_net_of_idle(sc["webhook_backend"], quiet))
        sc["hive_poll"] = attempt(
            "hive poll",
            lambda: scenarios.hive_poll(backend, groups["hive"], plan.hive_packets, f"{tag}h", min(plan.warmup, 10)),
        )
        describe("hive poll", add_net_of_idle(sc["hive_poll"], quiet))
        if (plan.profile or plan.profile_gil) and number == 1:
            what = "the threads holding the GIL" if plan.profile_gil else "every thread"
            echo(f"  profiling extra loads with py-spy, {what} (not in the figures) ...")
            hive = scenarios.Load(plan.hive_packets, 1)
            extra = (("smtp", groups["smtp"], plan.smtp), ("webhook", groups["sms"], plan.webhook))
            for kind, group, load in (*extra, ("hive", groups["hive"], hive)):
                sc[f"profile_{kind}"] = attempt(
                    f"profile {kind}",
                    lambda k=kind, g=group, spec=load: scenarios.profile_load(
                        backend, k, g, spec, f"{tag}{k[0]}p", out_dir, gil=plan.profile_gil
                    ),
                )
        info["messages"] = django_call(backend, "count")
        info["memory_after"] = memory(backend, proportional=True)
    finally:
        echo("  stopping the backend (SIGINT) ...")
        info["stop"] = stop_backend(backend, keep_workdir=plan.keep_workdirs)
        echo(
            f"  stopped in {info['stop']['stop_s']:.1f}s, exit code {info['stop']['exit_code']}, "
            f"{info['stop']['leftover_processes']} leftover processes"
        )
    rnd["flat"] = flatten(rnd)
    return rnd


def process_lines(each: list[list]) -> list[str]:
    """One line per process: title, pid, RSS and PSS in MB (biggest RSS first, as ``memory`` sorts them)."""
    width = max((len(row[1]) for row in each), default=0)
    return [f"{t.ljust(width)}  pid {pid:<7}  RSS {rss:6.0f} MB  PSS {pss:6.0f} MB" for pid, t, rss, pss in each]


def print_profile(profile: dict) -> None:
    for name, prof in profile.get("profiles", {}).items():
        if "error" in prof:
            echo(f"  {name}: py-spy failed: {prof['error']}")
            continue
        echo(f"  {name}  (raw stacks: {prof['file']})")
        echo(f"    {prof['native_share'] * 100:.0f}% of samples in Ray's native loop; of the rest, self time:")
        if prof.get("packages"):
            echo("      by package: " + ", ".join(f"{name} {share * 100:.0f}%" for name, share in prof["packages"]))
        for frame, share in prof["self"][:8]:
            echo(f"      {share * 100:5.1f}%  {frame}")
        echo("    inclusive, our code:")
        for frame, share in prof["ours"][:8]:
            echo(f"      {share * 100:5.1f}%  {frame}")


def parse_args(argv: list[str] | None) -> Plan:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, smaller loads (a few minutes)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--smtp-count", type=int)
    parser.add_argument("--smtp-concurrency", type=int)
    parser.add_argument("--webhook-count", type=int)
    parser.add_argument("--webhook-concurrency", type=int)
    parser.add_argument("--hive-packets", type=int)
    parser.add_argument("--max-seconds", type=float, help="cap on each load run's sending time")
    parser.add_argument(
        "--abuse-limits",
        type=int,
        help="both hourly abuse limits at N (default 0: off); on, each message is counted again as it is stored",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the actors under an extra SMTP, webhook and Hive load"
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="as --profile, sampling only the thread holding the GIL: where the actors' Python CPU goes",
    )
    parser.add_argument("--keep-workdirs", action="store_true", help="keep each backend's data and Ray logs")
    args = parser.parse_args(argv)
    overrides = {
        k: v
        for k, v in vars(args).items()
        if k not in ("quick", "profile", "profile_gil", "keep_workdirs") and v is not None
    }
    overrides.update(profile=args.profile, profile_gil=args.profile_gil, keep_workdirs=args.keep_workdirs)
    return Plan.quick(**overrides) if args.quick else Plan(**overrides)


def main(argv: list[str] | None = None) -> int:
    plan = parse_args(argv)
    stamp = time.strftime("%Y%m%d%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_dir = RESULTS / f"bench-{stamp}"
    out_dir.mkdir()
    result_file = RESULTS / f"bench-{stamp}.json"
    doc: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "plan": asdict(plan),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "rounds": [],
    }
    echo(f"Benchmark {stamp}: {plan}")
    echo(f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    started = time.monotonic()
    for number in range(1, plan.rounds + 1):
        doc["rounds"].append(run_round(plan, number, stamp, out_dir))
        result_file.write_text(json.dumps(doc, indent=2, default=str))
    flats = [rnd["flat"] for rnd in doc["rounds"]]
    rows = summarise(flats)
    doc.update(summary=rows, loadavg_at_end=os.getloadavg(), total_s=time.monotonic() - started)
    result_file.write_text(json.dumps(doc, indent=2, default=str))

    for rnd in doc["rounds"]:
        for kind in ("smtp", "webhook", "hive"):
            if "profiles" in rnd["scenarios"].get(f"profile_{kind}", {}):
                echo()
                echo(f"py-spy, extra {kind} load in round {rnd['round']}:")
                print_profile(rnd["scenarios"][f"profile_{kind}"])
    echo()
    echo(
        f"Summary ({plan.rounds} round(s), {time.monotonic() - started:.0f}s; load average now "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs - other work on the machine distorts these):"
    )
    echo(table(rows))
    echo()
    echo("Per path (medians): throughput and the stack's CPU per message delivered")
    echo(path_table(rows))
    echo()
    echo(f"Results: {result_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
