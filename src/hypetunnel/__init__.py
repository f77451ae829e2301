"""HypeTunnel: per-tenant overlay networks on Open vSwitch, driven by one controller."""

__version__ = "0.1.0"
