"""What one Ray actor call costs in CPU on this machine: the floor under every hop of the message path.

    .venv/bin/python -m benchmarks.ray_hop [--calls 2000]

Two actors on a Ray of their own (no Serve, nothing of ours): a caller (async, like the mail server and the Serve
replica) calls a callee that only returns its argument, as an async actor (the sender actor) and as a sync
one (user actor). Calls are awaited by 1 or 4 coroutines at once, or fired without waiting (a delivery kick), with
1 or 16 items in each (the intake batches). Printed per call: the caller's and the callee's CPU (psutil, user +
system, every thread of the process), so the per-message cost of a hop is this divided by the items it carries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import psutil
import ray


@ray.remote(num_cpus=0)
class AsyncCallee:
    async def take(self, items: list) -> list:
        return items

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
class SyncCallee:
    def take(self, items: list) -> list:
        return items

    def pid(self) -> int:
        return os.getpid()


@ray.remote(num_cpus=0)
class Caller:
    def pid(self) -> int:
        return os.getpid()

    async def run(self, callee, calls: int, concurrency: int, items: int, fire: bool) -> None:
        payload = [{"idempotency_key": f"k{i}", "text": "hello there"} for i in range(items)]

        async def one_lane(n: int) -> None:
            for _ in range(n):
                ref = callee.take.remote(payload)
                if not fire:
                    await ref

        await asyncio.gather(*(one_lane(calls // concurrency) for _ in range(concurrency)))
        if fire:
            await callee.take.remote([])  # the callee has run every call fired before this one


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(caller, callee, calls: int, concurrency: int, items: int, fire: bool) -> dict:
    me, it = (psutil.Process(ray.get(actor.pid.remote())) for actor in (caller, callee))
    ray.get(caller.run.remote(callee, max(calls // 10, concurrency), concurrency, items, fire))  # warm up
    before = cpu_seconds(me), cpu_seconds(it)
    started = time.perf_counter()
    ray.get(caller.run.remote(callee, calls, concurrency, items, fire))
    wall = time.perf_counter() - started
    caller_ms = (cpu_seconds(me) - before[0]) / calls * 1000
    callee_ms = (cpu_seconds(it) - before[1]) / calls * 1000
    return {"caller_ms": caller_ms, "callee_ms": callee_ms, "calls_per_s": calls / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        caller = Caller.remote()
        callees = {"async": AsyncCallee.remote(), "sync": SyncCallee.remote()}
        head = f"{'callee':7} {'call':16} {'items':>5}  {'caller ms':>9}  {'callee ms':>9}  {'total ms':>8}"
        print(f"{head}  {'calls/s':>7}")
        for kind, callee in callees.items():
            for label, concurrency, fire in (
                ("awaited, 1 lane", 1, False),
                ("awaited, 4 lanes", 4, False),
                ("fired", 1, True),
            ):
                for items in (1, 16):
                    r = measure(caller, callee, args.calls, concurrency, items, fire)
                    total = r["caller_ms"] + r["callee_ms"]
                    print(
                        f"{kind:7} {label:16} {items:>5}  {r['caller_ms']:9.3f}  {r['callee_ms']:9.3f}  {total:8.3f}"
                        f"  {r['calls_per_s']:7.0f}"
                    )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
