"""``manage.py sandbox_outbox``: what the backend sent out as email (relay sink) and SMS (fake Twilio)."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import BaseCommand

from messaging.runtime.config import Config

from ._sandbox import call, twilio_url


class Command(BaseCommand):
    help = "List the email and SMS the sandbox's fakes received from the backend."

    def handle(self, *args, **options) -> None:
        record = settings.DATA_DIR / "sandbox" / "relay.jsonl"
        self.stdout.write("Email (relay sink):")
        lines = record.read_text().splitlines() if record.exists() else []
        for line in lines:
            m = json.loads(line)
            h = m.get("headers", {})
            self.stdout.write(f"  {h.get('From')} -> {h.get('To')}  {h.get('Subject')!r}")
        if not lines:
            self.stdout.write("  (none)")
        self.stdout.write("SMS (fake Twilio):")
        messages = call("GET", f"{twilio_url(Config.from_env())}/messages").json()
        for m in messages:
            self.stdout.write(f"  {m['from']} -> {m['to']}  {m['body']!r}")
        if not messages:
            self.stdout.write("  (none)")
