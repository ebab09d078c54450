"""Config: from the environment, and the JSON form the running stack publishes for drain / upgrade."""

from __future__ import annotations

import json

from messaging.config import Config


def test_the_ray_dashboard_is_off_unless_asked_for():
    assert Config.from_env({}).ray_dashboard is False
    assert Config.from_env({"RAY_DASHBOARD": "1"}).ray_dashboard is True


def test_json_round_trip_keeps_every_field_and_type():
    config = Config(
        pool_size=3,
        swarm_poll_interval=0.5,
        email_relay_starttls=True,
        ray_namespace="ns",
        twilio_auth_token="secret",
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
