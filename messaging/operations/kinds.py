"""The actor kinds of the stack, in one table: launch, stop, drain and upgrade loop over it.

Each kind says which actor class it is, how one member is constructed from the config and the pools, how
the launcher knows it is up, where it comes in the drain order, and which of its ``stats`` mean work still
in hand. A new kind (a second satellite network's sender, say) is one more row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from messaging.core.types import Channel
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool

Pools = dict[str, NamedPool]


def _with_senders_and_index(config: Config, pools: Pools, idx: int) -> tuple:
    """The config, the pools the member's user desks name to kick (by channel) and the member's index."""
    return (config, sender_pools(pools), idx)


@dataclass(frozen=True)
class ActorKind:
    name: str  # members are named <name>_<idx> (runtime/pool.py member_name)
    actor_path: str  # "module:Class" of the Ray actor class
    arguments: Callable[[Config, Pools, int], tuple]  # the constructor's arguments for member idx
    drain_rank: int  # drained in rising rank: intake first, then what it feeds, then the senders
    busy_stats: tuple[str, ...] = ("in_flight",)  # stats that count work in hand (a True counts 1)
    sweeps: bool = True  # start(sweep_interval) starts its outbox sweep; else ping() shows it is up
    listens: bool = False  # owns a listening socket: start() waits for it, stop() closes it before a kill
    early: bool = False  # started in the first wave: what intake needs to answer (the couriers' mail servers)
    channels: tuple[Channel, ...] = ()  # the outbox channels its members send (a kick names one of them)

    def actor_class(self) -> Any:
        # Imported on first use: the actor modules need Django set up, and a process that only stops or
        # drains the stack (or a Serve task importing launch) has no use for them.
        module, _, attr = self.actor_path.partition(":")
        return getattr(import_module(module), attr)

    def construct(self, options: dict, config: Config, pools: Pools, idx: int) -> Any:
        """Create (or, with ``get_if_exists``, find) member ``idx`` with these Ray actor options."""
        return self.actor_class().options(**options).remote(*self.arguments(config, pools, idx))

    def start(self, handle: Any, config: Config) -> Any:
        """The call whose answer means the member is up (an ObjectRef)."""
        if self.sweeps:  # one that listens too answers once its socket listens as well
            return handle.start.remote(config.outbox_sweep_interval)
        if self.listens:
            return handle.start.remote()
        return handle.ping.remote()

    def load(self, stats: dict) -> int:
        """How much work a member still has, from its ``stats``: 0 means idle."""
        return sum(int(stats.get(key) or 0) for key in self.busy_stats)


KINDS: tuple[ActorKind, ...] = (  # stopped in the reverse order (intake first); started early ones first
    ActorKind(  # SMTP intake, and every message out (to devices, email and SMS from devices), and the satellite poll
        "courier",
        "messaging.operations.courier:CourierActor",
        _with_senders_and_index,  # member idx polls its share of the device packets; member 0 reconciles SMS
        drain_rank=0,  # its mail server stops taking sessions, then its senders stop polling and sweeping
        busy_stats=("in_flight", "sessions", "polling"),  # stored or sent now, SMTP sessions open, a poll under way
        listens=True,
        early=True,  # up as soon as SMTP answers; Serve deploys meanwhile
        channels=(Channel.SATELLITE, Channel.MAILOUT, Channel.SMS),
    ),
)
KIND_NAMES: tuple[str, ...] = tuple(kind.name for kind in KINDS)
BY_NAME: dict[str, ActorKind] = {kind.name: kind for kind in KINDS}
DRAIN_ORDER: tuple[ActorKind, ...] = tuple(sorted(KINDS, key=lambda kind: kind.drain_rank))
# Kinds earlier versions ran: an upgrade retires their members once the new kinds and Serve are up, and stop removes
# any left. The courier runs a mail server and the senders in one process (it took the "mailserver" and "sender"
# kinds' work; "sender" had taken the satellite and outbound senders'); every intake now stores with a user desk of
# its own, in its own process, so the "user" actors' too.
RETIRED_KIND_NAMES: tuple[str, ...] = ("user", "satellite", "outbound", "mailout", "sms", "sender", "mailserver")
# Of those, the ones that listen on the SMTP port (beside the couriers, SO_REUSEPORT): retired with their listening
# socket closed first, so the kernel hands new connections to the couriers instead of to a mail server saying 421.
RETIRED_LISTENING: frozenset[str] = frozenset({"mailserver"})
SENDER_KIND: dict[Channel, str] = {channel: kind.name for kind in KINDS for channel in kind.channels}


def sender_pools(pools: Pools) -> dict[Channel, NamedPool]:
    """Channel -> the pool of the kind that sends it (several channels may share one pool)."""
    return {channel: pools[name] for channel, name in SENDER_KIND.items()}
