"""Start and stop the whole stack on Ray: named actor pools, the Serve app, start-up progress.

Used by ``manage.py runbackend`` and by the end-to-end tests (so the tests run the real launch path).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import ray
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get, _internal_kv_put
from ray.util.placement_group import get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from messaging.core.types import Channel
from messaging.operations import local_ray
from messaging.operations.console import WORKER_SETUP_HOOK
from messaging.operations.haproxy_admin import write_launcher
from messaging.operations.kinds import KIND_NAMES, KINDS, RETIRED_KIND_NAMES, ActorKind, sender_pools
from messaging.runtime.config import RAY_SERVE_DEFAULTS, SECRET_FIELDS, Config, ConfigError, ray_serve_haproxy
from messaging.runtime.pool import NamedPool, member_name

SERVE_APP = "spacebeaver"
# What Ray workers need to bring up Django (the Config itself travels as an actor argument, without its secrets).
WORKER_ENV = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "DATA_DIR",
    "DJANGO_SECRET_KEY",
    "EMAIL_DOMAIN",
    "LOG_LEVEL",
)
# Never handed over through Ray (a runtime_env, like actor arguments and the key-value store, is kept in the GCS,
# in Redis on Kubernetes): Ray workers have them in their own environment. A local Ray inherits them from the
# driver that starts it; on Kubernetes the Ray pods get them from the Secret. connect_ray checks that they agree.
SECRET_ENV = frozenset({name.upper() for name in SECRET_FIELDS} | {"DJANGO_SECRET_KEY"})


@dataclass
class Stack:
    config: Config
    pools: dict[str, NamedPool]
    actors: dict[str, list] = field(default_factory=dict)


# The running stack's Config, for drain/upgrade from another process: a value in the GCS key-value store
# (it lives as long as the cluster, survives the driver, and costs no process).
CONFIG_KV_NAMESPACE = "spacebeaver"


def _config_key(namespace: str) -> str:
    return f"stack_config:{namespace}"


def publish_config(config: Config) -> None:
    _internal_kv_put(_config_key(config.ray_namespace), config.to_json(), overwrite=True, namespace=CONFIG_KV_NAMESPACE)


def running_config(namespace: str) -> Config:
    """The config of the stack running in ``namespace`` (raises ValueError when none runs)."""
    raw = _internal_kv_get(_config_key(namespace), namespace=CONFIG_KV_NAMESPACE)
    if raw is None:
        raise ValueError(f"no stack is running in Ray namespace {namespace!r}")
    return Config.from_json(raw)


def forget_config(namespace: str) -> None:
    _internal_kv_del(_config_key(namespace), namespace=CONFIG_KV_NAMESPACE)


def worker_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """What Ray workers need in their environment (secrets included: see :func:`split_env`)."""
    env = {"DJANGO_SETTINGS_MODULE": "web.settings"}
    env.update({k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)})
    env.update(overrides or {})
    return env


def ray_runtime_env(public: dict[str, str]) -> dict:
    """The runtime_env of our Ray jobs: the public part of the workers' environment (never secrets: a runtime_env
    is kept in the GCS), and the hook that keeps Serve's INFO lines in its log files (operations/console.py)."""
    return {"env_vars": public, "worker_process_setup_hook": WORKER_SETUP_HOOK}


