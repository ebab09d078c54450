"""The courier: what one pool member's process runs, the mail server and the senders together.

A courier takes mail in over SMTP (``intake/smtp/server.py`` ``MailServer``, its own listening socket) and sends
every message out (``delivery/senders.py`` ``Senders``: to devices, email and SMS), polls its share of the device
packets and, as member 0, reconciles inbound SMS. One process instead of a mail server's and a sender's: a Ray
worker with Django set up is about 115 MB before any module of ours (the mail server's add 4 MB, the senders' then
0.4 MB), and a kick for this member's own senders is a local call, not a Ray call (half of them at POOL_SIZE=2).

The cost, on purpose: a member's intake and its sends restart together when its process dies (Ray restarts it;
the other members keep taking mail on the shared port and every stored message stays due in the outbox), and a
drain or an upgrade of a member stops both (the other members go on).

``Courier`` is the plain class (its parts are tested without Ray); ``CourierActor`` the Ray shell.
"""

from __future__ import annotations

import ray

from messaging.core.types import Channel
from messaging.delivery.senders import Senders
from messaging.intake.smtp.server import MailServer
from messaging.intake.user_store import LocalUsers
from messaging.runtime.config import Config
from messaging.runtime.pool import NamedPool

MAIL_THREADS = 1  # of the event loop's default pool, for the mail server's pod label requests (asyncio.to_thread)


def combined_stats(sending: dict, mail: dict) -> dict:
    """One member's ``stats`` from its senders' and its mail server's: ``in_flight`` counts both (messages being
    stored and messages being sent); ``storing`` and ``sending`` say which."""
    return {
        **sending,
        "sessions": mail["sessions"],
        "accepted": mail["accepted"],
        "storing": mail["in_flight"],
        "sending": sending["in_flight"],
        "in_flight": mail["in_flight"] + sending["in_flight"],
        "draining": bool(mail["draining"] or sending["draining"]),
    }


class Courier(Senders):
    """The senders of member ``index`` (the base class) and its mail server (``mail``)."""

    def __init__(
        self,
        config: Config,
        senders: dict[Channel, NamedPool],
        index: int = 0,
        service_account_dir: str | None = None,
    ):
        """``senders``: the sender pools by channel (the couriers'), whom the user desks name to kick;
        ``service_account_dir``: see ``MailServer``."""
        Senders.__init__(self, config, LocalUsers(config, senders), index, more_threads=MAIL_THREADS)
        self.mail = MailServer(config, senders, service_account_dir, local=self._kick_here)

    async def start(self, sweep_interval: float = 5.0) -> str:
        """Up: the socket listens and the sweep runs (both start by themselves; this waits). Returns ``host:port``."""
        await Senders.start(self, sweep_interval)
        return await self.mail.start()

    async def drain(self, close_listener: bool = False) -> dict:
        """Intake first (see ``MailServer.drain``), then the senders stop polling and sweeping; what is in hand
        finishes (watch ``stats``). Messages stored meanwhile stay due for the next sweep of whoever runs."""
        await self.mail.drain(close_listener)
        await Senders.drain(self)
        return await self.stats()

    async def stop(self) -> None:
        """Close the listening socket (before a kill)."""
        await self.mail.stop()

    async def relabel(self) -> bool:
        """See ``MailServer.relabel``."""
        return await self.mail.relabel()

    async def stats(self) -> dict:
        return combined_stats(await Senders.stats(self), await self.mail.stats())


@ray.remote(max_restarts=-1, max_task_retries=3)
class CourierActor(Courier):
    """Pool member ``index``: detached and named ``courier_<index>`` (``operations/launch.py``). A call that was
    under way when the process died is tried again on the restarted one (kicks, stats, a drain)."""
