"""OpenFlow 1.3 southbound: os-ken codec, switch channel, passive server, fake switch."""

from hypetunnel.southbound.openflow.channel import ChannelState, SwitchChannel
from hypetunnel.southbound.openflow.server import OpenFlowServer

__all__ = ["ChannelState", "OpenFlowServer", "SwitchChannel"]