def split_env(config: Config, env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)``: the variables that may travel as a Ray runtime_env, and the secrets (the config's
    and the environment's) that Ray workers must find in their own environment."""
    public = {k: v for k, v in env.items() if k not in SECRET_ENV}
    public["SANDBOX"] = config.sandbox  # Django refuses its built-in key outside the sandbox (web/settings.py)
    public["EMAIL_DOMAIN"] = config.email_domain  # the web shows the mailboxes the mail server accepts
    public["SANDBOX_RELAY_PORT"] = str(config.sandbox_relay_port)  # the sandbox web's mail goes to the relay sink
    secret = {**config.secret_env(), **{k: v for k, v in env.items() if k in SECRET_ENV}}
    return public, secret


def export_for_local_ray(config: Config, env: dict[str, str]) -> None:
    """Put the workers' secrets (and SANDBOX) into this process's environment, which a Ray started from here
    (``operations/local_ray.py``, or ``ray.cluster_utils.Cluster``) passes on to its raylets and workers."""
    public, secret = split_env(config, env)
    os.environ.update(secret)
    os.environ["SANDBOX"] = public["SANDBOX"]


def _fingerprints(names: list[str]) -> dict[str, str]:
    """A digest per variable ('' when unset): compared between processes, never logged or stored."""
    return {n: hashlib.sha256(os.environ[n].encode()).hexdigest() if os.environ.get(n) else "" for n in names}


@ray.remote(num_cpus=0, max_calls=1)
def _node_fingerprints(names: list[str]) -> dict[str, str]:
    return _fingerprints(names)


def check_worker_secrets(secret: dict[str, str], timeout: float = 120.0) -> None:
    """Fail closed when a Ray node's environment lacks a secret this driver has, or has another value (e.g. a
    Secret changed but the Ray pods not restarted). One task per alive node; raises ConfigError naming them."""
    # Every secret, set or not: a node that has one this driver lacks (say a DATABASE_URL) is as wrong as one
    # that lacks it, since its workers would write elsewhere.
    names = sorted(set(SECRET_ENV) | set(secret))
    want = {n: hashlib.sha256(secret[n].encode()).hexdigest() if secret.get(n) else "" for n in names}
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [
        _node_fingerprints.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(names)
        for node in nodes
    ]
    wrong: set[str] = set()
    for got in ray.get(refs, timeout=timeout):
        wrong |= {n for n in names if got.get(n) != want[n]}
    if wrong:
        raise ConfigError(
            f"the Ray workers' environment lacks or differs in {', '.join(sorted(wrong))}: give every Ray node "
            "the same values as this process (Kubernetes: the Secret spacebeaver-secrets, then restart the Ray pods)"
        )


def connect_ray(config: Config, env: dict[str, str], echo: Callable[[str], None] = print) -> None:
    """Join RAY_ADDRESS, or start a local Ray. Workers get the Django environment; secrets never travel through
    Ray (see SECRET_ENV): a local Ray inherits them from here, a cluster must have them, which is checked."""
    global _local
    if ray.is_initialized():
        return
    address = config.ray_address or None
    echo(f"Ray: {'connecting to ' + address if address else 'starting a local instance'} ...")
    public, secret = split_env(config, env)
    if not address:
        export_for_local_ray(config, env)
        # No idle worker prestarted for the driver (every actor gets a worker process of its own anyway).
        # An environment override of Ray's system config, read by the raylet we start.
        os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
        # Serve behind HAProxy, on its throughput-optimised path (config.RAY_SERVE_DEFAULTS), unless set:
        # read by the Serve processes of the Ray we start (on Kubernetes the ConfigMap sets them).
        for name, value in RAY_SERVE_DEFAULTS.items():
            os.environ.setdefault(name, value)
        prepare_local_haproxy(config)
        # Always a Ray of our own, never one found running on this machine, so its workers have the secrets
        # exported above (a cluster's workers have their own, which are checked). Without the processes a
        # one-machine stack does not use (operations/local_ray.py); the dashboard only with RAY_DASHBOARD=1.
        _local = local_ray.start(
            dashboard=config.ray_dashboard, dashboard_host="127.0.0.1", dashboard_port=config.ray_dashboard_port
        )
        address = _local.address
    ray.init(
        address=address,
        namespace=config.ray_namespace,
        runtime_env=ray_runtime_env(public),
        logging_level="WARNING",
    )
    if config.ray_address:
        try:
            check_worker_secrets(secret)
        except ConfigError:
            ray.shutdown()
            raise
    echo(f"Ray: up ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)")


_local: local_ray.LocalRay | None = None  # the Ray connect_ray started on this machine, if it did


def disconnect_ray() -> None:
    """Leave Ray; a local Ray that connect_ray started stops with it (a joined cluster keeps running)."""
    global _local
    if ray.is_initialized():
        ray.shutdown()
    if _local is not None:
        _local.stop()
        _local = None


def local_ray_stopping() -> bool:
    """Has a process of the local Ray connect_ray started (GCS, raylet, ...) exited already?"""
    return _local is not None and _local.stopping()


# Where Serve's HAProxy puts its stats page and Prometheus exporter (operations/haproxy_admin.py applies them).
HAPROXY_SETTINGS = {
    "SERVE_HAPROXY_HOST": "serve_haproxy_host",
    "SERVE_HAPROXY_STATS_PORT": "serve_haproxy_stats_port",
    "SERVE_HAPROXY_METRICS_PORT": "serve_haproxy_metrics_port",
}


def prepare_local_haproxy(config: Config) -> None:
    """For a Ray we start: HAProxy's admin listeners where the config says (unless the environment already
    says), through our launcher as Serve's HAProxy binary. Read by the Serve processes of that Ray; on
    Kubernetes the ConfigMap sets the same variables for the Ray pods and the image carries the launcher."""
    for name, attr in HAPROXY_SETTINGS.items():
        os.environ.setdefault(name, str(getattr(config, attr)))
    os.environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = write_launcher()


def haproxy_admin_ports(config: Config) -> dict[str, int]:
    """The stats and metrics ports HAProxy is told to use (the environment wins, as for the Ray we start)."""
    return {
        "HAProxy stats": int(os.environ.get("SERVE_HAPROXY_STATS_PORT") or config.serve_haproxy_stats_port),
        "HAProxy metrics": int(os.environ.get("SERVE_HAPROXY_METRICS_PORT") or config.serve_haproxy_metrics_port),
    }


def private_ingress_ports(pick_port: Callable[[], int]) -> None:
    """For a stack sharing its host with others (tests, benchmarks): Serve's HAProxy stats and metrics ports,
    fixed by default (8404, 9101), on free ports instead, so two stacks do not collide."""
    for name in ("SERVE_HAPROXY_STATS_PORT", "SERVE_HAPROXY_METRICS_PORT"):
        os.environ.setdefault(name, str(pick_port()))


def make_pools(config: Config) -> dict[str, NamedPool]:
    return {name: NamedPool(name, config.pool_size, config.ray_namespace) for name in KIND_NAMES}


BUNDLE = {"CPU": 0.001}  # a token amount: bundles must ask for something; actors run with num_cpus=0


def placement_name(config: Config, kind: str) -> str:
    return f"{config.ray_namespace}-{kind}-spread"


def pool_placement(config: Config, kind: str):
    """The pool's placement group: one bundle per member, SPREAD over the nodes.

    So members land on different nodes where there are several (a courier per node: the SMTP Service
    forwards port 25 to one port per pod), and when a node dies Ray moves its bundles - and the members
    restarting in them - to the nodes that are left (a soft spread, so fewer nodes than members is fine).
    """
    name = placement_name(config, kind)
    try:
        pg = get_placement_group(name)
        if len(pg.bundle_specs) != config.pool_size:
            remove_placement_group(pg)
            raise ValueError("pool size changed")
    except ValueError:
        pg = placement_group([BUNDLE] * config.pool_size, strategy="SPREAD", name=name, lifetime="detached")
    ray.get(pg.ready(), timeout=120)
    return pg


def remove_placement(config: Config, kind: str) -> None:
    try:
        remove_placement_group(get_placement_group(placement_name(config, kind)))
    except ValueError:
        pass


def remove_placements(config: Config) -> None:
    for kind in KIND_NAMES + RETIRED_KIND_NAMES:
        remove_placement(config, kind)


def create_member(kind: ActorKind, idx: int, config: Config, pools: dict[str, NamedPool]):
    """Member ``idx`` of ``kind``: detached, named, in its bundle of the pool's placement group."""
    opts = {
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=pool_placement(config, kind.name), placement_group_bundle_index=idx
        ),
        "name": member_name(kind.name, idx),
        "namespace": config.ray_namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "num_cpus": 0,
    }
    return kind.construct(opts, config, pools, idx)


