"""The namespace lab: a simulated datacenter of hypervisors and VMs in network namespaces.

The lab only does what the physical world and Nova would do — cable hypervisors to an
underlay switch, run Open vSwitch on them, plug VM interfaces into br-int with an iface-id.
It never programs flows: that is the controller's job, and it must not know it drives a lab.

    lab = Lab("demo")
    lab.create_underlay()
    lab.add_hypervisor("hv1", controller_targets=["tcp:127.0.0.1:6653"])
    lab.add_vm("acme/web1", "hv1", mac="02:00:00:00:00:10", ip="10.0.0.10", prefixlen=24)
    lab.exec("acme/web1", ["ping", "-c1", "10.0.0.11"])
    ctl = lab.add_service("ctl1", "hv1")   # a namespace on the management overlay
    lab.spawn("ctl1", ["hypetunnel", "controller", "run", ...])
    Lab.load("demo").down()   # from anywhere, even after a crash
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from hypetunnel.lab import adoption, attach, barehost
from hypetunnel.lab import hypervisor as hvmod
from hypetunnel.lab import management as mgmt
from hypetunnel.lab import vm as vmmod
from hypetunnel.lab.barefile import check_bare_host_name
from hypetunnel.lab.netns import (
    UNDERLAY_BRIDGE,
    check_hypervisor_name,
    check_lab_name,
    check_vm_id,
    hypervisor_netns,
    ip,
    kill_netns_processes,
    lab_prefix,
    netns_add,
    netns_del,
    netns_exists,
    netns_list,
    service_netns,
    service_port_name,
    underlay_netns,
    uplink_port_name,
    vm_netns,
    vm_port_name,
)
from hypetunnel.lab.ovs import OvsInstance
from hypetunnel.lab.proc import LabError, pid_alive, run
from hypetunnel.lab.state import (
    DEFAULT_MGMT_SUBNET,
    DEFAULT_ROOT,
    STATE_FILE,
    LabBareHost,
    LabHypervisor,
    LabService,
    LabState,
    LabVM,
)

UNDERLAY_ALIASES = ("ul", "underlay")
OPERATOR_ALIASES = ("op", "operator")


class Lab:
    def __init__(self, name: str, state_dir: Path | str | None = None,
                 underlay_subnet: str = "172.31.0.0/24", underlay_mtu: int = 1500,
                 management: bool = True, mgmt_subnet: str = DEFAULT_MGMT_SUBNET) -> None:
        """A new, empty lab; its state file is written at once. Use Lab.load for an existing
        one. With management (the default) every hypervisor joins the management overlay
        (br-mgmt, an address in mgmt_subnet) when it is added; the subnet only exists inside
        the lab's namespaces, so two labs may use the same one."""
        directory = Path(state_dir) if state_dir else DEFAULT_ROOT / check_lab_name(name)
        if (directory / STATE_FILE).exists():
            raise LabError(f"lab {name!r} already exists in {directory}: Lab.load() it or "
                           "down() it first")
        IPv4Network(underlay_subnet)  # validate early
        IPv4Network(mgmt_subnet)
        self._state = LabState(name=check_lab_name(name), directory=str(directory),
                               underlay_subnet=underlay_subnet, underlay_mtu=underlay_mtu,
                               management=management, mgmt_subnet=mgmt_subnet)
        self._state.save()

    @classmethod
    def load(cls, name: str, state_dir: Path | str | None = None) -> Lab:
        directory = Path(state_dir) if state_dir else DEFAULT_ROOT / check_lab_name(name)
        lab = cls.__new__(cls)
        lab._state = LabState.load(directory)
        return lab

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One VM plugger at a time across processes (the lab's compute agent, the CLI, a
        test), working on the newest saved state: two of them once carried out the same hot
        move at once, and the second deleted the interface the first had just moved to."""
        directory = Path(self._state.directory)
        with open(directory / "compute.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._state = LabState.load(directory)
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @classmethod
    def destroy(cls, name: str, state_dir: Path | str | None = None) -> None:
        """down() a lab by name even when its state file is gone or unreadable: its
        namespaces are still found by their prefix (and OVS dies with their processes)."""
        try:
            lab = cls.load(name, state_dir)
        except LabError:
            directory = Path(state_dir) if state_dir else DEFAULT_ROOT / check_lab_name(name)
            lab = cls.__new__(cls)
            lab._state = LabState(name=check_lab_name(name), directory=str(directory))
        lab.down()

    @staticmethod
    def list(state_root: Path | str | None = None) -> list[str]:
        """Names of the labs that have a state directory under state_root."""
        root = Path(state_root) if state_root else DEFAULT_ROOT
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())

    # --- read-only views ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def directory(self) -> Path:
        return Path(self._state.directory)

    @property
    def underlay_netns(self) -> str:
        return underlay_netns(self.name)

    @property
    def underlay_mtu(self) -> int:
        return self._state.underlay_mtu

    @property
    def hypervisors(self) -> dict[str, LabHypervisor]:
        return dict(self._state.hypervisors)

    @property
    def vms(self) -> dict[str, LabVM]:
        return dict(self._state.vms)

    @property
    def services(self) -> dict[str, LabService]:
        return dict(self._state.services)

    @property
    def mgmt_subnet(self) -> str:
        return self._state.mgmt_subnet

    @property
    def bare_hosts(self) -> dict[str, LabBareHost]:
        return dict(self._state.bare_hosts)

    @property
    def operator_netns(self) -> str:
        return barehost.operator_netns(self.name)

    @property
    def state(self) -> LabState:
        """The lab's state record, for the modules that build on it (bare, operator)."""
        return self._state

    def service(self, name: str) -> LabService:
        try:
            return self._state.services[name]
        except KeyError:
            raise LabError(f"lab {self.name} has no service {name!r}") from None

    def hypervisor(self, name: str) -> LabHypervisor:
        try:
            return self._state.hypervisors[name]
        except KeyError:
            raise LabError(f"lab {self.name} has no hypervisor {name!r}") from None

    def vm(self, name: str) -> LabVM:
        """A VM by id ("acme/web1") or, when unambiguous, by its short name ("web1")."""
        if name in self._state.vms:
            return self._state.vms[name]
        found = [v for v in self._state.vms.values() if v.name == name]
        if len(found) == 1:
            return found[0]
        why = "is ambiguous" if found else "does not exist"
        raise LabError(f"VM {name!r} {why} in lab {self.name}")

    def netns_of(self, name: str) -> str:
        """Namespace of the underlay ("ul"), the operator ("op", in a bare lab), a bare
        host, a hypervisor, a service or a VM (id or short name), looked up in that order."""
        if name in UNDERLAY_ALIASES:
            return self.underlay_netns
        if name in OPERATOR_ALIASES and self._state.bare_hosts:
            return self.operator_netns
        if name in self._state.bare_hosts:
            return self._state.bare_hosts[name].netns
        if name in self._state.hypervisors:
            return self._state.hypervisors[name].netns
        if name in self._state.services:
            return self._state.services[name].netns
        return self.vm(name).netns

    def exec(self, name: str, argv: Sequence[str], check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(argv, netns=self.netns_of(name), check=check, timeout=timeout)

    def spawn(self, name: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
        """A background process in the namespace (iperf3 server, tcpdump); the caller waits
        for it or kills it, and down() kills whatever is left in the lab's namespaces."""
        popen.setdefault("text", True)
        return subprocess.Popen(["ip", "netns", "exec", self.netns_of(name), *argv], **popen)

    # --- building ---------------------------------------------------------------------------

    def create_underlay(self) -> None:
        """The underlay switch: a Linux bridge in its own namespace."""
        ns = self.underlay_netns
        self._state.note_netns(ns)
        netns_add(ns)
        if ip(ns, "link", "show", "dev", UNDERLAY_BRIDGE, check=False).returncode != 0:
            ip(ns, "link", "add", UNDERLAY_BRIDGE, "type", "bridge")
        # No STP and no forward delay: ports forward at once, like a ready datacenter switch.
        ip(ns, "link", "set", UNDERLAY_BRIDGE, "type", "bridge", "stp_state", "0",
           "forward_delay", "0")
        ip(ns, "link", "set", UNDERLAY_BRIDGE, "mtu", str(self.underlay_mtu), "up")
        self._state.underlay_ready = True
        self._state.save()

    def add_hypervisor(self, name: str, underlay_ip: str | None = None,
                       controller_targets: Sequence[str] = (),
                       datapath_type: str = "netdev",
                       management: bool | None = None) -> LabHypervisor:
        """Build a hypervisor and enlist it: with management (default: the lab's setting) it
        gets br-mgmt and an address on the management overlay, meshed with every other one."""
        check_hypervisor_name(name)
        if (name in self._state.hypervisors or name in self._state.services
                or name in self._state.bare_hosts):
            raise LabError(f"lab {self.name} already has a host or service {name!r}")
        if not self._state.underlay_ready:
            self.create_underlay()
        net = IPv4Network(self._state.underlay_subnet)
        index = self._state.next_index
        with_mgmt = self._state.management if management is None else management
        mgmt_net = IPv4Network(self._state.mgmt_subnet)
        mgmt_ip = (str(mgmt.allocate_address(self._state, mgmt.HV_HOST_OFFSET + index))
                   if with_mgmt else None)
        address = IPv4Address(underlay_ip) if underlay_ip else net.network_address + 10 + index
        if address not in net:
            raise LabError(f"underlay IP {address} is outside {net}")
        if any(h.underlay_ip == str(address) for h in self._state.hypervisors.values()):
            raise LabError(f"underlay IP {address} is already taken")
        hv = LabHypervisor(
            name=name, netns=hypervisor_netns(self.name, name), index=index,
            underlay_ip=str(address), prefixlen=net.prefixlen,
            ovs_dir=str(self.directory / name / "ovs"), uplink=uplink_port_name(name),
            controller_targets=list(controller_targets), datapath_type=datapath_type,
            mgmt_ip=mgmt_ip, mgmt_prefixlen=mgmt_net.prefixlen,
            mgmt_mac=mgmt.mgmt_mac(mgmt_ip) if mgmt_ip else None)
        self._state.next_index += 1
        self._state.hypervisors[name] = hv
        self._state.save()
        hvmod.build_hypervisor(self._state, hv)
        if hv.mgmt_ip:
            mgmt.enlist(self._state, hv)
        return hv

    def add_bare_host(self, name: str, underlay_ip: str | None = None) -> LabBareHost:
        """A bare host (lab/barehost.py): cabled, addressed, running an sshd that lets the
        operator's key in, and nothing else. The operator's namespace and key must exist."""
        check_bare_host_name(name)
        if (name in self._state.hypervisors or name in self._state.services
                or name in self._state.bare_hosts):
            raise LabError(f"lab {self.name} already has a host or service {name!r}")
        if not self._state.underlay_ready:
            self.create_underlay()
        host = barehost.new_host(self._state, name, underlay_ip)
        self._state.next_index += 1
        self._state.bare_hosts[name] = host
        self._state.save()  # before anything exists: down() finds whatever gets built
        barehost.build_host(self._state, host)
        return host

    def adopt_bare(self, names: Sequence[str] | None = None) -> Sequence[LabHypervisor]:
        """Take bare hosts whose Open vSwitch the Ansible roles configured (INTERFACES.md §3)
        in as lab hypervisors: VMs can then be plugged into them and moved like onto any
        other. The lab never starts, restarts or rewires their OVS: the roles own it."""
        wanted = list(names) if names else sorted(self._state.bare_hosts,
                                                  key=lambda n: self._state.bare_hosts[n].index)
        unknown = [n for n in wanted if n not in self._state.bare_hosts]
        if unknown:
            raise LabError(f"lab {self.name} has no bare host {', '.join(map(repr, unknown))}")
        adopted = [adoption.adopt(self._state.bare_hosts[n]) for n in wanted]
        for hv in adopted:
            self._state.hypervisors[hv.name] = hv
        self._state.save()
        return adopted

    def attach_api(self, urls: Sequence[str], ca: Path, token_file: Path) -> str:
        """Use controllers the lab did not start (lab/attach.py): their API URLs, the CA
        their HTTPS certificates chain to, and the file holding their admin token."""
        return attach.attach_api(self._state, list(urls), ca, token_file)

    @property
    def api_ca(self) -> Path | None:
        """The attached controllers' CA (None: the lab's own PKI, if any)."""
        return Path(self._state.api_ca) if self._state.api_ca else None

    @property
    def api_token_file(self) -> Path | None:
        """The attached controllers' admin token file (None: the lab's bootstrap token)."""
        return Path(self._state.api_token_file) if self._state.api_token_file else None

    def _own_ovs(self, name: str) -> LabHypervisor:
        """A hypervisor whose Open vSwitch the lab built (not one adopted from the roles)."""
        hv = self.hypervisor(name)
        if hv.adopted:
            raise LabError(f"hypervisor {name}'s Open vSwitch belongs to its Ansible roles: "
                           "the lab does not restart, rewire or remove it")
        return hv

    @property
    def tls_dir(self) -> Path | None:
        """The lab's PKI directory when its control channels run TLS (None: plain)."""
        return Path(self._state.tls_dir) if self._state.tls_dir else None

    def use_tls(self, directory: Path) -> None:
        """Hypervisors added from now on get their certificate and TLS-only OVSDB."""
        self._state.tls_dir = str(directory)
        self._state.save()

    @property
    def api_url(self) -> str | None:
        """The lab controller's REST API (comma-separated for a controller pair)."""
        return self._state.api_url

    def set_api_url(self, url: str | None) -> None:
        self._state.api_url = url
        self._state.save()

    def set_controllers(self, name: str, controller_targets: Sequence[str]) -> None:
        hv = self._own_ovs(name)
        hv.controller_targets = list(controller_targets)
        self._state.save()
        hvmod.set_controllers(hv)

    def remove_hypervisor(self, name: str) -> None:
        """Take a hypervisor out of the lab; the VMs on it are removed with it."""
        hv = self._own_ovs(name)
        for vm in [v for v in self._state.vms.values() if v.hypervisor == name]:
            self.remove_vm(vm.vm_id)
        for svc in [s for s in self._state.services.values() if s.hypervisor == name]:
            self.remove_service(svc.name)
        hvmod.destroy_hypervisor(self._state, hv)
        del self._state.hypervisors[name]
        self._state.save()
        if hv.mgmt_ip:
            mgmt.program_all(self._state)  # the others drop their tunnel to it

    def kill_hypervisor(self, name: str) -> None:
        """kill -9 the hypervisor's Open vSwitch (both daemons), as a crash would."""
        self.hypervisor(name).ovs.kill()

    def restart_hypervisor(self, name: str) -> None:
        """Start the killed Open vSwitch again on its old database."""
        hv = self._own_ovs(name)
        hvmod.restart_ovs(self._state, hv)
        if hv.mgmt_ip:
            mgmt.restore(self._state, hv)

    def restart_vswitchd(self, name: str) -> None:
        """kill -9 the hypervisor's ovs-vswitchd (its ovsdb-server lives on) and start it
        again: what the daemon held at runtime (endpoint address, neighbour cache, flows) is
        restored by the lab, the tenant flows by the controller."""
        hv = self._own_ovs(name)
        hv.ovs.kill_vswitchd()
        hv.ovs.start_vswitchd()
        hv.ovs.vsctl("show")
        hvmod.configure_endpoint(self._state, hv)
        if hv.mgmt_ip:
            mgmt.restore(self._state, hv)

    # --- management overlay services -------------------------------------------------------

    def add_service(self, name: str, hypervisor: str, mgmt_ip: str | None = None) -> LabService:
        """A namespace "ht-<lab>-svc-<name>" on the management overlay, plugged into the
        hypervisor's br-mgmt (default address <mgmt subnet>.100+k). Start processes in it with
        spawn(name, argv) / exec(name, argv)."""
        hv = self._own_ovs(hypervisor)
        if name in self._state.hypervisors:
            raise LabError(f"lab {self.name} already has a hypervisor {name!r}")
        svc = mgmt.new_service(self._state, name, hv, service_netns(self.name, name),
                               service_port_name(name), mgmt_ip)
        self._state.next_service_index += 1
        self._state.services[name] = svc
        self._state.save()
        mgmt.attach_service(self._state, svc, hv)
        return svc

    def remove_service(self, name: str) -> None:
        """Kill the service's processes, unplug it and delete its namespace."""
        svc = self.service(name)
        mgmt.detach_service(self._state, svc)
        del self._state.services[name]
        self._state.save()
        mgmt.program_all(self._state)

    def cut_service(self, name: str) -> None:
        """Partition the service off the management overlay, both ways, silently (its link
        stays up, as in a real network partition): br-mgmt drops whatever it sends and never
        delivers anything to it."""
        self._set_cut(name, True)

    def heal_service(self, name: str) -> None:
        self._set_cut(name, False)

    def _set_cut(self, name: str, cut: bool) -> None:
        svc = self.service(name)
        svc.cut = cut
        self._state.save()
        mgmt.program(self._state, self.hypervisor(svc.hypervisor))

    def add_vm(self, vm_id: str, hypervisor: str, mac: str, ip: str, prefixlen: int,
               mtu: int = 1500, netns: str | None = None,
               gateway: str | None = None) -> LabVM:
        check_vm_id(vm_id)
        hv = self.hypervisor(hypervisor)
        if vm_id in self._state.vms:
            raise LabError(f"lab {self.name} already has a VM {vm_id!r}")
        ns = netns or vm_netns(self.name, vm_id)
        if any(v.netns == ns for v in self._state.vms.values()):
            raise LabError(f"namespace {ns} already holds a VM of lab {self.name}")
        vm = LabVM(vm_id=vm_id, hypervisor=hypervisor, netns=ns, mac=mac.lower(), ip=ip,
                   prefixlen=prefixlen, mtu=mtu, port=vm_port_name(vm_id),
                   owns_netns=netns is None or not netns_exists(netns), gateway=gateway)
        self._state.vms[vm_id] = vm
        self._state.save()
        vmmod.plug_vm(self._state, vm, hv)
        return vm

    def hypervisor_alive(self, name: str) -> bool:
        """Whether the hypervisor's Open vSwitch is running (False after kill_hypervisor)."""
        hv = self._state.hypervisors.get(name)
        return hv is not None and netns_exists(hv.netns) and any(
            pid_alive(p) for p in hv.ovs.pids())

    def remove_vm(self, vm_id: str) -> None:
        vm = self.vm(vm_id)
        hv = self._state.hypervisors.get(vm.hypervisor)
        # A dead hypervisor's OVSDB cannot answer: only the VM's own namespace is cleaned.
        vmmod.unplug_vm(vm, hv if hv is not None and self.hypervisor_alive(hv.name) else None)
        if vm.owns_netns:
            self._state.forget_netns(vm.netns)
        del self._state.vms[vm.vm_id]
        self._state.save()

    def crash_vm(self, vm_id: str) -> None:
        """The VM dies as a crashed guest does: its processes, its namespace and its
        interface go, and its switch port with them (libvirt deletes a dead guest's OVS port
        as it cleans up after it), while the lab, like the compute service, still lists it.
        Only a restart the controller asks for (sync_vms carries it out) starts it again."""
        vm = self.vm(vm_id)
        if not vm.owns_netns:
            raise LabError(f"VM {vm_id} lives in a namespace the lab did not make")
        vmmod.unplug_vm(vm, self.hypervisor(vm.hypervisor))

    def vm_alive(self, vm_id: str) -> bool:
        """Whether the VM's namespace is there (False after crash_vm, until restarted)."""
        return netns_exists(self.vm(vm_id).netns)

    def move_vm(self, vm_id: str, to_hypervisor: str) -> LabVM:
        """Hot-move: the VM's namespace and processes stay, its interface moves to another
        hypervisor's br-int (same iface-id, MAC and IP)."""
        vm = self.vm(vm_id)
        src, dst = self.hypervisor(vm.hypervisor), self.hypervisor(to_hypervisor)
        if src.name == dst.name:
            raise LabError(f"VM {vm.vm_id} is already on {dst.name}")
        vmmod.move_vm(self._state, vm, src, dst)
        vm.hypervisor = dst.name
        self._state.save()
        return vm

    # --- tearing down -----------------------------------------------------------------------

    def down(self) -> None:
        """Remove every namespace, process and file of the lab. Idempotent; works on a
        half-built or crashed lab, from any process (Lab.load(name).down())."""
        st = self._state
        prefix = lab_prefix(st.name)
        namespaces = list(dict.fromkeys(
            [*(v.netns for v in st.vms.values() if v.owns_netns),
             *(s.netns for s in st.services.values()),
             *(h.netns for h in st.hypervisors.values()),
             *reversed(st.namespaces),
             *(n for n in netns_list() if n.startswith(prefix))]))
        errors: list[str] = []
        for d in st.ovs_dirs:
            try:
                OvsInstance(Path(d)).stop()
            except LabError as e:
                errors.append(str(e))
        for vm in st.vms.values():
            if not vm.owns_netns and netns_exists(vm.netns):
                ip(vm.netns, "link", "del", vm.ifname, check=False)
        for ns in namespaces:
            try:
                kill_netns_processes(ns)
            except LabError as e:
                errors.append(str(e))
            netns_del(ns)
        left = [n for n in namespaces if netns_exists(n)]
        if left or errors:
            raise LabError(f"lab {st.name} not fully removed: namespaces {left}, {errors}")
        shutil.rmtree(self.directory, ignore_errors=True)
        st.namespaces.clear()
        st.ovs_dirs.clear()
        st.hypervisors.clear()
        st.vms.clear()
        st.services.clear()
        st.bare_hosts.clear()
        st.api_forwarders.clear()
        st.underlay_ready = False
