"""The one interface every satellite network implements, and the packet shapes they all hand over.

A network (Swarm's Hive today; Iridium SBD through RockBLOCK next) is a module beside this one with a class
that says, in these terms only, what the rest of the backend needs to know about it:

* ``name``: the network's name (a device belongs to one network);
* ``packet_budget``: the payload bytes one to-device packet may carry; ``fit`` cuts a text into packets
  within it (a network that is charged by size may fit more cleverly);
* ``parse_device_id``: the device id format (ValueError when a text is not one);
* ``send(device_id, payload) -> remote id``: queue one to-device packet;
* for networks polled for device packets (``polled``): ``fetch_batch(count)`` and ``ack(packet_id)``;
  networks that push them call the intake from a webhook instead (``read_push``).

Intake stores a device's packets before anything is acknowledged (messaging/intake/device_packets.py), and
delivery fits, sends and records them (messaging/delivery/satellite.py); neither knows which network it talks
to. Pure: no Django, no Ray.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from messaging.core.codec import BadPayloadEncoding, decode_from_device, fit_packets
from messaging.core.types import CombinedMessage, Protocol


@dataclass(frozen=True)
class DevicePacket:
    """One packet from a device, as any network hands it over: its idempotency key (unique per packet on its
    network, the same when the network hands it over again; each message in it adds ``:<index>``), who sent
    it, the network's id for it (what ``ack`` takes), the payload as it came on the wire (text: base64 or
    hex), and when the network received it."""

    key: str
    device_id: int
    packet_id: int
    data: str
    encoding: str = "base64"  # or "hex"
    received_at: float | None = None
    # where the network says the device was (RockBLOCK: Iridium's estimate): stored with each message in it
    latitude: float | None = None
    longitude: float | None = None
    location_cep_km: float | None = None

    def payload(self) -> bytes:
        """The payload bytes; :class:`BadPayloadEncoding` when ``data`` is not what ``encoding`` says."""
        try:
            if self.encoding == "hex":
                return bytes.fromhex(self.data)
            return base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadPayloadEncoding(
                f"{exc} ({self.encoding}, length {len(self.data)})", packet_id=self.packet_id
            ) from exc

    def messages(self) -> list[CombinedMessage]:
        """The messages in the packet (all or none: a :class:`PacketDecodeError` names what is wrong)."""
        messages = decode_from_device(
            self.payload(),
            device_id=self.device_id,
            packet_id=self.packet_id,
            key=self.key,
            received_at=self.received_at,
        )
        if self.latitude is None or self.longitude is None:
            return messages
        where = dict(latitude=self.latitude, longitude=self.longitude, location_cep_km=self.location_cep_km)
        return [dataclasses.replace(message, **where) for message in messages]


@dataclass(frozen=True)
class MalformedItem:
    """An item a network handed over that is not a packet we can read: its raw form, why, and its packet id
    when that at least is readable (then it can be acknowledged)."""

    key_prefix: str
    packet_id: int | None
    device_id: int | None
    raw: str
    reason: str
    source: str = ""  # who handed it over, in words (e.g. "Hive"); the key prefix when not given

    @classmethod
    def of(
        cls,
        key_prefix: str,
        item: Any,
        reason: str,
        *,
        packet_id: int | None,
        device_id: int | None,
        source: str = "",
    ) -> MalformedItem:
        raw = json.dumps(item, sort_keys=True, ensure_ascii=True, default=str)[:20_000]
        return cls(key_prefix, packet_id, device_id, raw, reason, source or key_prefix)

    def key(self) -> str:
        """The dead letter's idempotency key: the packet's, or a digest of the item when it has no usable id."""
        if self.packet_id is not None:
            return f"{self.key_prefix}:{self.packet_id}"
        return f"{self.key_prefix}-malformed:" + hashlib.sha256(self.raw.encode()).hexdigest()


class SatelliteNetwork(ABC):
    """A satellite network, as intake and delivery see it (see the module docstring)."""

    name: ClassVar[str]
    packet_budget: ClassVar[int]
    polled: ClassVar[bool]

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any) -> SatelliteNetwork:
        """The network with the credentials and settings of a ``Config``."""

    @classmethod
    def enabled(cls, config: Any) -> bool:
        """Whether ``config`` has what this network needs to be used (credentials); one that is not enabled is
        left out, and its devices' messages are dead letters naming why."""
        return True

    @staticmethod
    @abstractmethod
    def parse_device_id(text: str) -> int:
        """The device id a person or an operator wrote; ValueError naming the format when it is not one."""

    @abstractmethod
    def send(self, device_id: int, payload: bytes) -> str:
        """Queue one to-device packet (at most ``packet_budget`` bytes); the network's id for it. Raises
        TemporaryDeliveryError (retry later) or PermanentDeliveryError (never will work)."""

    def fetch_batch(self, count: int) -> tuple[list[DevicePacket], list[MalformedItem]]:
        """Device packets not yet acknowledged (at most ``count``), and the items that are not readable."""
        raise NotImplementedError(f"{self.name} pushes device packets; it is not polled")

    def ack(self, packet_id: int) -> None:
        """Tell the network a fetched packet is stored, so it stops handing it over."""
        raise NotImplementedError(f"{self.name} pushes device packets; it is not polled")

    def fit(self, text: str, *, to: str, protocol: Protocol, max_packets: int) -> list[bytes]:
        """The to-device packets that carry ``text`` (from ``to``), each within ``packet_budget``."""
        return fit_packets(text, to=to, protocol=protocol, max_packets=max_packets, limit=self.packet_budget)

    def close(self) -> None:  # noqa: B027 - a network without connections to release has nothing to do
        """Release connections."""
