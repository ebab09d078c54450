"""``manage.py device_inbox``: what a device has received from the cloud (sandbox's fake Hive or fake RockBLOCK)."""

from __future__ import annotations

import base64

from django.core.management.base import BaseCommand

from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.runtime.config import Config
from messaging.satellite.networks import NETWORKS

from ._sandbox import call, hive_url, rockblock_url


class Command(BaseCommand):
    help = "Show the packets the sandbox's fake Hive (or fake RockBLOCK) delivered to a device, decoded."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--device", type=int, required=True, help="Swarm device id or IMEI")
        parser.add_argument("--network", choices=sorted(NETWORKS), default="swarm", help="the device's network")

    def handle(self, *args, **options) -> None:
        config = Config.from_env()
        if options["network"] == "rockblock":
            sent = call("GET", f"{rockblock_url(config)}/to_device", params={"imei": options["device"]}).json()
            packets = [(f"MT {m['mtId']}", bytes.fromhex(m["data"])) for m in sent]
        else:
            sent = call("GET", f"{hive_url(config)}/to_device", params={"deviceId": options["device"]}).json()
            packets = [(f"packet {p['packetId']}", base64.b64decode(p["data"])) for p in sent]
        if not packets:
            self.stdout.write(f"device {options['device']} has received nothing yet.")
        for label, data in packets:
            msg = pb.MessageDataPB()
            msg.ParseFromString(data)
            for m in msg.message:
                protocol = pb.Protocol.Name(m.protocol)
                self.stdout.write(f"{label}  {protocol:<5} from {m.to}: {m.text}")
