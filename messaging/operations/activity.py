"""A line on runbackend's console now and then saying what the stack did, in place of every message's lines.

Each message's state changes are logged by the actors (``messaging.*``) to files of their own on each Ray node
(``messages-<pid>.log`` in Ray's session log directory, see ``console.message_lines_to_file``): streaming them
line by line through Ray's log monitor to the driver cost about a millisecond of CPU per message. Warnings and
errors (a dead letter, a lease lost, a remote down) still reach the console at once.

``activity_line`` is the pure part: from two readings of the actors' counters (``read_counters``), what happened
between them, or None when nothing did.
"""

from __future__ import annotations

import ray

from messaging.operations.kinds import KINDS
from messaging.runtime.config import Config
from messaging.runtime.pool import member_name

# (kind, counter in its stats, words on the console)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("courier", "accepted", "emails taken in"),
    ("courier", "polled", "device packets fetched"),
    ("courier", "satellite_delivered", "sent to devices"),
    ("courier", "mailout_delivered", "emails sent"),
    ("courier", "sms_delivered", "texts sent"),
)


def read_counters(config: Config, timeout: float = 5.0) -> dict[str, int]:
    """``{"<kind>_<idx>.<counter>": value}`` for every member that answers within ``timeout``."""
    wanted = {kind for kind, _, _ in COUNTERS}
    refs = {}
    for kind in KINDS:
        if kind.name not in wanted:
            continue
        for idx in range(config.pool_size):
            name = member_name(kind.name, idx)
            try:
                refs[name] = ray.get_actor(name, namespace=config.ray_namespace).stats.remote()
            except ValueError:  # not up (being replaced): its counts come back with it
                continue
    readings: dict[str, int] = {}
    for name, ref in refs.items():
        try:
            stats = ray.get(ref, timeout=timeout)
        except Exception:  # not answering now: read again next time
            continue
        for key, value in stats.items():
            if isinstance(value, int) and not isinstance(value, bool):
                readings[f"{name}.{key}"] = value
    return readings


def activity_line(before: dict[str, int], after: dict[str, int], seconds: float) -> str | None:
    """What the counters say happened in the last ``seconds``; None if nothing did. A member that restarted (its
    counter went down) counts from zero; a member missing from either reading counts nothing."""
    parts = []
    for kind, counter, words in COUNTERS:
        done = 0
        for key, value in after.items():
            member, _, name = key.rpartition(".")
            if name != counter or member.rpartition("_")[0] != kind or key not in before:
                continue
            done += value - before[key] if value >= before[key] else value
        if done:
            parts.append(f"{done} {words}")
    if not parts:
        return None
    return f"Last {seconds:.0f}s: " + ", ".join(parts)
