"""The satellite networks this backend speaks, by name: the one place a new network is added."""

from __future__ import annotations

from messaging.runtime.config import Config
from messaging.satellite.rockblock import RockBlockNetwork
from messaging.satellite.swarm import SwarmNetwork
from messaging.satellite.transport import SatelliteNetwork

NETWORKS: dict[str, type[SatelliteNetwork]] = {SwarmNetwork.name: SwarmNetwork, RockBlockNetwork.name: RockBlockNetwork}
DEFAULT_NETWORK = SwarmNetwork.name  # the network of devices registered before devices recorded theirs
# The most a device receives per packet on any network: bounds the text worth keeping from a long mail.
LARGEST_PACKET_BUDGET = max(network.packet_budget for network in NETWORKS.values())


def connect(config: Config) -> dict[str, SatelliteNetwork]:
    """Every enabled network (see ``SatelliteNetwork.enabled``), with the credentials of ``config``, by name."""
    return {name: network.from_config(config) for name, network in NETWORKS.items() if network.enabled(config)}


def not_enabled_reason(name: str) -> str:
    """Why a device on network ``name`` gets nothing: readable for the operator who reads the dead letter."""
    if name not in NETWORKS:
        return f"the device is on an unknown satellite network {name!r}"
    return f"the device is on {name}, which is not enabled here (its credentials are not configured)"