def start_actors(
    config: Config,
    echo: Callable[[str], None] = print,
    timeout: float | None = None,
    pools: dict[str, NamedPool] | None = None,
) -> Stack:
    """Start POOL_SIZE actors of each kind and wait until each is up (a line per kind as it is).

    In two waves, so that intake answers soonest (Ray starts a node's worker processes a few at a time): first
    the kinds that take intake (``ActorKind.early``: the couriers), then any other, which sweep the outbox for
    whatever intake stored meanwhile."""
    stack = Stack(config=config, pools=pools or make_pools(config))
    publish_config(config)
    timeout = config.actor_start_timeout if timeout is None else timeout
    started = time.monotonic()
    for wave in EARLY, LATER:
        _start_kinds(stack, wave, echo, started + timeout)
    return stack


def start_stack(config: Config, echo: Callable[[str], None] = print, timeout: float | None = None) -> Stack:
    """The whole stack, intake first: the Serve app (with the admin) deploys while the couriers start (each up once
    its SMTP socket listens and its outbox sweep runs); any kind not ``early`` starts after Serve answers. Returns
    once all are up, else :class:`ActorsNotUp` after ``timeout`` (default ACTOR_START_TIMEOUT)."""
    stack = Stack(config=config, pools=make_pools(config))
    publish_config(config)
    timeout = config.actor_start_timeout if timeout is None else timeout
    started = time.monotonic()
    deploying = Deploying(_run_serve_app.remote(config, sender_pools(stack.pools), True), started)
    _start_kinds(stack, EARLY, echo, started + timeout)
    start_serve(config, stack, echo, deploying=deploying)
    _start_kinds(stack, LATER, echo, started + timeout)
    return stack


