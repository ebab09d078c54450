"""What the single-part benchmarks share (``smtp_intake``, ``satellite_send``): the part run in a child process from
a checkout (``--vs``: a second one from another commit), rounds alternated between the two, and py-spy's view.

The rounds alternate, and which side goes first alternates too (ABBA), so that a VM whose speed drifts over
minutes slows both alike; each side's median is printed, and the median of the paired ratios (this checkout's CPU
per message over the other's, round by round).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def checkouts(vs: str | None) -> dict[str, Path]:
    """``this`` (the working directory) and, with ``--vs``, ``vs``."""
    return {"this": Path.cwd()} | ({"vs": Path(vs).resolve()} if vs else {})


def start_child(root: Path, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m <args>`` run from checkout ``root`` (its code first on the path), stdin and stdout piped."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=path, **(env or {})),
    )


def alternate(
    roots: dict[str, Path], rounds: int, one_round: Callable[[str, int], tuple[float, str]], what: str
) -> dict[str, list[float]]:
    """``one_round(side, n)`` -> (ms of CPU per message, more to print) for each round and side, alternated; prints
    each round, then the medians (``what`` says of what) and, with two sides, the paired ratios."""
    figures: dict[str, list[float]] = {side: [] for side in roots}
    for n in range(rounds):
        order = list(roots)
        for side in order if n % 2 == 0 else order[::-1]:  # ABBA: neither side always goes first
            per_msg, more = one_round(side, n)
            figures[side].append(per_msg)
            name = f" ({side}: {roots[side]})" if len(roots) > 1 else ""
            print(f"round {n + 1}{name}: {per_msg:.2f} ms CPU per message{more}", flush=True)
    for side, values in figures.items():
        name = f" [{roots[side]}]" if len(roots) > 1 else ""
        print(f"median of {rounds} rounds of {what}{name}: {statistics.median(values):.2f} ms CPU per message")
    if len(roots) > 1:
        ratios = [a / b for a, b in zip(figures["this"], figures["vs"], strict=True)]
        print(
            f"this / vs, paired by round: median {statistics.median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    return figures


def profile(pid: int, raw: Path, load: Callable[[], object]) -> None:
    """py-spy on process ``pid`` (``--gil``: where its Python CPU goes) while ``load()`` runs, summarised as
    ``benchmarks.run --profile-gil`` summarises the actors' (the collapsed stacks kept in ``raw``)."""
    from benchmarks.report import package_shares, top_frames

    py_spy = Path(sys.executable).parent / "py-spy"
    spy = subprocess.Popen(
        [str(py_spy), "record", "--gil", "--rate", "250", "--pid", str(pid), "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    load()
    spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
    spy.wait(60)
    collapsed = raw.read_text(encoding="utf-8", errors="replace")
    print("  self time by package: " + ", ".join(f"{name} {share:.0%}" for name, share in package_shares(collapsed)))
    print("  hottest frames (self):")
    for frame, share in top_frames(collapsed, 20, skip_leaves=()):
        print(f"    {share:6.1%}  {frame}")
    print("  our code, inclusive:")
    for frame, share in top_frames(collapsed, 20, leaf=False, focus="messaging/", skip_leaves=()):
        print(f"    {share:6.1%}  {frame}")
    print(f"  (collapsed stacks: {raw})")
