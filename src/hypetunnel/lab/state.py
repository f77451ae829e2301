"""The lab's state file: everything a lab made, so that `down` works from another process and
after a crash.

Namespaces and OVS directories are recorded *before* they are created (write-ahead): a crash
between the two leaves at worst a record of something that does not exist, which `down`
tolerates, never something that exists unrecorded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.lab.proc import LabError

DEFAULT_ROOT = Path("/run/hypetunnel/labs")
STATE_FILE = "state.json"
DEFAULT_MGMT_SUBNET = "100.64.0.0/24"
OVSDB_TCP_PORT = 6640


@dataclass
class LabHypervisor:
    name: str
    netns: str
    index: int  # 1-based order of creation; the default underlay IP is .10+index
    underlay_ip: str
    prefixlen: int
    ovs_dir: str
    uplink: str  # the uplink veth's end in the underlay namespace
    controller_targets: list[str]
    datapath_type: str = "netdev"
    # Management overlay (None: enlisted without one, the lab's old behaviour).
    mgmt_ip: str | None = None
    mgmt_prefixlen: int = 24
    mgmt_mac: str | None = None  # br-mgmt's internal port, pinned by other_config:hwaddr
    # A bare host whose Open vSwitch the Ansible roles built (ovs_dir is their run directory):
    # the lab plugs VMs into it but never starts, restarts or rewires its OVS.
    adopted: bool = False

    @property
    def ovs(self) -> OvsInstance:
        # The lab's own hypervisors route tunnels by their underlay route only (ovs.ROUTES_NOTE);
        # an adopted host's OVS is the roles', run as they configured it.
        return OvsInstance(Path(self.ovs_dir), self.netns, system_routes=self.adopted)

    @property
    def ovsdb(self) -> str:
        """OVSDB endpoint; a unix socket file, so it works from any namespace."""
        return self.ovs.endpoint

    @property
    def ovsdb_ssl(self) -> str | None:
        """OVSDB over TLS on the management overlay ("ssl:<mgmt ip>:6640") when the lab runs
        with TLS (the plain remote is not listening then)."""
        return f"ssl:{self.mgmt_ip}:{OVSDB_TCP_PORT}" if self.mgmt_ip else None

    @property
    def ovsdb_tcp(self) -> str | None:
        """OVSDB over the management overlay ("tcp:<mgmt ip>:6640"), for a controller that
        lives in another namespace; None without a management overlay."""
        return f"tcp:{self.mgmt_ip}:{OVSDB_TCP_PORT}" if self.mgmt_ip else None


@dataclass
class LabVM:
    vm_id: str  # "tenant/vm", the iface-id on br-int
    hypervisor: str
    netns: str
    mac: str
    ip: str
    prefixlen: int
    mtu: int
    port: str  # br-int port: the hypervisor end of the VM's veth
    owns_netns: bool = True  # False when the caller supplied an existing namespace
    gateway: str | None = None
    ifname: str = "eth0"

    @property
    def name(self) -> str:
        return self.vm_id.rsplit("/", 1)[-1]


@dataclass
class LabService:
    """A namespace on the management overlay where a controller or an etcd member runs."""

    name: str
    hypervisor: str  # whose br-mgmt it is plugged into
    netns: str
    index: int  # 1-based order of creation; the default management IP is .100+index
    mgmt_ip: str
    prefixlen: int
    mac: str
    port: str  # br-mgmt port: the hypervisor end of the service's veth
    ofport: int  # pinned by ofport_request, so br-mgmt's flows follow from the state alone
    cut: bool = False  # partitioned off the management overlay (cut_service)
    ifname: str = "mgmt0"


@dataclass
class LabBareHost:
    """A host of `lab up --bare`: a namespace cabled to the underlay and to the operator's
    out-of-band network, running only an sshd; Ansible configures the rest."""

    name: str
    netns: str
    index: int  # 1-based; underlay, management and out-of-band addresses are .10+index
    underlay_ip: str  # on eth0 until the openvswitch role moves it onto br-phy
    prefixlen: int
    uplink: str  # the uplink veth's end in the underlay namespace
    oob_ip: str  # on oob0: where its sshd listens
    oob_prefixlen: int
    oob_port: str  # the out-of-band veth's end in the operator namespace
    root: str  # <lab dir>/hosts/<name>: the host's own "/" for every path a role writes
    mgmt_ip: str  # what the roles give br-mgmt (the lab does not build it)
    mgmt_prefixlen: int


@dataclass
class LabState:
    name: str
    directory: str
    underlay_subnet: str = "172.31.0.0/24"
    underlay_mtu: int = 1500
    underlay_ready: bool = False
    namespaces: list[str] = field(default_factory=list)
    ovs_dirs: list[str] = field(default_factory=list)
    next_index: int = 1
    hypervisors: dict[str, LabHypervisor] = field(default_factory=dict)
    vms: dict[str, LabVM] = field(default_factory=dict)
    api_url: str | None = None  # REST API of the lab's controller (read by the CLI)
    management: bool = True  # new hypervisors join the management overlay by default
    mgmt_subnet: str = DEFAULT_MGMT_SUBNET
    next_service_index: int = 1
    services: dict[str, LabService] = field(default_factory=dict)
    # The lab's PKI (lab/pki.py) when its control channels use TLS; None: all plain.
    tls_dir: str | None = None
    # A bare lab (lab/bare.py): its hosts and the operator's out-of-band network.
    bare_hosts: dict[str, LabBareHost] = field(default_factory=dict)
    oob_subnet: str = "198.18.0.0/24"
    # An attached API (lab/attach.py): controllers the lab did not start, reached through
    # forwarders; their CA and admin token file override the lab's own PKI and token.
    api_ca: str | None = None
    api_token_file: str | None = None
    api_targets: list[str] = field(default_factory=list)  # the controllers' real URLs
    api_forwarders: dict[str, int] = field(default_factory=dict)  # unix socket -> pid

    @property
    def path(self) -> Path:
        return Path(self.directory) / STATE_FILE

    def save(self) -> None:
        d = Path(self.directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        os.replace(tmp, self.path)  # atomic: a reader never sees half a file

    def note_netns(self, name: str) -> None:
        if name not in self.namespaces:
            self.namespaces.append(name)
            self.save()

    def forget_netns(self, name: str) -> None:
        if name in self.namespaces:
            self.namespaces.remove(name)
            self.save()

    @classmethod
    def load(cls, directory: Path) -> LabState:
        path = directory / STATE_FILE
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read lab state {path}: {e}") from e
        raw["hypervisors"] = {k: LabHypervisor(**v) for k, v in raw.get("hypervisors", {}).items()}
        raw["vms"] = {k: LabVM(**v) for k, v in raw.get("vms", {}).items()}
        raw["services"] = {k: LabService(**v) for k, v in raw.get("services", {}).items()}
        raw["bare_hosts"] = {k: LabBareHost(**v) for k, v in raw.get("bare_hosts", {}).items()}
        return cls(**raw)
