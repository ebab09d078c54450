"""``manage.py device_send``: play the device - put a packet into the sandbox's fake Hive."""

from __future__ import annotations

import base64

from django.core.management.base import BaseCommand, CommandError

from messaging.core.codec import encode_from_device
from messaging.core.phones import normalise_phone
from messaging.core.types import Protocol
from messaging.runtime.config import Config

from ._sandbox import call, hive_url


class Command(BaseCommand):
    help = "Send a message from a device (sandbox): email if --to has an @, SMS if it is a phone number."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--device", type=int, required=True, help="Swarm device id, e.g. 1234")
        parser.add_argument("--to", required=True, help="email address or phone number (E.164)")
        parser.add_argument("text")

    def handle(self, *args, **options) -> None:
        to = options["to"].strip()
        if "@" in to:
            protocol = Protocol.EMAIL
        elif normalise_phone(to):
            protocol = Protocol.SMS
        else:
            raise CommandError(f"--to {to!r} is neither an email address nor a phone number")
        data = encode_from_device([(options["text"], protocol, to)])
        if len(data) > 192:
            raise CommandError(f"that packet is {len(data)} bytes; a Swarm packet carries at most 192")
        packet = call(
            "POST",
            f"{hive_url(Config.from_env())}/device_send",
            json={"deviceId": options["device"], "data": base64.b64encode(data).decode()},
        ).json()
        self.stdout.write(
            f"device {options['device']} sent packet {packet['packetId']} ({protocol.name} to {to}); "
            "the satellite actor picks it up on its next poll."
        )
