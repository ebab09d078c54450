"""The satellite transport interface: packets from any network read the same way, and delivery sends through
whichever network it is given, fitted to that network's packet budget."""

from __future__ import annotations

import base64

import pytest

from messaging.core.codec import BadPayloadEncoding, encode_from_device
from messaging.core.pb import MessageDataPB_pb2 as pb
from messaging.core.types import Direction, Protocol
from messaging.satellite.networks import LARGEST_PACKET_BUDGET, NETWORKS
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import DevicePacket, MalformedItem, SatelliteNetwork

DEVICE_BYTES = encode_from_device([("hello", Protocol.EMAIL, "amy@example.org"), ("hi", Protocol.SMS, "+15550001111")])


def test_a_packet_reads_the_same_from_base64_or_hex():
    b64 = DevicePacket("hive:42", 7, 42, base64.b64encode(DEVICE_BYTES).decode())
    hexed = DevicePacket("other:42", 7, 42, DEVICE_BYTES.hex(), encoding="hex")
    assert b64.payload() == hexed.payload() == DEVICE_BYTES
    [first, second] = b64.messages()
    assert (first.idempotency_key, second.idempotency_key) == ("hive:42:0", "hive:42:1")
    assert [m.idempotency_key for m in hexed.messages()] == ["other:42:0", "other:42:1"]
    assert first.direction == Direction.FROM_DEVICE and first.sender == "device:7" and first.device_id == 7
    assert (second.protocol, second.recipient, second.text) == (Protocol.SMS, "+15550001111", "hi")


@pytest.mark.parametrize("data,encoding", [("not base64!", "base64"), ("zz", "hex"), ("abc", "hex")])
def test_a_payload_not_in_its_encoding_is_a_decode_error_naming_the_packet(data, encoding):
    with pytest.raises(BadPayloadEncoding, match="packet 9"):
        DevicePacket("x:9", 1, 9, data, encoding=encoding).messages()


def test_a_malformed_item_is_keyed_by_its_packet_id_or_a_digest():
    with_id = MalformedItem.of("hive", {"packetId": 5}, "no data", packet_id=5, device_id=None)
    assert with_id.key() == "hive:5"
    a = MalformedItem.of("hive", ["x"], "bad", packet_id=None, device_id=None)
    b = MalformedItem.of("hive", ["x"], "bad", packet_id=None, device_id=None)
    assert a.key() == b.key() and a.key().startswith("hive-malformed:")


def test_swarm_is_a_network_behind_the_interface():
    assert NETWORKS["swarm"] is SwarmNetwork and issubclass(SwarmNetwork, SatelliteNetwork)
    assert SwarmNetwork.packet_budget == 192 and SwarmNetwork.polled
    assert LARGEST_PACKET_BUDGET >= SwarmNetwork.packet_budget
    assert SwarmNetwork.parse_device_id(" 4242 ") == 4242
    for bad in ("", "0", "-3", "12a", "4.2"):
        with pytest.raises(ValueError, match="Swarm device id"):
            SwarmNetwork.parse_device_id(bad)


def test_a_swarm_push_reads_packets_and_keeps_the_unreadable_items():
    good = {"packetId": 1, "deviceId": 7, "data": base64.b64encode(DEVICE_BYTES).decode()}
    packets, bad = SwarmNetwork.read_push([good, {"packetId": 2, "deviceId": 7, "data": 5}])
    assert [(p.key, p.device_id) for p in packets] == [("hive:1", 7)]
    assert [(b.packet_id, b.device_id) for b in bad] == [(2, 7)]
    assert SwarmNetwork.read_push(good)[0] == packets  # one packet object, not a list


class SmallNetwork(SatelliteNetwork):
    """A second network at its boundary: a 60-byte budget, pushing device packets, recording what it was sent."""

    name = "small"
    packet_budget = 60
    polled = False

    def __init__(self):
        self.sent: list[tuple[int, bytes]] = []

    @classmethod
    def from_config(cls, config):
        return cls()

    @staticmethod
    def parse_device_id(text: str) -> int:
        return int(text)

    def send(self, device_id: int, payload: bytes) -> str:
        self.sent.append((device_id, payload))
        return f"small-{len(self.sent)}"


@pytest.mark.django_db(transaction=True)
def test_delivery_sends_through_the_network_it_is_given_fitted_to_its_budget(make_user):
    from messaging.delivery.satellite import SatelliteBase
    from messaging.runtime.config import Config
    from tests.unit.delivery.test_senders import stored
    from web.delivery.models import Message

    user = make_user()
    mid = stored(user, direction=Direction.TO_DEVICE, protocol=Protocol.EMAIL, text="word " * 30)
    network = SmallNetwork()
    sender = SatelliteBase(Config(email_domain="beaver.test"), networks={"swarm": network})
    assert sender.deliver_many([mid]) == {mid: "sent"}
    assert len(network.sent) > 1 and all(len(payload) <= 60 for _, payload in network.sent)
    assert {device for device, _ in network.sent} == {user.devices.get().device_id}
    texts = []
    for _, payload in network.sent:
        packet = pb.MessageDataPB()
        packet.ParseFromString(payload)
        texts.append(packet.message[0].text)
    assert texts[0].startswith("(1/")
    row = Message.objects.get(id=mid)
    assert row.remote_id == ",".join(f"small-{n}" for n in range(1, len(network.sent) + 1))