EARLY = tuple(kind for kind in KINDS if kind.early)
LATER = tuple(kind for kind in KINDS if not kind.early)


def _start_kinds(stack: Stack, kinds: tuple[ActorKind, ...], echo: Callable[[str], None], deadline: float) -> None:
    """Create POOL_SIZE members of each of ``kinds`` at once; a line per kind once all its members are up."""
    config, started = stack.config, time.monotonic()
    starting: dict[ray.ObjectRef, str] = {}
    for kind in kinds:
        stack.actors[kind.name] = [create_member(kind, i, config, stack.pools) for i in range(config.pool_size)]
        starting.update({kind.start(h, config): kind.name for h in stack.actors[kind.name]})
    members_left = {kind.name: config.pool_size for kind in kinds}
    while starting:
        ready, _ = ray.wait(list(starting), num_returns=1, timeout=max(deadline - time.monotonic(), 0))
        if not ready:
            raise ActorsNotUp(sorted(set(starting.values())), time.monotonic() - started)
        for ref in ready:
            ray.get(ref)  # a constructor or start() that failed raises here
            name = starting.pop(ref)
            members_left[name] -= 1
            if members_left[name] == 0:
                echo(f"  {name:<10} x{config.pool_size} up ({time.monotonic() - started:.1f}s)")
    stack.actors = {kind.name: stack.actors[kind.name] for kind in KINDS if kind.name in stack.actors}  # KINDS order


# Serve's client library (``ray.serve``, ~50 MB resident) is used in a task, on a worker that exits
# afterwards (max_calls=1), so that it never stays in the long-running driver (runbackend).
@ray.remote(num_cpus=0, max_calls=1)
def _run_serve_app(config: Config, senders: dict[Channel, NamedPool], mount_admin: bool) -> None:
    """Start Serve and deploy the app. ``serve.start`` returns only once its ingress proxies are up (a process
    each, ~2 s); the app is deployed as soon as the controller exists, so its replica starts meanwhile. The app's
    module (Django, Starlette, the intake) is imported while the controller's process starts."""
    from ray import serve  # (see above)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="serve-start") as background:
        starting = background.submit(
            serve.start, http_options={"host": config.serve_http_host, "port": config.serve_http_port}
        )
        from messaging.intake.webhooks import Webhooks  # (see the docstring)

        named = Retrying(
            retry=retry_if_result(lambda found: not found),
            wait=wait_fixed(0.05),
            stop=stop_after_delay(config.serve_start_timeout),
            retry_error_callback=lambda state: False,
        )(_serve_controller_named, starting)
        if starting.done():
            starting.result()  # raises what stopped Serve from starting (e.g. HAProxy could not bind its port)
        elif not named:  # never serve.run here: without a controller it would start Serve on its default port
            raise RuntimeError(f"Serve's controller not created in {config.serve_start_timeout:.0f} s")
        serve.run(Webhooks.bind(config, senders, mount_admin), name=SERVE_APP, route_prefix="/")
        starting.result()


def _serve_controller_named(starting: Future) -> bool:
    """Is Serve's controller created (its name known), or has ``serve.start`` already ended (then: stop waiting)?"""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE  # (see _run_serve_app)

    if starting.done():
        return True
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


