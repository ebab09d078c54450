"""Pure helpers of the benchmark harness: latency statistics, run summaries, targets and the summary table.

No I/O here; ``run.py`` feeds these the numbers it measured.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks; NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of latencies in milliseconds."""
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


def spread(values: Iterable[float | None]) -> dict[str, float] | None:
    """min / median / max of the runs' values (None entries, i.e. failed runs, are left out)."""
    got = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not got:
        return None
    return {"min": min(got), "median": statistics.median(got), "max": max(got), "runs": len(got)}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One line of the summary: a metric (a key of the flat per-run results), its unit and its goal."""

    key: str
    label: str
    unit: str
    goal: float | None  # None: shown for information, no verdict
    higher_is_better: bool = True

    def verdict(self, median: float | None) -> str:
        if self.goal is None:
            return ""
        if median is None:
            return "n/a"
        ok = median >= self.goal if self.higher_is_better else median <= self.goal
        return "PASS" if ok else "FAIL"

    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        sign = ">=" if self.higher_is_better else "<="
        return f"{sign} {format_value(self.goal, self.unit)}"


TARGETS: tuple[Target, ...] = (
    Target("smtp_bare_rate", "SMTP bare aiosmtpd", "msg/s", None),
    Target("smtp_backend_rate", "SMTP backend (250 = stored)", "msg/s", None),
    Target("smtp_ratio", "SMTP backend / bare", "ratio", 0.40),
    Target("smtp_backend_data_p50_ms", "SMTP backend DATA p50", "ms", None, False),
    Target("smtp_backend_data_p99_ms", "SMTP backend DATA p99 (C=4)", "ms", 25.0, False),
    Target("smtp_bare_data_p99_ms", "SMTP bare DATA p99", "ms", None, False),
    Target("e2e_rate", "End to end SMTP -> Hive", "msg/s", 500.0),
    Target("cpu_smtp_ms", "CPU per message, SMTP -> Hive", "ms/msg", 3.0, False),
    Target("webhook_bare_rate", "Webhook bare uvicorn", "req/s", None),
    Target("webhook_backend_rate", "Webhook Serve (200 = stored)", "req/s", None),
    Target("webhook_ratio", "Webhook Serve / bare", "ratio", 0.35),
    Target("webhook_backend_p50_ms", "Webhook Serve p50", "ms", None, False),
    Target("webhook_backend_p99_ms", "Webhook Serve p99", "ms", None, False),
    Target("webhook_e2e_rate", "End to end webhook -> Hive", "msg/s", None),
    Target("cpu_webhook_ms", "CPU per message, webhook -> Hive", "ms/msg", 3.0, False),
    Target("hive_acked_s", "Hive 1,000 packets stored + acked", "s", 2.0, False),
    Target("hive_routed_s", "Hive 1,000 packets delivered out", "s", None, False),
    Target("hive_routed_rate", "Hive packets -> email/SMS out", "msg/s", None),
    Target("cpu_hive_ms", "CPU per message, Hive -> email/SMS", "ms/msg", 2.5, False),
    Target("rss_idle_gb", "RSS whole stack, idle (POOL_SIZE=2)", "GB", 1.5, False),
    Target("pss_idle_gb", "PSS whole stack, idle", "GB", None, False),
    Target("rss_peak_gb", "RSS whole stack, peak under load", "GB", None, False),
    Target("cpu_idle_cores", "CPU whole stack, idle", "cores", None, False),
    Target("startup_smtp_s", "Run command -> SMTP accepting", "s", 10.0, False),
    Target("startup_serve_s", "Run command -> Serve answering", "s", 10.0, False),
    Target("startup_all_s", "Run command -> every actor up", "s", None, False),
)


def format_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ratio":
        return f"{value * 100:.0f}%"
    if unit in ("msg/s", "req/s"):
        return f"{value:.0f} {unit}"
    if unit == "GB":
        return f"{value:.2f} GB"
    if unit in ("ms", "ms/msg"):
        return f"{value:.1f} {unit}"
    if unit == "cores":
        return f"{value:.2f} cores"
    return f"{value:.1f} {unit}"


def summarise(runs: Sequence[dict[str, float | None]], targets: Sequence[Target] = TARGETS) -> list[dict]:
    """For each target: the min/median/max over the runs and the verdict on the median."""
    rows = []
    for target in targets:
        stats = spread(run.get(target.key) for run in runs)
        median = stats["median"] if stats else None
        rows.append(
            {
                "key": target.key,
                "label": target.label,
                "unit": target.unit,
                "goal": target.goal_text(),
                "stats": stats,
                "verdict": target.verdict(median),
            }
        )
    return rows


def table(rows: Sequence[dict]) -> str:
    """The summary rows as a fixed-width text table."""
    header = ("metric", "median", "min .. max", "runs", "target", "")
    lines = [header]
    for row in rows:
        stats, unit = row["stats"], row["unit"]
        if stats is None:
            lines.append((row["label"], "-", "-", "0", row["goal"], row["verdict"]))
            continue
        span = f"{format_value(stats['min'], unit)} .. {format_value(stats['max'], unit)}"
        lines.append(
            (row["label"], format_value(stats["median"], unit), span, str(stats["runs"]), row["goal"], row["verdict"])
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# The message paths: (label, throughput key, CPU per message key), keys of the flat per-run results.
PATHS: tuple[tuple[str, str, str], ...] = (
    ("SMTP -> Hive (end to end)", "e2e_rate", "cpu_smtp_ms"),
    ("Webhook -> Hive (end to end)", "webhook_e2e_rate", "cpu_webhook_ms"),
    ("Hive packets -> email/SMS out", "hive_routed_rate", "cpu_hive_ms"),
)


def path_table(rows: Sequence[dict], paths: Sequence[tuple[str, str, str]] = PATHS) -> str:
    """Per message path, from the summary rows: the median throughput next to the median CPU per message, with
    their targets and the verdict on the CPU."""
    by_key = {row["key"]: row for row in rows}

    def median(key: str) -> str:
        row = by_key.get(key)
        return format_value(row["stats"]["median"], row["unit"]) if row and row["stats"] else "-"

    def cell(key: str, field: str) -> str:
        return by_key[key][field] if key in by_key else ""

    lines = [("path", "throughput", "target", "CPU per message", "target", "")]
    for label, rate, cpu in paths:
        lines.append((label, median(rate), cell(rate, "goal"), median(cpu), cell(cpu, "goal"), cell(cpu, "verdict")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


# --------------------------------------------------------------------------- py-spy profiles


# Leaf frames where a thread sits in Ray's native code (the core worker's task loop, its C++ threads):
# waiting, or C++ work py-spy cannot see into. Left out of the Python shares and reported on their own.
NATIVE_LEAVES = ("Worker.main_loop (", "Thread.run (")


def _stacks(collapsed: str):
    for line in collapsed.splitlines():
        stack, _, num = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f]
        if frames and num.isdigit():
            yield frames, int(num)


def native_share(collapsed: str, leaves: tuple[str, ...] = NATIVE_LEAVES) -> float:
    """Share (0..1) of py-spy samples whose innermost Python frame is one of ``leaves``."""
    total = native = 0
    for frames, samples in _stacks(collapsed):
        total += samples
        native += samples if frames[-1].startswith(leaves) else 0
    return native / total if total else 0.0


def package_of(frame: str) -> str:
    """The package or module a py-spy frame's code is in: ``f (django/db/models/base.py:584)`` -> django,
    ``f (threading.py:982)`` -> threading, ``f (<frozen abc>:106)`` -> abc; ours are messaging and web."""
    where = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    if where.startswith("<frozen "):
        return where[len("<frozen ") :].rstrip(">").split(".")[0]
    return where.split("/")[0].removesuffix(".py") or "?"


def package_shares(
    collapsed: str, n: int = 10, skip_leaves: tuple[str, ...] = NATIVE_LEAVES
) -> list[tuple[str, float]]:
    """Self time by package (``package_of`` the innermost frame), as (package, share 0..1), biggest first; stacks
    whose innermost frame starts with one of ``skip_leaves`` are left out, as in ``top_frames``."""
    counts: Counter[str] = Counter()
    for frames, samples in _stacks(collapsed):
        if not frames[-1].startswith(skip_leaves):
            counts[package_of(frames[-1])] += samples
    total = sum(counts.values())
    return [(name, count / total) for name, count in counts.most_common(n)] if total else []


def top_frames(
    collapsed: str,
    n: int = 15,
    *,
    leaf: bool = True,
    focus: str = "",
    skip_leaves: tuple[str, ...] = NATIVE_LEAVES,
) -> list[tuple[str, float]]:
    """From py-spy's raw (collapsed) output: the ``n`` frames with most samples, as (frame, share 0..1).

    ``leaf=True`` counts only the innermost frame of each stack (self time); ``leaf=False`` counts each
    distinct frame once per stack it appears in (inclusive time). Stacks whose innermost frame starts with
    one of ``skip_leaves`` are left out (shares are of the rest). ``focus`` keeps only frames whose text
    contains it (e.g. ``"messaging/"``).
    """
    counts: Counter[str] = Counter()
    total = 0
    for frames, samples in _stacks(collapsed):
        if frames[-1].startswith(skip_leaves):
            continue
        total += samples
        for frame in frames[-1:] if leaf else set(frames):
            if focus in frame:
                counts[frame] += samples
    if not total:
        return []
    return [(frame, count / total) for frame, count in counts.most_common(n)]
