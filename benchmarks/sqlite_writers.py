"""How long a SQLite commit waits when several writers share the database, as the stack's do (user actors'
threads, the senders' claims and records): SQLite's busy handler against a queue on a file lock.

    .venv/bin/python -m benchmarks.sqlite_writers [--processes 2] [--threads 4] [--commits 200]

Each writer (a thread of a process) runs ``BEGIN IMMEDIATE``, one insert, ``COMMIT`` on a database in WAL mode
with ``synchronous=FULL`` (the stack's settings), then pauses 2 ms. Printed, for both ways: commit latency p50,
p95, p99 and max. "busy handler": a writer that finds the database locked is put to sleep by SQLite, in growing
steps. "file lock": each writer first takes an exclusive ``fcntl.flock`` on a file next to the database (one
open file per connection), so waiting writers are woken by the kernel when the lock is free.
"""

from __future__ import annotations

import argparse
import fcntl
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path


def _writer(db: Path, commits: int, queued: bool, latencies: list[float]) -> None:
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("PRAGMA synchronous=FULL")
    lock = os.open(db.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    name = f"{os.getpid()}-{threading.get_ident()}"
    try:
        for n in range(commits):
            started = time.perf_counter()
            if queued:
                fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO m (k, v) VALUES (?, ?)", (f"{name}-{n}", "x" * 200))
                conn.execute("COMMIT")
            finally:
                if queued:
                    fcntl.flock(lock, fcntl.LOCK_UN)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.002)
    finally:
        os.close(lock)
        conn.close()


def _process(db: Path, threads: int, commits: int, queued: bool, out: multiprocessing.Queue) -> None:
    latencies: list[float] = []
    workers = [threading.Thread(target=_writer, args=(db, commits, queued, latencies)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(latencies)


def run(processes: int, threads: int, commits: int, queued: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "writers.sqlite3"
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)")
        out: multiprocessing.Queue = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=_process, args=(db, threads, commits, queued, out)) for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        latencies = sorted(ms for _ in procs for ms in out.get())
        for proc in procs:
            proc.join()
    n = len(latencies)
    how = "file lock" if queued else "busy handler"
    return (
        f"{processes} processes x {threads} threads, {how:<12}: p50 {latencies[n // 2]:.1f} p95 "
        f"{latencies[int(n * 0.95)]:.1f} p99 {latencies[int(n * 0.99)]:.1f} max {latencies[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--commits", type=int, default=200, help="per writer")
    args = parser.parse_args()
    for queued in (False, True):
        print(run(args.processes, args.threads, args.commits, queued), flush=True)


if __name__ == "__main__":
    main()
