"""Shared bits of the sandbox commands: where the running stack's fakes listen."""

from __future__ import annotations

import requests
from django.core.management.base import CommandError

from messaging.runtime.config import Config


def hive_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.sandbox_hive_port}/hive/_sandbox"


def rockblock_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.sandbox_rockblock_port}/rockblock/_sandbox"


def twilio_url(config: Config) -> str:
    return f"http://127.0.0.1:{config.sandbox_twilio_port}/_sandbox"


def call(method: str, url: str, **kwargs) -> requests.Response:
    try:
        response = requests.request(method, url, timeout=30, **kwargs)
    except requests.ConnectionError as exc:
        raise CommandError(
            f"cannot reach {url}: is `make run` (manage.py runbackend) running in sandbox mode?"
        ) from exc
    if response.status_code >= 400:
        raise CommandError(f"{url} answered {response.status_code}: {response.text[:300]}")
    return response