@ray.remote(num_cpus=0, max_calls=1)
def _shutdown_serve() -> None:
    """Serve and everything of it (controller, ingress, replicas). Not ``serve.delete`` first: behind HAProxy that
    waits ~30 s for routes to drain, and intake is safe without it (nothing is acknowledged before it is stored;
    a webhook cut off here is retried by its sender)."""
    from ray import serve  # Serve's client library only in this short-lived task (see _run_serve_app)

    serve.shutdown()


class ActorsNotUp(RuntimeError):
    """Members of these kinds (names) were not up before the start-up's deadline (e.g. a mail server that cannot
    bind its port retries, and says why in its log)."""

    def __init__(self, kinds: list[str], waited: float) -> None:
        super().__init__(f"{', '.join(kinds)} not up after {waited:.0f} s")
        self.kinds, self.waited = kinds, waited


def actors_failure(exc: ActorsNotUp, smtp: str, smtp_taken: bool | None, logs: str) -> str:
    """The one line runbackend ends with when actors did not come up: which, and the likely cause. ``smtp``: the
    mail servers' address; ``smtp_taken``: whether another process holds it (None: not checked, a cluster)."""
    head = f"{' and '.join(exc.kinds)} not up after {exc.waited:.0f} s"
    listening = any(kind.listens for kind in KINDS if kind.name in exc.kinds)  # the couriers' mail servers
    if listening and smtp_taken:
        return f"{head}: SMTP port {smtp} is taken by another process (SMTP_LISTEN_PORT); see {logs}"
    if listening and smtp_taken is None:
        return f"{head}: is SMTP port {smtp} taken on the Ray nodes? see {logs}"
    return f"{head}; see {logs}"


class IngressNotAnswering(RuntimeError):
    """Serve did not deploy, or its HTTP ingress did not answer ``GET /healthz``, within SERVE_START_TIMEOUT."""

    def __init__(self, address: str, waited: float, detail: str) -> None:
        super().__init__(f"HTTP ingress not answering on {address} after {waited:.0f} s ({detail})")
        self.address, self.waited, self.detail = address, waited, detail


def probe_address(config: Config) -> tuple[str, int]:
    """Where a process on a Ray node reaches Serve's HTTP ingress (the wildcard address is reached on loopback)."""
    host = config.serve_http_host if config.serve_http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return host, config.serve_http_port


def wait_healthz(host: str, port: int, timeout: float) -> str | None:
    """Poll ``GET /healthz`` until it answers 200 (returns None) or ``timeout`` passes (returns the last error)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            try:
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
            finally:
                conn.close()
            if status == 200:
                return None
            last = f"GET /healthz answered {status}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            return last
        time.sleep(0.25)


@ray.remote(num_cpus=0, max_calls=1)
def _wait_healthz_on_a_node(host: str, port: int, timeout: float) -> str | None:
    return wait_healthz(host, port, timeout)


@dataclass(frozen=True)
class Deploying:
    """A deployment of the Serve app under way (the task's ref), since ``started`` (time.monotonic())."""

    ref: ray.ObjectRef
    started: float


def start_serve(
    config: Config,
    stack: Stack,
    echo: Callable[[str], None] = print,
    mount_admin: bool = True,
    timeout: float | None = None,
    deploying: Deploying | None = None,
) -> str:
    """Deploy the Serve app (or go on with ``deploying``) and wait until its HTTP ingress answers ``GET /healthz``;
    both within ``timeout`` (default SERVE_START_TIMEOUT), else :class:`IngressNotAnswering`. With a Ray we started
    the driver is on the node and asks itself; in a cluster a task on one of its nodes asks."""
    timeout = config.serve_start_timeout if timeout is None else timeout
    if deploying is None:
        deploying = Deploying(_run_serve_app.remote(config, sender_pools(stack.pools), mount_admin), time.monotonic())
    started, ref = deploying.started, deploying.ref
    host, port = probe_address(config)
    address = f"{host}:{port}"
    try:
        ray.get(ref, timeout=max(timeout - (time.monotonic() - started), 1.0))
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise IngressNotAnswering(address, time.monotonic() - started, "Serve did not finish deploying") from None
    except ray.exceptions.RayError as exc:  # e.g. HAProxy exited at start: serve.start raises
        raise IngressNotAnswering(address, time.monotonic() - started, serve_failure_detail(str(exc))) from None
    left = max(timeout - (time.monotonic() - started), 1.0)
    if config.ray_address:
        try:
            error = ray.get(_wait_healthz_on_a_node.remote(host, port, left), timeout=left + 30)
        except ray.exceptions.GetTimeoutError:
            error = "the probe task did not run"
    else:
        error = wait_healthz(host, port, left)
    if error is not None:
        raise IngressNotAnswering(address, time.monotonic() - started, error)
    url = f"http://{config.serve_http_host}:{config.serve_http_port}"
    echo(f"  serve      up at {url} ({time.monotonic() - started:.1f}s)")
    return url


def serve_failure_detail(text: str) -> str:
    """A short cause from the error Serve raised when it could not start (HAProxy's bind failure above all)."""
    bind = re.search(r"cannot bind socket \(([^)]*)\) for \[([^\]]*)\]", text)
    if bind:
        return f"HAProxy cannot bind {bind.group(2)}: {bind.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w+(Error|Exception):", line)]
    return ((errors or lines or ["Serve failed to start"])[-1])[:200]


