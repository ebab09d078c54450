"""``manage.py sms_send``: someone texts a user's Twilio number (sandbox: a signed webhook from the fake Twilio)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from messaging.runtime.config import Config

from ._sandbox import call, twilio_url


class Command(BaseCommand):
    help = "Simulate an inbound SMS: the sandbox's fake Twilio signs it and posts it to our /sms webhook."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--from", dest="from_", required=True, help="sender's phone number, E.164")
        parser.add_argument("--to", required=True, help="the user's Twilio number, e.g. +15005550006")
        parser.add_argument("text")

    def handle(self, *args, **options) -> None:
        config = Config.from_env()
        webhook = f"http://127.0.0.1:{config.serve_http_port}/sms"
        public = config.twilio_webhook_public_url or webhook
        result = call(
            "POST",
            f"{twilio_url(config)}/inbound",
            json={
                "webhook_url": webhook,
                "public_url": public,
                "from": options["from_"],
                "to": options["to"],
                "body": options["text"],
            },
        ).json()
        self.stdout.write(f"webhook answered: {result}")
