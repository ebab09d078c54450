"""Start-up alone: the run command until SMTP answers, Serve answers and every actor is up, over several starts.

    .venv/bin/python -m benchmarks.startup [--starts 5]

Each start is the full stack as ``benchmarks.run`` starts it (``benchmarks/backend.py``: the fakes in this process,
``manage.py runbackend`` on a fresh data directory, so every migration is applied), stopped before the next. Printed:
each start's three figures, then their medians. For an A/B against another commit run the same from a worktree of it
(``PYTHONPATH=<worktree> .venv/bin/python -m benchmarks.startup``), alternating the two: this VM drifts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.backend import start_backend, stop_backend


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {"SMTP": [], "Serve": [], "every actor": []}
    log_dir = Path(tempfile.mkdtemp(prefix="sbb-startup-"))
    for n in range(args.starts):
        backend = start_backend(log_dir / f"start-{n}.log")
        try:
            got = {"SMTP": backend.smtp_ready_s, "Serve": backend.serve_ready_s, "every actor": backend.all_up_s}
        finally:
            stop_backend(backend)
        for name, value in got.items():
            figures[name].append(value)
        print(f"start {n + 1}: " + ", ".join(f"{name} {value:.1f} s" for name, value in got.items()), flush=True)
    print(
        f"median of {args.starts} starts, run command -> "
        + ", ".join(f"{name} {statistics.median(values):.1f} s" for name, values in figures.items())
        + f" (runbackend's output: {log_dir})"
    )


if __name__ == "__main__":
    main()
