"""``manage.py device_inbox``: what a device has received from the cloud (sandbox's fake Hive)."""

from __future__ import annotations

import base64

from django.core.management.base import BaseCommand

from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.runtime.config import Config

from ._sandbox import call, hive_url


class Command(BaseCommand):
    help = "Show the packets the sandbox's fake Hive delivered to a device, decoded."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--device", type=int, required=True)

    def handle(self, *args, **options) -> None:
        url = f"{hive_url(Config.from_env())}/to_device"
        packets = call("GET", url, params={"deviceId": options["device"]}).json()
        if not packets:
            self.stdout.write(f"device {options['device']} has received nothing yet.")
        for packet in packets:
            msg = pb.MessageDataPB()
            msg.ParseFromString(base64.b64decode(packet["data"]))
            for m in msg.message:
                protocol = pb.Protocol.Name(m.protocol)
                self.stdout.write(f"packet {packet['packetId']}  {protocol:<5} from {m.to}: {m.text}")
