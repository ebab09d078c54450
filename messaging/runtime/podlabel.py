"""Pod label ``mail-ingress=present``: tells Kubernetes which pods take SMTP traffic.

The SMTP ``LoadBalancer`` Service selects pods carrying this label. A mail server actor
starts :meth:`PodLabeler.keep_added` in the background once it listens (also after Ray
restarts it) and calls :meth:`PodLabeler.remove_async` first thing on drain, so the load
balancer stops sending new connections before the listener closes. The only API call is a
``patch`` of a pod: all the Role in k8s/rbac.yaml grants.

The label is changed with the official ``kubernetes`` client, as a JSON merge patch
(RFC 7386, ``Content-Type: application/merge-patch+json``): ``{"metadata": {"labels":
{"mail-ingress": "present"}}}`` adds the label and ``{... "mail-ingress": null}`` removes
it. A merge patch is idempotent (removing an absent label is not an error, unlike a JSON
patch ``remove`` op, which fails with 422). The content type is passed explicitly because
the client's default for ``patch_namespaced_pod`` is JSON patch, silently rewritten to
strategic merge patch for dict bodies.

Errors never reach the caller: retryable failures (connection errors, 409, 429, 5xx) are
retried with capped exponential backoff, then logged; other API errors (403 missing RBAC,
404 pod gone) are logged at once. :meth:`PodLabeler.keep_added` goes on trying (rounds of
the above, with a longer capped backoff in between) until the label is confirmed, so an API
server that is down while the mail server starts does not leave the pod out of the Service.

The last request wins: every add or remove takes a ticket when it is asked for (on the
caller's thread, so the order is the order of the calls), and a request that a later one has
superseded stops before its next attempt and wakes from its backoff pause at once. So a
drain's remove that comes while the add is still retrying always ends with the label gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

if TYPE_CHECKING:
    from kubernetes import client as k8s_client

# The kubernetes client (~15 MB resident) is imported only where a pod is labelled: outside Kubernetes
# (the local stack) every mail server actor would carry it for nothing.

log = logging.getLogger(__name__)

LABEL_KEY = "mail-ingress"
LABEL_VALUE = "present"
MERGE_PATCH = "application/merge-patch+json"
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
# Where the kubelet mounts the pod's ServiceAccount token and the cluster CA.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class PodRef:
    """Which pod this process runs in."""

    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_from_env(environ: Mapping[str, str]) -> PodRef | None:
    """The pod named by the downward API (POD_NAME, POD_NAMESPACE), or None outside a pod.

    KUBERNETES_SERVICE_HOST (set by the kubelet in every pod) must be present too, so a
    stray POD_NAME on a laptop does not make us call an API server that is not there.
    """
    name = environ.get("POD_NAME", "").strip()
    namespace = environ.get("POD_NAMESPACE", "").strip()
    if not (name and namespace and environ.get("KUBERNETES_SERVICE_HOST", "").strip()):
        return None
    return PodRef(name=name, namespace=namespace)


def label_patch(present: bool) -> dict[str, Any]:
    """The merge-patch body that sets (present=True) or deletes (present=False) the label."""
    return {"metadata": {"labels": {LABEL_KEY: LABEL_VALUE if present else None}}}


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """Pauses between ``attempts`` tries: base, 2*base, 4*base, ... each at most ``cap``."""
    return [min(cap, base * (2**i)) for i in range(max(0, attempts - 1))]


def is_retryable(error: Exception) -> bool:
    """True for failures worth another try: transport errors and 409/429/5xx answers."""
    from kubernetes.client import ApiException

    if isinstance(error, ApiException):
        return error.status in RETRYABLE_STATUSES
    return True  # urllib3 / socket errors: the API server may be back in a moment


def describe_error(error: Exception) -> str:
    """A one-line, secret-free description of a failed call."""
    from kubernetes.client import ApiException

    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return type(error).__name__


class Superseded(Exception):
    """A later add or remove was asked for: this one gives way before its next attempt."""


class PodLabeler:
    """Adds and removes this pod's ``mail-ingress=present`` label; never raises.

    Without a pod (``pod=None``) or an ``api_client`` it is a no-op that logs once.
    ``sleep`` replaces the pause between retries (tests); by default the pause ends early when
    a later request supersedes the one pausing.
    """

    def __init__(
        self,
        pod: PodRef | None,
        api_client: k8s_client.ApiClient | None,
        *,
        attempts: int = 4,
        base_delay: float = 0.5,
        max_delay: float = 4.0,
        request_timeout: float = 5.0,
        sleep: Callable[[float], None] | None = None,
        disabled_reason: str = "not running in a Kubernetes pod",
    ) -> None:
        self.pod = pod if api_client is not None else None
        self._api = None
        if api_client is not None and pod:
            from kubernetes.client import CoreV1Api

            self._api = CoreV1Api(api_client)
        self._api_client = api_client
        self._delays = backoff_delays(attempts, base_delay, max_delay)
        self._timeout = request_timeout
        self._sleep = sleep
        self._disabled_reason = disabled_reason
        self._logged_disabled = False
        self._lock = threading.Lock()  # one request talks to the API server at a time
        self._tickets = threading.Condition()
        self._latest = 0  # the ticket of the newest request; older ones give way

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        service_account_dir: str | None = None,
        **options: Any,
    ) -> PodLabeler:
        """In a pod: in-cluster config (mounted service-account token, CA, KUBERNETES_SERVICE_*).

        Elsewhere, or without a mounted token, a no-op labeler. ``service_account_dir`` (holding
        ``token`` and ``ca.crt``) defaults to where the kubelet mounts them; tests point it at the
        files of a local fake API server.
        """
        env = os.environ if environ is None else environ
        pod = pod_from_env(env)
        if pod is None:
            return cls(None, None, **options)
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes.config.incluster_config import InClusterConfigLoader

        directory = service_account_dir or SERVICE_ACCOUNT_DIR
        configuration = k8s_client.Configuration()
        try:
            # What load_incluster_config() does, reading the same environ as pod_from_env.
            InClusterConfigLoader(
                token_filename=os.path.join(directory, "token"),
                cert_filename=os.path.join(directory, "ca.crt"),
                environ=env,
            ).load_and_set(configuration)
        except k8s_config.ConfigException as exc:
            return cls(None, None, disabled_reason=f"no in-cluster config ({exc})", **options)
        return cls(pod, k8s_client.ApiClient(configuration), **options)

    @classmethod
    def with_token(cls, host: str, token: str, pod: PodRef, **options: Any) -> PodLabeler:
        """Talk to the API server at ``host`` with a bearer ``token`` (tests, out-of-cluster)."""
        from kubernetes import client as k8s_client

        configuration = k8s_client.Configuration(
            host=host, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"}
        )
        return cls(pod, k8s_client.ApiClient(configuration), **options)

    @property
    def enabled(self) -> bool:
        return self._api is not None

    def add(self) -> bool:
        """Put the label on this pod. True when the API server confirmed it."""
        return self._set(True, self._ticket())

    def remove(self) -> bool:
        """Take the label off this pod. True when the API server confirmed it."""
        return self._set(False, self._ticket())

    def add_async(self) -> Awaitable[bool]:
        """:meth:`add` off the event loop (the SMTP server runs on asyncio).

        The ticket is taken at the call, not when the awaitable first runs: a ``remove_async``
        called later wins even if its thread reaches the API server first."""
        return asyncio.to_thread(self._set, True, self._ticket())

    def remove_async(self) -> Awaitable[bool]:
        """:meth:`remove` off the event loop; supersedes any add asked for before it."""
        return asyncio.to_thread(self._set, False, self._ticket())

    def keep_added(self, base_delay: float = 1.0, max_delay: float = 60.0) -> Awaitable[bool]:
        """Add the label; after a failed round (one :meth:`add` with its retries) try again,
        pausing ``base_delay``, doubling up to ``max_delay``, until the API server confirms it.

        One request (one ticket, taken at the call): it ends with False, without another round,
        when labelling is disabled (not in a pod) or a later request (a drain's remove)
        superseded it. Never raises, except CancelledError.
        """
        return self._keep_added(self._ticket(), base_delay, max_delay)

    async def _keep_added(self, ticket: int, base_delay: float, max_delay: float) -> bool:
        def not_added(state: RetryCallState) -> None:
            log.warning(
                "pod label %s=%s not added yet pod=%s retry_in=%.1fs",
                LABEL_KEY,
                LABEL_VALUE,
                self.pod,
                state.upcoming_sleep,
            )

        return await AsyncRetrying(  # another round while it may still succeed
            retry=retry_if_result(lambda added: not added and self.enabled and not self._superseded(ticket)),
            wait=wait_exponential(multiplier=base_delay, max=max_delay),
            before_sleep=not_added,
        )(asyncio.to_thread, self._set, True, ticket)

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()

    def _ticket(self) -> int:
        with self._tickets:
            self._latest += 1
            self._tickets.notify_all()
            return self._latest

    def _superseded(self, ticket: int) -> bool:
        with self._tickets:
            return self._latest != ticket

    def _pause(self, delay: float, ticket: int) -> None:
        if self._sleep is not None:
            self._sleep(delay)
            return
        with self._tickets:
            self._tickets.wait_for(lambda: self._latest != ticket, timeout=delay)

    def _set(self, present: bool, ticket: int) -> bool:
        if self._api is None or self.pod is None:
            self._log_disabled_once()
            return False
        action = "add" if present else "remove"
        body = label_patch(present)
        pod_ref, delays = self.pod, self._delays

        def retrying(state: RetryCallState) -> None:
            log.warning(
                "pod label %s failed pod=%s attempt=%d error=%s retry_in=%.2fs",
                action,
                pod_ref,
                state.attempt_number,
                describe_error(state.outcome.exception()),
                state.upcoming_sleep,
            )

        def patch() -> Any:
            if self._superseded(ticket):
                raise Superseded
            return self._api.patch_namespaced_pod(
                pod_ref.name, pod_ref.namespace, body, _content_type=MERGE_PATCH, _request_timeout=self._timeout
            )

        tries = Retrying(
            retry=retry_if_exception(lambda exc: not isinstance(exc, Superseded) and is_retryable(exc)),
            wait=lambda state: delays[state.attempt_number - 1] if state.attempt_number <= len(delays) else 0.0,
            stop=stop_after_attempt(len(delays) + 1),
            sleep=lambda delay: self._pause(delay, ticket),
            before_sleep=retrying,
            reraise=True,
        )
        with self._lock:  # add and remove must not interleave their retries
            try:
                pod = tries(patch)
            except Superseded:
                attempts = tries.statistics.get("attempt_number", 1) - 1
                log.info("pod label %s superseded by a later request pod=%s attempts=%d", action, pod_ref, attempts)
                return False
            except Exception as exc:  # mail intake must never see an API error
                log.error(
                    "pod label %s=%s %s failed pod=%s attempts=%d error=%s",
                    LABEL_KEY,
                    LABEL_VALUE,
                    action,
                    pod_ref,
                    tries.statistics.get("attempt_number", 1),
                    describe_error(exc),
                )
                return False
            labels = (pod.metadata.labels if pod.metadata else None) or {}
            confirmed = (labels.get(LABEL_KEY) == LABEL_VALUE) is present
            log.info(
                "pod label %s=%s %s pod=%s confirmed=%s",
                LABEL_KEY,
                LABEL_VALUE,
                "added" if present else "removed",
                pod_ref,
                confirmed,
            )
            return confirmed

    def _log_disabled_once(self) -> None:
        if not self._logged_disabled:
            self._logged_disabled = True
            log.info("pod label %s disabled: %s", LABEL_KEY, self._disabled_reason)
