"""The intent: what the provider and tenants asked for, as strict pydantic models.

Optional fields (VNI, VM IP/MAC/hypervisor) may be absent in what the user writes; the
allocator fills them in before anything is stored, so the stored intent is always complete.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from hypetunnel.model.fields import Address, Cidr, OvsdbEndpoint

Encapsulation = Literal["vxlan", "gre", "geneve"]
DatapathType = Literal["system", "netdev"]
# How the controller picks a hypervisor for a VM written without one (see model/placement.py):
# "spread" evens the load out, "pack" fills the fullest hypervisor that still fits (bin-packing).
PlacementPolicy = Literal["spread", "pack"]

# Names become parts of port names, namespace names and URLs: keep them DNS-label-like.
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Encapsulation overhead on the underlay, inner Ethernet header included (as Neutron counts it).
ENCAP_OVERHEAD: dict[str, int] = {"vxlan": 50, "gre": 42, "geneve": 50}
MAX_VNI = (1 << 24) - 1  # VXLAN/Geneve VNIs are 24 bits; GRE keys are 32, we keep one space
MANAGEMENT_VNI = MAX_VNI  # reserved for the management overlay
# Reserved for the tunnel latency probes (fcaps/latency.py): a frame with this key in br-int
# came through one of the fabric's tunnels, from a switch, never from a VM.
PROBE_VNI = MAX_VNI - 1


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class FaultPolicy(StrictModel):
    """What the controller does about a fault, beyond raising its alarm. Set on the fabric, a
    tenant or a VM; a field left out (None) is as the level above says (policy.py resolves
    it, with the built-in defaults last)."""

    # A VM whose port is gone from its hypervisor without a move (the vm_crash alarm):
    # "restart" asks the compute side to start it again (cold, on the same hypervisor) once
    # the alarm has been open `restart_grace` seconds; "alarm" only raises the alarm.
    vm_crash: Literal["restart", "alarm"] | None = None
    restart_grace: StrictInt | None = Field(default=None, ge=0, le=3600)
    # A hypervisor the controller reaches but its peers do not (every tunnel down by BFD):
    # "drain" moves the VMs away (hot) to hypervisors their peers still reach.
    partition: Literal["drain", "alarm"] | None = None


class Fabric(StrictModel):
    encapsulation: Encapsulation = "vxlan"
    underlay_mtu: StrictInt = Field(default=1500, ge=576, le=9216)
    placement: PlacementPolicy = "spread"
    fault_policy: FaultPolicy | None = None


class Capacity(StrictModel):
    """What a hypervisor can host; the VMs placed on it never add up to more."""

    vcpus: StrictInt = Field(ge=1)
    memory_mb: StrictInt = Field(ge=1)


class Hypervisor(StrictModel):
    name: Name
    underlay_ip: Address | None = None
    # OVSDB endpoint of the hypervisor's Open vSwitch ("tcp:10.0.0.1:6640", "ssl:host:6640",
    # "unix:/run/db.sock"). Filled in at enlistment; a hypervisor without one is known but not
    # driven.
    ovsdb: OvsdbEndpoint | None = None
    # Open vSwitch datapath of this hypervisor: production uses the kernel ("system"); the
    # namespace lab enlists its hypervisors with "netdev" (userspace). Kept from enlistment.
    datapath_type: DatapathType | None = None
    # None: unlimited (intent files from before capacities keep working). Kept when omitted.
    capacity: Capacity | None = None
    # None means True. False: drained for maintenance, no new VMs are placed on it (the ones
    # already there may stay). Kept when omitted, so re-applying a file does not undrain.
    schedulable: StrictBool | None = None



class Network(StrictModel):
    name: Name
    cidr: Cidr
    vni: StrictInt | None = Field(default=None, ge=1, le=PROBE_VNI - 1)

    @field_validator("cidr")
    @classmethod
    def _room_for_hosts(cls, v: IPv4Network) -> IPv4Network:
        if v.prefixlen > 29:
            raise ValueError("prefix must be /29 or shorter to leave room for a gateway and VMs")
        return v


class VM(StrictModel):
    name: Name
    network: Name
    hypervisor: Name | None = None
    ip: Address | None = None
    mac: str | None = None
    vcpus: StrictInt = Field(default=1, ge=1)
    memory_mb: StrictInt = Field(default=512, ge=1)
    fault_policy: FaultPolicy | None = None

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, v: object) -> object:
        if v is None:
            return v
        if not isinstance(v, str):
            # YAML reads some unquoted MACs (10:00:00:00:00:10) as sexagesimal integers.
            raise ValueError(f"must be a MAC address written as text (quote it), not {v!r}")
        s = v.strip().lower()
        if not MAC_RE.match(s):
            raise ValueError("must be a MAC address like 02:00:00:00:00:10")
        if int(s[:2], 16) & 1:
            raise ValueError("must be a unicast MAC (least significant bit of the first octet 0; "
                             "broadcast and multicast addresses cannot be a VM's)")
        if s == "00:00:00:00:00:00":
            raise ValueError("00:00:00:00:00:00 is not a usable MAC address")
        return s


class Tenant(StrictModel):
    name: Name
    encapsulation: Encapsulation | None = None
    networks: list[Network] = Field(default_factory=list)
    vms: list[VM] = Field(default_factory=list)
    fault_policy: FaultPolicy | None = None


class Intent(StrictModel):
    fabric: Fabric = Field(default_factory=Fabric)
    hypervisors: list[Hypervisor] = Field(default_factory=list)
    tenants: list[Tenant] = Field(default_factory=list)

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def hypervisor(self, name: str) -> Hypervisor | None:
        return next((h for h in self.hypervisors if h.name == name), None)


def vm_id(tenant: str, vm: str) -> str:
    """The VM's identity on the wire: the value of external_ids:iface-id on its switch port."""
    return f"{tenant}/{vm}"


def network_encapsulation(fabric: Fabric, tenant: Tenant) -> Encapsulation:
    return tenant.encapsulation or fabric.encapsulation


def network_mtu(fabric: Fabric, encapsulation: str) -> int:
    return fabric.underlay_mtu - ENCAP_OVERHEAD[encapsulation]
