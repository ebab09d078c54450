"""Nothing of a local Ray outlives the driver that started it, even a driver killed with SIGKILL.

Ray ties its own head processes (GCS, raylet, ...) to the driver that starts them (``PR_SET_PDEATHSIG``), and
its workers end when the raylet goes; but measured on Ray 2.60 the dashboard agent and the runtime-env agent
stay up, orphaned, holding ports, when the driver dies without ``ray.shutdown()``. (Serve's HAProxy is tied to
its worker by our launcher, messaging/operations/haproxy_admin.py.)

So ``runbackend``, before it starts a local Ray, starts this small watcher (standard library only). It reads a
pipe from the driver: while the driver lives, it notes every process descended from it (pid and start time,
from /proc) once a second; when the pipe closes - the driver exited, however - it SIGKILLs whichever of them
is still running (same pid *and* start time, so a reused pid is never hit), with their own descendants.
After a clean stop there is normally nothing left to kill. Linux only (elsewhere it only waits).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

Proc = tuple[int, int]  # (pid, start time in clock ticks since boot)


def read_table(proc: str = "/proc") -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state) of every process, from ``/proc/<pid>/stat``."""
    table = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat", "rb") as f:
                raw = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
        if len(rest) > 19:
            table[int(name)] = (int(rest[1]), int(rest[19]), rest[0])
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, int, str]]) -> set[Proc]:
    """Every process below ``roots`` in ``table`` (not the roots themselves), as (pid, start time)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[Proc] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            entry = (child, table[child][1])
            if entry not in found:
                found.add(entry)
                stack.append(child)
    return found


def still_running(seen: set[Proc], table: dict[int, tuple[int, int, str]]) -> set[Proc]:
    """The noted processes that still run (same pid and start time; zombies are already gone)."""
    alive = {(pid, start) for pid, start in seen if pid in table and table[pid][1] == start and table[pid][2] != "Z"}
    return alive | {
        p for p in descendants({pid for pid, _ in alive}, table) if table[p[0]][2] != "Z" and p[0] != os.getpid()
    }


def watch(driver: int, every: float = 1.0) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # Ctrl-C and the like reach us too: not our cue
        signal.signal(sig, signal.SIG_IGN)
    me = os.getpid()
    seen: set[Proc] = set()
    while True:
        ready, _, _ = select.select([0], [], [], every)
        if ready and not os.read(0, 4096):
            break  # the driver is gone
        seen |= {p for p in descendants({driver}, read_table()) if p[0] != me}
    for _ in range(3):  # SIGKILL, then look again for anything the killed ones started meanwhile
        left = still_running(seen, read_table())
        if not left:
            return
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        seen |= left
        time.sleep(0.5)


def start() -> subprocess.Popen | None:
    """Start the watcher for this process; keep the returned object (its pipe is the driver's lifeline)."""
    if not sys.platform.startswith("linux"):
        return None
    # -I -S: the standard library only, and nothing of ours shadowing it (messaging/core/types.py).
    return subprocess.Popen(
        [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.PIPE,
        close_fds=True,
    )


if __name__ == "__main__":
    watch(int(sys.argv[1]))
