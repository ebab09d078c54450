"""Keep-alive HTTP to the remotes (Swarm Hive, Twilio, RockBLOCK).

Each client keeps connection pools as big as the threads that call its remote at once (a sender's send threads, a
poller's acks), so every thread reuses its kept-alive connection instead of opening one per request; a pool smaller
than that drops a connection each time one is handed back to a full pool.

The Hive and Twilio clients speak through urllib3's pools directly (``pool_manager``): they make one call per
message, and a ``requests`` session costs about twice the CPU per call. RockBLOCK keeps a pooled ``requests``
session (``pooled``).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter

POOL_SIZE = 32  # connections kept per remote host and process: more than the threads that call a remote at once
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def pooled(session: requests.Session, size: int = POOL_SIZE) -> requests.Session:
    """``session`` with connection pools of ``size`` for http and https (replacing the adapters it had)."""
    for prefix in ("https://", "http://"):
        session.mount(prefix, HTTPAdapter(pool_maxsize=size))
    return session


def pool_manager(base_url: str, size: int = POOL_SIZE) -> urllib3.PoolManager:
    """Kept-alive connections for requests to ``base_url``: through the proxy the environment names for it
    (HTTPS_PROXY, NO_PROXY...; never for a loopback host), trusting ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` or
    certifi's CAs, as ``requests`` would. Callers pass ``retries=False, redirect=False`` and map urllib3's errors."""
    parts = urlsplit(base_url)
    proxies = {} if parts.hostname in LOOPBACK else requests.utils.get_environ_proxies(base_url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    trust = {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}
    options = {"maxsize": size, "cert_reqs": "CERT_REQUIRED", **trust}
    return urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
