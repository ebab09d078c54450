"""Keep-alive HTTP to the remotes (Swarm Hive, Twilio, RockBLOCK).

Each client keeps connection pools as big as the threads that call its remote at once (a sender's send threads, a
poller's acks), so every thread reuses its kept-alive connection instead of opening one per request; a pool smaller
than that drops a connection each time one is handed back to a full pool.

The Hive and Twilio clients speak through urllib3's pools directly (``HostPool``): they make one call per
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


class HostPool:
    """Requests to one remote (``base_url``'s scheme, host and port) on that host's own connection pool.

    ``request`` takes a whole URL. One on the remote's host goes straight to its pool's ``urlopen``: no URL
    parsing and pool lookup in a ``PoolManager`` per call (about a quarter of a client's CPU per request,
    ``benchmarks/README.md``). Any other URL (a redirect elsewhere, say), and every URL when a proxy is in the way,
    go through the ``PoolManager`` (``pool_manager``) as before. Callers pass ``retries=False, redirect=False``
    (to follow redirects, a caller passes ``redirect=True`` and goes through the manager) and map urllib3's
    errors."""

    def __init__(self, base_url: str, size: int = POOL_SIZE) -> None:
        self.manager = pool_manager(base_url, size)
        parts = urlsplit(base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        direct = bool(parts.hostname) and not isinstance(self.manager, urllib3.ProxyManager)  # (no host: unset)
        self._pool = self.manager.connection_from_url(self._origin) if direct else None

    def request(self, method: str, url: str, **kw) -> urllib3.BaseHTTPResponse:
        path = url[len(self._origin) :] if url.startswith(self._origin) else ""
        if self._pool is not None and path.startswith("/") and not kw.get("redirect"):
            return self._pool.urlopen(method, path, **kw)
        return self.manager.request(method, url, **kw)

    def clear(self) -> None:
        """Close the kept connections (a later request opens new ones)."""
        self.manager.clear()
        if self._pool is not None:
            self._pool = self.manager.connection_from_url(self._origin)
