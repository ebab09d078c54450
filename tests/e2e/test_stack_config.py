"""The running stack's config, as drain and upgrade read it from another process (Ray's GCS key-value store)."""

from __future__ import annotations

import pytest

from messaging.operations.launch import running_config

pytestmark = pytest.mark.e2e


def test_the_running_config_is_the_one_the_stack_started_with(e2e):
    # everything but the secrets, which the reading process takes from its own environment
    assert running_config(e2e.config.ray_namespace).public() == e2e.config.public()


def test_no_stack_in_a_namespace_is_a_value_error(e2e):
    with pytest.raises(ValueError):
        running_config("no-stack-runs-here")
