"""``manage.py device_send``: play the device - put a packet into the sandbox's fake Hive, or have the fake
RockBLOCK post an MO message (signed like Ground Control's) to our ``/rockblock`` webhook."""

from __future__ import annotations

import base64

from django.core.management.base import BaseCommand, CommandError

from messaging.core.codec import encode_from_device
from messaging.core.phones import normalise_phone
from messaging.core.types import Protocol
from messaging.runtime.config import Config
from messaging.satellite.networks import NETWORKS
from messaging.satellite.rockblock import MO_LIMIT
from messaging.satellite.swarm import MAX_DATA_BYTES

from ._sandbox import call, hive_url, rockblock_url


class Command(BaseCommand):
    help = "Send a message from a device (sandbox): email if --to has an @, SMS if it is a phone number."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--device", type=int, required=True, help="Swarm device id (e.g. 1234) or IMEI")
        parser.add_argument("--network", choices=sorted(NETWORKS), default="swarm", help="the device's network")
        parser.add_argument("--to", required=True, help="email address or phone number (E.164)")
        parser.add_argument("--lat", type=float, default=52.3867, help="RockBLOCK: latitude Iridium reports")
        parser.add_argument("--lon", type=float, default=0.2938, help="RockBLOCK: longitude Iridium reports")
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
        device, config = options["device"], Config.from_env()
        if options["network"] == "rockblock":
            if len(data) > MO_LIMIT:
                raise CommandError(
                    f"that message is {len(data)} bytes; a RockBLOCK MO message carries at most {MO_LIMIT}"
                )
            body = {"imei": device, "data": data.hex(), "latitude": options["lat"], "longitude": options["lon"]}
            post = call("POST", f"{rockblock_url(config)}/device_send", json=body).json()
            self.stdout.write(
                f"RockBLOCK {device} sent MO message {post['momsn']} ({protocol.name} to {to}); "
                "the fake RockBLOCK posts it to /rockblock until it is stored."
            )
            return
        if len(data) > MAX_DATA_BYTES:
            raise CommandError(f"that packet is {len(data)} bytes; a Swarm packet carries at most {MAX_DATA_BYTES}")
        packet = call(
            "POST",
            f"{hive_url(config)}/device_send",
            json={"deviceId": device, "data": base64.b64encode(data).decode()},
        ).json()
        self.stdout.write(
            f"device {device} sent packet {packet['packetId']} ({protocol.name} to {to}); "
            "a sender actor picks it up on its next poll."
        )
