"""The operator's side of a bare lab: the files Ansible runs with, and its environment.

<lab dir>/ansible/ holds
- inventory.yml: the groups and host variables of INTERFACES.md §2;
- id_ed25519(.pub): the operator's key, every host's only authorized key;
- known_hosts: every host's key, written when the host was built, so the very first
  connection is already checked (StrictHostKeyChecking yes: no trust on first use);
- ssh_config: the client options (this key, this known_hosts, strict checking), for `ssh -F`;
- ansible.cfg: pipelining, ControlPersist, host key checking, that ssh_config; the
  ControlMaster sockets live here too, not in ~/.ansible/cp, because another lab may give a
  host the same out-of-band address and must never reuse this lab's connection.
`hypetunnel lab operator -- CMD` runs CMD in the operator's namespace with ANSIBLE_CONFIG
pointing at that ansible.cfg and the repository's collection on ANSIBLE_COLLECTIONS_PATH.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

import hypetunnel
from hypetunnel.lab.barehost import host_sshd, operator_key
from hypetunnel.lab.state import LabBareHost, LabState

CONTROLLERS, ETCD_MEMBERS = 2, 3
CONTROL_PERSIST = "300s"


def ansible_dir(state: LabState) -> Path:
    return Path(state.directory) / "ansible"


def inventory_path(state: LabState) -> Path:
    return ansible_dir(state) / "inventory.yml"


def config_path(state: LabState) -> Path:
    return ansible_dir(state) / "ansible.cfg"


def ssh_config_path(state: LabState) -> Path:
    return ansible_dir(state) / "ssh_config"


def known_hosts_path(state: LabState) -> Path:
    return ansible_dir(state) / "known_hosts"


def collections_root() -> Path | None:
    """The repository's ansible/ (holding ansible_collections/hypetunnel/fabric), when the
    package runs from a checkout; None for an installed package without it."""
    root = Path(hypetunnel.__file__).resolve().parents[2] / "ansible"
    return root if (root / "ansible_collections").is_dir() else None


def inventory(state: LabState) -> dict[str, Any]:
    hosts = sorted(state.bare_hosts.values(), key=lambda h: h.index)
    names = [h.name for h in hosts]
    etcd = names[:ETCD_MEMBERS] if len(names) >= ETCD_MEMBERS else names
    return {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "hypetunnel_pki_dir": str(ansible_dir(state) / "pki"),
            "underlay_mtu": state.underlay_mtu,
        },
        "children": {
            "hypervisors": {"hosts": {h.name: host_vars(h) for h in hosts}},
            "controllers": {"hosts": {n: None for n in names[:CONTROLLERS]}},
            "etcd": {"hosts": {n: None for n in etcd}},
        },
    }}


def host_vars(host: LabBareHost) -> dict[str, Any]:
    return {
        "ansible_host": host.oob_ip,
        "hypetunnel_host_root": host.root,
        "hypetunnel_service_manager": "lab",
        "ovs_datapath_type": "netdev",
        "underlay_interface": "eth0",
        "underlay_ip": host.underlay_ip,
        "underlay_prefixlen": host.prefixlen,
        "mgmt_ip": host.mgmt_ip,
        "mgmt_prefixlen": host.mgmt_prefixlen,
        # Ansible's remote temporary files stay inside the host's own root too.
        "ansible_remote_tmp": f"{host.root}/tmp/.ansible",
    }


def known_hosts(hosts: Iterable[LabBareHost]) -> str:
    return "".join(f"{h.oob_ip} {host_sshd(h).host_public_key()}\n"
                   for h in sorted(hosts, key=lambda h: h.index))


def ssh_config(state: LabState) -> str:
    return f"""\
# ssh client options for the hosts of lab {state.name} (use: ssh -F {ssh_config_path(state)} IP)
Host *
    User root
    IdentityFile {operator_key(state)}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts_path(state)}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    PasswordAuthentication no
"""


def ansible_cfg(state: LabState) -> str:
    d = ansible_dir(state)
    collections = collections_root()
    return f"""\
# Ansible for lab {state.name}: `hypetunnel lab operator --name {state.name} -- CMD` uses it.
[defaults]
inventory = {inventory_path(state)}
host_key_checking = True
remote_user = root
private_key_file = {operator_key(state)}
interpreter_python = /usr/bin/python3
local_tmp = {d}/tmp
forks = 16
{f"collections_path = {collections}" if collections else ""}

[ssh_connection]
pipelining = True
ssh_args = -F {ssh_config_path(state)} -o ControlMaster=auto -o ControlPersist={CONTROL_PERSIST}
control_path_dir = {d}/cp
"""


def write_files(state: LabState) -> None:
    """inventory.yml, known_hosts, ssh_config and ansible.cfg (rewritten as a whole)."""
    d = ansible_dir(state)
    (d / "cp").mkdir(mode=0o700, parents=True, exist_ok=True)
    (d / "tmp").mkdir(mode=0o700, parents=True, exist_ok=True)
    known_hosts_path(state).write_text(known_hosts(state.bare_hosts.values()))
    ssh_config_path(state).write_text(ssh_config(state))
    config_path(state).write_text(ansible_cfg(state))
    inventory_path(state).write_text(
        f"# Bare lab {state.name}: the hosts of `hypetunnel lab up --bare`.\n"
        + yaml.safe_dump(inventory(state), sort_keys=False))


def environment(state: LabState) -> dict[str, str]:
    """The environment of a command run in the operator's namespace."""
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(config_path(state))
    collections = collections_root()
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    # ansible, ansible-playbook and hypetunnel of this virtualenv come first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HYPETUNNEL_LAB"] = state.name
    return env
