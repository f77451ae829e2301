"""`lab up --bare`: hosts for Ansible to configure, as a datacenter hands them over.

up = the operator's namespace and key, one bare host per name in FILE (barehost.py), then the
files Ansible runs with (operator.py). Nothing of HypeTunnel or Open vSwitch is configured:
that is the playbook's job. Once the roles have run, `lab attach` (attach.py) lets the lab's
VM plugging, sync, verify and compute agent work on the fabric Ansible built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypetunnel.lab import barehost, operator
from hypetunnel.lab.barefile import load_bare_file
from hypetunnel.lab.sshd import check_strict_modes, keygen
from hypetunnel.lab.topology import Lab

Progress = Callable[[str], None]


def up(file: Path, name: str, progress: Progress = lambda _: None,
       state_dir: Path | None = None) -> Lab:
    """Build the bare lab NAME from FILE; on any failure, remove what was built."""
    spec = load_bare_file(file)  # bad input: nothing is created
    lab = Lab(name, state_dir=state_dir, underlay_mtu=spec.underlay_mtu, management=False)
    try:
        check_strict_modes(lab.directory)
        progress("operator: namespace, out-of-band switch, ssh key")
        keygen(barehost.operator_key(lab.state), f"operator@{name}")
        barehost.build_operator(lab.state)
        lab.create_underlay()
        for h in spec.hosts:
            progress(f"host {h.name}: namespace, eth0 on the underlay, oob0, sshd")
            lab.add_bare_host(h.name, h.underlay_ip)
        operator.write_files(lab.state)
        progress(f"ansible: {operator.inventory_path(lab.state)}")
    except BaseException:
        lab.down()
        raise
    return lab


def how_to_run(lab: Lab) -> str:
    """What `lab up --bare` prints: where things are and how to run Ansible."""
    st = lab.state
    return "\n".join([
        f"inventory:   {operator.inventory_path(st)}",
        f"ansible.cfg: {operator.config_path(st)} (ssh key, known_hosts, pipelining)",
        f"run Ansible: hypetunnel lab operator --name {lab.name} -- ansible all -m ping",
        f"             hypetunnel lab operator --name {lab.name} -- ansible-playbook "
        "hypetunnel.fabric.site",
        f"ssh:         hypetunnel lab operator --name {lab.name} -- ssh -F "
        f"{operator.ssh_config_path(st)} "
        f"{next(iter(st.bare_hosts.values())).oob_ip if st.bare_hosts else 'HOST'}",
        f"afterwards:  hypetunnel lab attach --name {lab.name}   (plug VMs, sync, verify)",
    ])
