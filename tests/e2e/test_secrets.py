"""Secrets never travel through Ray: not in the key-value store, not in the runtime_env, and every node has them
in its own environment (a local Ray inherits them from the driver that started it)."""

from __future__ import annotations

import json

import pytest

from messaging.operations.launch import (
    CONFIG_KV_NAMESPACE,
    SECRET_ENV,
    _config_key,
    check_worker_secrets,
    split_env,
    worker_env,
)
from messaging.runtime.config import SECRET_FIELDS, ConfigError

pytestmark = pytest.mark.e2e


def sandbox_secrets(e2e) -> dict[str, str]:
    return {name: getattr(e2e.config, name) for name in SECRET_FIELDS if getattr(e2e.config, name)}


def test_the_published_config_holds_no_secret(e2e):
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(_config_key(e2e.config.ray_namespace), namespace=CONFIG_KV_NAMESPACE).decode()
    secrets = sandbox_secrets(e2e)
    assert {"swarm_password", "twilio_auth_token", "swarm_webhook_secret"} <= secrets.keys()
    assert not set(SECRET_FIELDS) & set(json.loads(raw))
    for name in ("twilio_auth_token", "swarm_webhook_secret"):
        assert secrets[name] not in raw
    assert json.loads(raw)["swarm_username"] == e2e.config.swarm_username


def test_the_runtime_env_holds_no_secret(e2e):
    import ray

    env_vars = ray.get_runtime_context().runtime_env.get("env_vars", {})
    assert env_vars.get("DJANGO_SETTINGS_MODULE") == "web.settings"
    assert not SECRET_ENV & set(env_vars)
    text = json.dumps(env_vars)
    assert all(value not in text for value in sandbox_secrets(e2e).values() if len(value) > 8)


def test_every_node_has_the_drivers_secrets_and_a_difference_is_refused(e2e, orm):
    from django.db import connection

    from .conftest import database_url

    _, secret = split_env(e2e.config, worker_env({"DATABASE_URL": database_url(connection.settings_dict)}))
    assert {"SWARM_PASSWORD", "TWILIO_AUTH_TOKEN", "SWARM_WEBHOOK_SECRET", "DATABASE_URL"} <= secret.keys()
    check_worker_secrets(secret)
    with pytest.raises(ConfigError) as err:
        check_worker_secrets({**secret, "TWILIO_AUTH_TOKEN": "rotated-but-pods-not-restarted"})
    assert "TWILIO_AUTH_TOKEN" in str(err.value) and "SWARM_PASSWORD" not in str(err.value)
    assert "rotated" not in str(err.value)
    with pytest.raises(ConfigError) as err:  # the nodes have a database this driver does not use
        check_worker_secrets({k: v for k, v in secret.items() if k != "DATABASE_URL"})
    assert "DATABASE_URL" in str(err.value)
