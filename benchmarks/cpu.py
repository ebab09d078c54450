"""CPU seconds the stack spent over a window, from process samples (pure; ``backend.py`` takes the samples).

A sample of a process is its own user+system CPU seconds and its ``children`` CPU seconds (the user+system time of
its terminated children that it waited for, and of theirs: psutil's ``children_user + children_system``), with
its parent pid and a title (``ray::CourierActor``, ``raylet``, ...). Processes are keyed by (pid, start time), so a
reused pid is another process.

Over a window from a snapshot ``before`` to a snapshot ``after`` (every stack process alive at each moment), with
``seen`` the latest sample of every process met by the periodic sampler in between:

* a process alive at both ends counts its own CPU delta; one born in the window counts its whole own CPU;
* the growth of every live process's ``children`` time counts too: it is the CPU of processes that ended in the
  window and that it reaped (born in the window or before it);
* so a process that was alive at ``before`` and ended, reaped by a process alive at ``after``, takes its
  ``before`` value (own and children) back out: the reaper's children time holds its whole life;
* a process that ended with no stack process left to reap it (its parent not alive at ``after``) counts its last
  sample from the sampler minus its ``before`` value (what it spent after its last sample is missed: at most one
  sampling interval of one process);
* a process born and ended between samples, never sampled, is counted only through its reaper's children time.

Each count is attributed to a title; the growth of children time and the take-backs go to :data:`EXITED`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

EXITED = "(processes that ended)"


@dataclass(frozen=True)
class ProcSample:
    own_s: float  # user + system
    children_s: float  # children_user + children_system (terminated, waited-for descendants)
    ppid: int
    title: str

    @property
    def total_s(self) -> float:
        return self.own_s + self.children_s


Key = tuple[int, float]  # (pid, start time)
Snapshot = Mapping[Key, ProcSample]


def cpu_by_title(before: Snapshot, after: Snapshot, seen: Snapshot | None = None) -> dict[str, float]:
    """CPU seconds spent in the window per process title (see the module docstring), biggest first."""
    seen = seen or {}
    alive_pids = {pid for pid, _ in after}
    out: dict[str, float] = {}

    def add(title: str, seconds: float) -> None:
        out[title] = out.get(title, 0.0) + seconds

    for key, now in after.items():
        then = before.get(key)
        add(now.title, now.own_s - (then.own_s if then else 0.0))
        add(EXITED, now.children_s - (then.children_s if then else 0.0))
    for key, then in before.items():
        if key in after:
            continue
        if then.ppid in alive_pids:
            add(EXITED, -then.total_s)  # its reaper's children time counts its whole life
        else:
            last = seen.get(key, then)
            add(then.title, last.total_s - then.total_s)
    for key, last in seen.items():
        if key in before or key in after or last.ppid in alive_pids:
            continue
        add(last.title, last.total_s)  # born and ended in the window, nobody of ours reaped it
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def cpu_figures(by_title: Mapping[str, float], messages: int, wall_s: float) -> dict:
    """The window's CPU: total seconds, milliseconds per message, cores busy on average, and ms/message by title."""
    total = sum(by_title.values())
    per = (lambda s: s * 1000 / messages) if messages else (lambda s: None)  # noqa: E731
    return {
        "cpu_s": total,
        "messages": messages,
        "wall_s": wall_s,
        "cpu_ms_per_msg": per(total),
        "cores": total / wall_s if wall_s > 0 else None,
        "ms_per_msg_by_title": {title: per(s) for title, s in by_title.items()},
    }


def net_of_idle_ms(figures: Mapping, idle_cores: float | None) -> float | None:
    """CPU per message less what the stack burns idle over the same window (``idle_cores`` x the window): the
    work the messages caused. For information; the targets are on the whole figure."""
    if idle_cores is None or not figures.get("messages") or figures.get("wall_s") is None:
        return None
    return (figures["cpu_s"] - idle_cores * figures["wall_s"]) * 1000 / figures["messages"]


def shares_text(by_title_ms: Mapping[str, float | None], n: int = 6) -> str:
    """``ray::CourierActor 3.1, ray::ServeReplica 1.5, ...``: the ``n`` biggest shares (ms per message)."""
    items = [(t, v) for t, v in by_title_ms.items() if v is not None and abs(v) >= 0.05][:n]
    return ", ".join(f"{title} {value:.1f}" for title, value in items)
