"""Config: from the environment, the JSON form the running stack publishes for drain / upgrade, and secrets
kept out of reprs, that JSON and pickles (what Ray stores in the GCS)."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest
from ray import cloudpickle

from messaging.operations.launch import SECRET_ENV, split_env, worker_env
from messaging.runtime.config import SECRET_FIELDS, Config, ConfigError, WebSettings, comma_list, parse_bool
from messaging.sandbox.stack import sandboxed

SECRETS = {
    "swarm_password": "hive-pw-5e1f",
    "swarm_webhook_secret": "push-secret-77aa",
    "twilio_auth_token": "twilio-token-9c3d",
    "email_relay_password": "relay-pw-2b8e",
    "database_url": "postgres://app:db-pw-41f0@db:5432/app",
    "rockblock_password": "rockblock-pw-6d2a",
}


@pytest.fixture
def no_secret_env(monkeypatch):
    for name in SECRET_FIELDS:
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def secret_config(**kw) -> Config:
    return Config(swarm_username="hiveuser", twilio_account_sid="AC123", **SECRETS, **kw)


def test_the_ray_dashboard_is_off_unless_asked_for():
    assert Config.from_env({}).ray_dashboard is False
    assert Config.from_env({"RAY_DASHBOARD": "1"}).ray_dashboard is True


def test_rockblock_defaults_are_the_real_api_and_ground_controls_published_key():
    from messaging.satellite import rockblock

    config = Config.from_env({})
    assert config.rockblock_api_url == rockblock.DEFAULT_API_URL
    assert rockblock.public_key(config) == rockblock.GROUND_CONTROL_PUBLIC_KEY_FILE.read_text()
    assert "BEGIN PUBLIC KEY" in rockblock.public_key(config)


def test_json_round_trip_keeps_every_field_and_type(no_secret_env):
    config = Config(
        pool_size=3,
        swarm_poll_interval=0.5,
        email_relay_starttls=True,
        ray_namespace="ns",
    )
    again = Config.from_json(config.to_json())
    assert again == config
    assert isinstance(again.swarm_poll_interval, float) and isinstance(again.pool_size, int)


def test_json_from_another_version_drops_unknown_fields_and_defaults_missing_ones():
    data = json.loads(Config(pool_size=4).to_json())
    data["field_of_a_newer_version"] = 1
    del data["max_packets"]
    again = Config.from_json(json.dumps(data).encode())
    assert again.pool_size == 4
    assert again.max_packets == Config().max_packets


def test_the_secret_fields_are_every_secret_of_the_kubernetes_secret():
    assert {f.upper() for f in SECRET_FIELDS} == {
        "SWARM_PASSWORD",
        "SWARM_WEBHOOK_SECRET",
        "TWILIO_AUTH_TOKEN",
        "EMAIL_RELAY_PASSWORD",
        "DATABASE_URL",
        "ROCKBLOCK_PASSWORD",
    }


def test_repr_shows_no_secret():
    text = repr(secret_config()) + str(secret_config())
    assert "hiveuser" in text and "AC123" in text
    for value in SECRETS.values():
        assert value not in text


def test_json_for_the_key_value_store_carries_no_secret(no_secret_env):
    config = secret_config()
    text = config.to_json()
    for name, value in SECRETS.items():
        assert value not in text and name not in json.loads(text)
    assert Config.from_json(text).swarm_username == "hiveuser"
    assert Config.from_json(text).twilio_auth_token == ""  # not in this process's environment


def test_json_takes_the_secrets_from_the_reading_process(no_secret_env):
    text = secret_config().to_json()
    no_secret_env.setenv("TWILIO_AUTH_TOKEN", "from-env")
    assert Config.from_json(text).twilio_auth_token == "from-env"
    # JSON an older version published (secrets inside): they are not taken from it
    old = json.dumps({**json.loads(text), **SECRETS})
    assert Config.from_json(old).swarm_password == ""


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_a_pickled_config_carries_no_secret_and_the_receiver_takes_them_from_its_environment(no_secret_env, dumps):
    """What Ray stores for actor and task arguments: the secrets stay behind, workers have them in their env."""
    config = secret_config()
    data = dumps(config)
    for value in SECRETS.values():
        assert value.encode() not in data
    bare = pickle.loads(data)
    assert bare.swarm_username == "hiveuser" and bare.twilio_account_sid == "AC123"
    assert all(getattr(bare, name) == "" for name in SECRETS)  # nothing leaks from the sender
    for name, value in SECRETS.items():
        no_secret_env.setenv(name.upper(), value)
    assert pickle.loads(data) == config


def test_copies_in_one_process_keep_the_secrets(no_secret_env):
    config = secret_config()
    assert copy.deepcopy(config).twilio_auth_token == SECRETS["twilio_auth_token"]
    assert copy.copy(config) == config


def test_env_vars_and_runtime_env_carry_no_secret(no_secret_env):
    config = secret_config()
    assert not SECRET_ENV & set(config.env_vars())
    no_secret_env.setenv("DJANGO_SECRET_KEY", "django-key-1234")
    public, secret = split_env(config, worker_env({"DATABASE_URL": "sqlite:///x"}))
    text = json.dumps(public)
    for value in [*SECRETS.values(), "django-key-1234", "sqlite:///x"]:
        assert value not in text
    assert secret["TWILIO_AUTH_TOKEN"] == SECRETS["twilio_auth_token"]
    assert secret["DATABASE_URL"] == "sqlite:///x" and secret["DJANGO_SECRET_KEY"] == "django-key-1234"


# --- one reading of the environment for the stack, Django and the sandbox ---------------------------------------

# Every service configured, so that SANDBOX=0 is a valid choice
COMPLETE = {
    "SWARM_HIVE_URL": "https://hive.example/hive",
    "SWARM_USERNAME": "u",
    "SWARM_PASSWORD": "p",
    "TWILIO_ACCOUNT_SID": "AC1",
    "TWILIO_AUTH_TOKEN": "t",
    "TWILIO_WEBHOOK_PUBLIC_URL": "https://x.example/sms",
    "EMAIL_RELAY_HOST": "smtp.example",
}


@pytest.mark.parametrize(
    ("word", "on"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("False", False), ("no", False)]
    + [("off", False), ("maybe", None)],
)
def test_one_boolean_reading_for_the_stack_django_and_the_sandbox(word, on):
    assert parse_bool(word) is on
    assert Config.from_env({"RAY_DASHBOARD": word}).ray_dashboard is bool(on)
    assert WebSettings.from_env({"DJANGO_DEBUG": word}).django_debug is bool(on)
    sandbox = Config.from_env({"SANDBOX": word, **COMPLETE})
    if on is None:
        with pytest.raises(ConfigError, match="SANDBOX"):
            sandboxed(sandbox)
    else:
        assert sandboxed(sandbox) is on


def test_django_settings_read_like_the_config():
    web = WebSettings.from_env({"DJANGO_ALLOWED_HOSTS": "a.example, b.example,", "DATA_DIR": "", "LOG_LEVEL": "DEBUG"})
    assert comma_list(web.django_allowed_hosts) == ["a.example", "b.example"]
    assert web.data_dir == "" and web.log_level == "DEBUG"  # empty is unset, as for every Config variable
    assert comma_list(WebSettings.from_env({}).django_allowed_hosts) == ["localhost", "127.0.0.1"]
    assert "k-123" not in repr(WebSettings.from_env({"DJANGO_SECRET_KEY": "k-123"}))


def test_one_setting_is_read_while_another_variable_is_malformed():
    env = {"POOL_SIZE": "two", "EMAIL_DOMAIN": "beaver.test"}
    with pytest.raises(ConfigError, match="POOL_SIZE"):
        Config.from_env(env)
    assert Config.setting("email_domain", env) == "beaver.test"
    assert Config.setting("database_url", env) == ""
    with pytest.raises(ConfigError, match="POOL_SIZE"):
        Config.setting("pool_size", env)


def test_workers_see_the_drivers_mail_domain_and_sandbox_relay_port(no_secret_env):
    """The web inside Serve shows the mailboxes the mail server accepts and sends its mail to the sandbox relay
    sink the driver started (an ephemeral port in tests), whatever the workers' own environment says."""
    no_secret_env.setenv("EMAIL_DOMAIN", "elsewhere.example")
    config = dataclasses.replace(secret_config(), email_domain="beaver.test", sandbox_relay_port=40123)
    public, _ = split_env(config, worker_env())
    assert public["EMAIL_DOMAIN"] == "beaver.test" and public["SANDBOX_RELAY_PORT"] == "40123"
