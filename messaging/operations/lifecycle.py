"""Graceful drain and rolling upgrade of the named actor pools, with progress a person can follow.

Drain: in each courier, intake stops first (its mail server turns new sessions away and drops its ingress label),
then its senders stop polling the satellite networks after the current batch and stop sweeping, and we wait - by
polling each actor's ``stats`` - until nothing is in flight, or the timeout passes. Never a fixed sleep.

Upgrade: one member at a time, for each kind: drain it, wait until idle, kill it, start its replacement
under the same name and wait until it is up. Callers meanwhile wait (bounded) in the lazy pools, and
every intake call is idempotent, so a retried call stores nothing twice. Couriers share the SMTP port
with ``SO_REUSEPORT``: while one is replaced the others keep accepting (with ``POOL_SIZE`` 1 there is a
short window in which senders get ``421`` or a refused connection: a temporary failure they retry). Messages
stored for the member being replaced meanwhile stay due; its replacement's first sweep sends them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import ray
from tenacity import RetryCallState, Retrying, retry_if_result, stop_before_delay, wait_exponential

from messaging.operations.kinds import BY_NAME, DRAIN_ORDER, KINDS, RETIRED_KIND_NAMES, RETIRED_LISTENING
from messaging.operations.launch import (
    Stack,
    create_member,
    make_pools,
    remove_placement,
    running_members,
    start_serve,
)
from messaging.runtime.config import Config
from messaging.runtime.pool import member_name

Echo = Callable[[str], None]


def busy(kind: str, stats: dict) -> int:
    """How much work an actor of kind ``kind`` (its name) still has, from its ``stats``: 0 means idle. A kind
    this version no longer runs (an earlier version's mail server or sender) counts what it has in flight, its SMTP
    sessions open and a poll under way."""
    if kind not in BY_NAME:
        return sum(int(stats.get(key) or 0) for key in ("in_flight", "sessions", "polling"))
    return BY_NAME[kind].load(stats)


def wait_idle(members: list[tuple[str, str, object]], timeout: float, echo: Echo, every: float = 1.0) -> bool:
    """Poll ``stats`` of (kind, name, handle) members until all are idle; print progress. False on timeout."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while True:
        loads = {}
        for kind, name, handle in members:
            try:
                loads[name] = busy(kind, ray.get(handle.stats.remote(), timeout=10))
            except Exception as exc:  # a dead actor has nothing in flight
                echo(f"  {name}: not answering ({type(exc).__name__}); counted as idle")
                loads[name] = 0
        pending = {n: v for n, v in loads.items() if v}
        now = time.monotonic()
        if not pending:
            return True
        if now >= deadline:
            echo(f"  timeout: still busy: {', '.join(f'{n}={v}' for n, v in pending.items())}")
            return False
        if now - last_report >= 2.0:
            echo(f"  waiting: {', '.join(f'{n}={v}' for n, v in pending.items())} in flight")
            last_report = now
        time.sleep(every)


def drain_all(config: Config, timeout: float = 120.0, echo: Echo = print) -> bool:
    """Drain every actor, intake first. True when everything went idle before the timeout."""
    started = time.monotonic()
    members = []
    for kind in DRAIN_ORDER:
        handles = running_members(config, kind.name)
        for name, handle in handles:
            ray.get(handle.drain.remote(), timeout=30)
            members.append((kind.name, name, handle))
        echo(f"  {kind.name:<10} x{len(handles)} draining")
    idle = wait_idle(members, max(timeout - (time.monotonic() - started), 1.0), echo)
    echo(f"Drain {'complete' if idle else 'timed out'} after {time.monotonic() - started:.1f}s")
    return idle


def _wait_name_free(config: Config, name: str, timeout: float = 60.0) -> None:
    def taken() -> bool:
        try:
            ray.get_actor(name, namespace=config.ray_namespace)
        except ValueError:
            return False
        return True

    def still_taken(state: RetryCallState) -> None:
        raise TimeoutError(f"{name} was killed but its name is still taken after {timeout:.0f}s")

    Retrying(  # looks 0.05 s apart, doubling up to 0.5 s
        retry=retry_if_result(bool),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        stop=stop_before_delay(timeout),
        retry_error_callback=still_taken,
    )(taken)


def replace_member(config: Config, kind: str, idx: int, echo: Echo = print, drain_timeout: float = 120.0) -> float:
    """Drain, kill and restart one member of kind ``kind`` (its name) under the same name. Returns the seconds
    it was away."""
    actor_kind = BY_NAME[kind]
    name = member_name(kind, idx)
    pools = make_pools(config)
    try:
        old = ray.get_actor(name, namespace=config.ray_namespace)
    except ValueError:
        old = None
    if old is not None:
        if actor_kind.listens:  # others share the port: closing ours hands new connections to them
            ray.get(old.drain.remote(close_listener=config.pool_size > 1), timeout=30)
        else:
            ray.get(old.drain.remote(), timeout=30)
        wait_idle([(kind, name, old)], drain_timeout, echo)
    away = time.monotonic()
    if old is not None:
        if actor_kind.listens:
            ray.get(old.stop.remote(), timeout=30)
        ray.kill(old, no_restart=True)
        _wait_name_free(config, name)
    new = create_member(actor_kind, idx, config, pools)
    ray.get(actor_kind.start(new, config), timeout=120)
    gap = time.monotonic() - away
    echo(f"  {name:<12} replaced (away {gap:.1f}s)")
    return gap


def upgrade(config: Config, echo: Echo = print, redeploy_serve: bool = True) -> dict[str, float]:
    """Rolling replacement of every member of every pool; then Serve redeploys its app itself."""
    started = time.monotonic()
    gaps: dict[str, float] = {}
    for kind in KINDS:
        for idx in range(config.pool_size):
            gaps[member_name(kind.name, idx)] = replace_member(config, kind.name, idx, echo)
    if redeploy_serve:
        start_serve(config, Stack(config=config, pools=make_pools(config)), echo)
    # Only now: until Serve's replicas are this version's too, the earlier version's still store through the
    # earlier version's user actors.
    retire_old_kinds(config, echo)
    echo(f"Upgrade complete in {time.monotonic() - started:.1f}s")
    return gaps


def relabel_listeners(config: Config, echo: Echo = print) -> None:
    """Each listening member asks for its pod's ingress label again: a retired mail server on the same pod took
    it off as it drained (the label is the pod's, not the process's), and without it the SMTP Service would send
    that pod nothing."""
    for kind in KINDS:
        if not kind.listens:
            continue
        for name, handle in running_members(config, kind.name):
            try:
                ray.get(handle.relabel.remote(), timeout=30)
            except Exception as exc:  # its next start labels the pod; say so, the operator may check
                echo(f"  {name}: could not ask for its pod label again ({type(exc).__name__})")


def retire_old_kinds(config: Config, echo: Echo = print, drain_timeout: float = 120.0) -> list[str]:
    """Drain and remove the members of kinds an earlier version ran and this one does not (``RETIRED_KIND_NAMES``:
    the mail servers and senders the couriers replaced, the user actors whose work every intake now does itself, the
    satellite and outbound actors an earlier ``sender`` replaced), after the work they have in hand. A mail server
    closes its listening socket first: the couriers listen on the same port. What they had not claimed stays due
    for the couriers. Returns the names removed."""
    members = []
    for kind in RETIRED_KIND_NAMES:
        for name, handle in running_members(config, kind):
            try:
                drain = handle.drain.remote(close_listener=True) if kind in RETIRED_LISTENING else handle.drain.remote()
                ray.get(drain, timeout=30)
            except Exception as exc:  # not answering: nothing of its own to wait for (its claims' leases run out)
                echo(f"  {name}: drain failed ({type(exc).__name__}); removing it")
            members.append((kind, name, handle))
    if not members:
        return []
    wait_idle(members, drain_timeout, echo)
    for kind, name, handle in members:
        if kind in RETIRED_LISTENING:
            try:
                ray.get(handle.stop.remote(), timeout=30)  # its pod label too, if it had one
            except Exception as exc:  # removing it anyway
                echo(f"  {name}: stop failed ({type(exc).__name__})")
        ray.kill(handle, no_restart=True)
        echo(f"  {name:<12} retired (its kind is gone in this version)")
    if any(kind in RETIRED_LISTENING for kind, _, _ in members):
        relabel_listeners(config, echo)
    for kind in RETIRED_KIND_NAMES:
        remove_placement(config, kind)
    return [name for _, name, _ in members]
