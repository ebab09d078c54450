"""Keep-alive HTTP to the remotes (Swarm Hive, Twilio, RockBLOCK).

Each client keeps one ``requests`` session whose connection pool holds as many connections as threads may call
that remote at once (a sender's send threads, a poller's acks), so every thread reuses its kept-alive connection
instead of opening one per request; a pool smaller than that drops a connection each time one is handed back to
a full pool.
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

POOL_SIZE = 32  # connections kept per remote host and process: more than the threads that call a remote at once


def pooled(session: requests.Session, size: int = POOL_SIZE) -> requests.Session:
    """``session`` with connection pools of ``size`` for http and https (replacing the adapters it had)."""
    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(pool_maxsize=size))
    return session
