"""The satellite sender: messages to devices, as packets over their satellite network.

``SatelliteBase`` is the logic (sync network clients, sync outbox), one of the senders of the sender actor
(``delivery/senders.py``), which also polls the networks for device packets (``intake/satellite_poll.py``).
Which network does what is behind messaging/satellite/transport.py; nothing here is specific to one.
"""

from __future__ import annotations

from messaging.core.errors import LeaseLost, PermanentDeliveryError
from messaging.core.types import Channel, Direction, Protocol
from messaging.delivery.base import SenderBase
from messaging.runtime.config import Config
from messaging.satellite.networks import connect, not_enabled_reason
from messaging.satellite.transport import SatelliteNetwork

PROTOCOLS = {p.key: p for p in (Protocol.EMAIL, Protocol.SMS)}  # stored name -> wire protocol


class SatelliteBase(SenderBase):
    channel = Channel.SATELLITE
    direction = Direction.TO_DEVICE
    protocols = (Protocol.EMAIL, Protocol.SMS)

    def __init__(self, config: Config, networks: dict[str, SatelliteNetwork] | None = None, policy=None):
        super().__init__(config, policy)
        self.networks = networks or connect(config)

    def network_of(self, device) -> SatelliteNetwork:
        """The network a device is on; a permanent error naming why when that network is not enabled here."""
        network = self.networks.get(device.network)
        if network is None:
            raise PermanentDeliveryError(not_enabled_reason(device.network))
        return network

    def packets_for(self, row, network: SatelliteNetwork) -> list[bytes]:
        """The packets that carry this message to its device, fitted by its network."""
        return network.fit(
            row.text, to=row.sender, protocol=PROTOCOLS[row.protocol], max_packets=self.config.max_packets
        )

    def send(self, row) -> str:
        """Send each packet once; progress is saved so a retry resumes after the last packet sent."""
        from messaging.outbox.store import save_progress  # Django models: loaded after ensure_django() in the worker

        if row.device is None or not row.device.is_active:
            raise PermanentDeliveryError("the user has no active device")
        if row.device.owner_id != row.user_id:  # the device changed hands (released, claimed by someone else)
            raise PermanentDeliveryError("the user has no active device (the device now belongs to someone else)")
        network = self.network_of(row.device)
        packets = self.packets_for(row, network)
        sent = [p for p in row.remote_id.split(",") if p]
        for payload in packets[len(sent) :]:
            sent.append(network.send(row.device.device_id, payload))
            if len(sent) < len(packets) and not save_progress(row.id, row.lease_token, ",".join(sent)):
                raise LeaseLost(f"message {row.id}: lease lost after packet {len(sent)} of {len(packets)}")
        return ",".join(sent)