def port_is_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def ingress_ports(config: Config) -> dict[int, tuple[str, str]]:
    """Every port the HTTP ingress needs on a node: port -> (what, bind host)."""
    admin_host = os.environ.get("SERVE_HAPROXY_HOST") or config.serve_haproxy_host
    ports = {config.serve_http_port: ("HTTP", config.serve_http_host or "0.0.0.0")}
    if ray_serve_haproxy():
        for what, port in haproxy_admin_ports(config).items():
            ports.setdefault(port, (what, admin_host))
    return ports


def ingress_failure(exc: IngressNotAnswering, taken: dict[int, str], candidates: dict[int, str], logs: str) -> str:
    """The one line runbackend ends with when the HTTP ingress does not come up: what, and the likely cause.

    ``taken``: ports found held by another process (port -> what); ``candidates``: the ports that could be, when
    nothing could be checked (a cluster's nodes)."""
    head = f"HTTP ingress not answering on {exc.address} after {exc.waited:.0f} s"
    if taken:
        held = " and ".join(f"port {port} ({what})" for port, what in sorted(taken.items()))
        verb = "is" if len(taken) == 1 else "are"
        return f"{head}: {held} {verb} taken by another process ({exc.detail}); see {logs}"
    if candidates:
        asked = " or ".join(f"{port} ({what})" for port, what in sorted(candidates.items()))
        return f"{head} ({exc.detail}): is port {asked} taken? see {logs}"
    return f"{head} ({exc.detail}); see {logs}"


def running_members(config: Config, kind: str) -> list[tuple[str, object]]:
    """``(name, handle)`` of each member of ``kind`` (a kind's name) that is running now."""
    found = []
    for idx in range(config.pool_size):
        name = member_name(kind, idx)
        try:
            found.append((name, ray.get_actor(name, namespace=config.ray_namespace)))
        except ValueError:
            continue
    return found


def _kill_retired(config: Config, echo: Callable[[str], None]) -> None:
    for kind in RETIRED_KIND_NAMES:
        for name, handle in running_members(config, kind):
            ray.kill(handle, no_restart=True)
            echo(f"  {name:<10} stopped (a kind this version no longer runs)")


def stop_stack(config: Config, echo: Callable[[str], None] = print) -> None:
    """Stop intake first (the couriers' listening sockets, then Serve), then kill every named actor."""
    members = {kind.name: running_members(config, kind.name) for kind in reversed(KINDS)}
    for kind in reversed(KINDS):
        if kind.listens:
            for name, handle in members[kind.name]:
                try:
                    ray.get(handle.stop.remote(), timeout=10)
                except Exception as exc:  # stopping anyway
                    echo(f"  {name}: stop failed: {exc}")
    try:
        ray.get(_shutdown_serve.remote(), timeout=120)
        echo("  serve      stopped")
    except Exception as exc:
        echo(f"  serve: {exc}")
    for kind in reversed(KINDS):
        for _, handle in members[kind.name]:
            ray.kill(handle, no_restart=True)
        echo(f"  {kind.name:<10} stopped")
    _kill_retired(config, echo)  # and any member of a kind an earlier version ran
    remove_placements(config)
    forget_config(config.ray_namespace)
