"""The satellite networks this backend speaks, by name: the one place a new network is added."""

from __future__ import annotations

from messaging.runtime.config import Config
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import SatelliteNetwork

NETWORKS: dict[str, type[SatelliteNetwork]] = {SwarmNetwork.name: SwarmNetwork}
DEFAULT_NETWORK = SwarmNetwork.name  # a device's network until devices record theirs
# The most a device receives per packet on any network: bounds the text worth keeping from a long mail.
LARGEST_PACKET_BUDGET = max(network.packet_budget for network in NETWORKS.values())


def connect(config: Config) -> dict[str, SatelliteNetwork]:
    """Every network, with the credentials of ``config``, by name."""
    return {name: network.from_config(config) for name, network in NETWORKS.items()}
