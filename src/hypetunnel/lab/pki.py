"""The lab's PKI: one CA under the lab's state directory, a certificate per hypervisor (CN =
the hypervisor's name) and per controller (CN = "controller", or the HA node: ctl1, ctl2).

Every TLS channel of the lab takes its identity from here: call `ensure_lab_pki(lab)` (it only
creates what is missing) and `identity(lab, NAME)`. A service of another channel (an etcd
member, ...) gets its certificate with `ensure_identity(directory, NAME, ips)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from hypetunnel.pki import Identity, init_ca, issue

if TYPE_CHECKING:
    from hypetunnel.lab.state import LabHypervisor
    from hypetunnel.lab.topology import Lab

SINGLE_CONTROLLER = "controller"  # the CN of a lab's only controller
HA_CONTROLLERS = ("ctl1", "ctl2")  # = hapair.NODES (not imported: hapair imports us)
PKI_DIR = "pki"


def lab_pki_dir(lab_directory: Path) -> Path:
    return Path(lab_directory) / PKI_DIR


def ensure_identity(directory: Path, name: str, ips: Iterable[str | None] = ()) -> Identity:
    """`name`'s certificate in `directory`, issued if it has none yet or lacks one of `ips`
    as IP SAN (a service placed after its certificate was made; the CA must exist)."""
    ident = Identity.in_directory(directory, name)
    wanted = {i for i in ips if i}
    if not (ident.cert.is_file() and ident.key.is_file()) or not wanted <= _ip_sans(ident.cert):
        issue(directory, name, ips=sorted(wanted))
    return ident


def _ip_sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def ensure_lab_pki(lab: Lab, names: Iterable[str] = ()) -> Path:
    """The lab's PKI directory with its CA, a certificate per hypervisor (with its management
    address as IP SAN), per possible controller, and per extra name; returns the directory."""
    directory = lab_pki_dir(lab.directory)
    init_ca(directory, common_name=f"HypeTunnel lab {lab.name} CA")
    for hv in lab.hypervisors.values():
        ensure_identity(directory, hv.name, [hv.mgmt_ip])
    for name in (SINGLE_CONTROLLER, *HA_CONTROLLERS, *names):
        svc = lab.services.get(name)
        ensure_identity(directory, name, [svc.mgmt_ip if svc else None])
    return directory


def rotate(directory: Path, name: str, ips: Iterable[str | None] = ()) -> Identity:
    """Issue `name` again: a new key and certificate replace the old files in place."""
    issue(directory, name, ips=[i for i in ips if i])
    return Identity.in_directory(directory, name)


def configure_ovs(hv: LabHypervisor, directory: Path) -> None:
    """The hypervisor's OVS presents its own certificate: ovs-vswitchd on its `ssl:`
    controller connections, ovsdb-server (started with db:Open_vSwitch,SSL,... references)
    on its `pssl:` remote. Both read the files again when they change."""
    ident = ensure_identity(directory, hv.name, [hv.mgmt_ip])
    hv.ovs.vsctl("set-ssl", str(ident.key), str(ident.cert), str(ident.ca))

