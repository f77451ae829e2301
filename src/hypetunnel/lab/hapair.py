"""The lab's controller pair: two controllers and a 3-member etcd cluster on the management
overlay, as a provider would run them on real hypervisors.

ctl1 and ctl2 live in their own namespaces attached to the management bridges of the first two
hypervisors; an etcd member sits beside each, and a witness member on a third hypervisor (the
first one again in a 2-hypervisor lab), so losing any one node keeps quorum.

With the lab's PKI (the default; `--insecure` has none) etcd runs client and peer TLS with a
certificate per member (CN=etcd1..3, an IP SAN for its management address), and each controller
uses its own certificate (CN=ctl1/ctl2) towards etcd, on the peer channel and for its HTTPS API.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from hypetunnel.client import ActiveCache, ApiClient, ClientPool
from hypetunnel.client.config import read_token_file
from hypetunnel.lab.controller import TOKEN_WAIT, LabController, lab_token
from hypetunnel.lab.etcd import EtcdCluster, EtcdMember, member_identity
from hypetunnel.lab.pki import ensure_lab_pki
from hypetunnel.lab.proc import LabError, wait_until
from hypetunnel.lab.topology import Lab

NODES = ("ctl1", "ctl2")
OPENFLOW_PORT, PEER_PORT, ETCD_CLIENT, ETCD_PEER = 6653, 6654, 2379, 2380


def lab_ca(lab: Lab) -> Path | None:
    """The CA every lab client verifies the controllers' HTTPS API against: the attached
    controllers' (`lab attach`), else the lab's own PKI's (None: plain)."""
    if lab.api_ca is not None:
        return lab.api_ca
    return lab.tls_dir / "ca.crt" if lab.tls_dir else None


def api_token(lab: Lab, wait: float = TOKEN_WAIT) -> str | None:
    """The admin token lab clients send: the attached controllers' token file (`lab
    attach`), else the bootstrap token the lab's own controller wrote (waiting for it)."""
    path = lab.api_token_file
    if path is None:
        return lab_token(lab.directory, wait=wait)
    token = read_token_file(path)
    if token is None:
        raise LabError(f"the attached controllers' token file {path} is missing or empty")
    return token


def etcd_cluster(lab: Lab) -> EtcdCluster:
    pki = lab.tls_dir
    scheme = "https" if pki else "http"
    members = []
    for name in ("etcd1", "etcd2", "etcd3"):
        svc = lab.service(name)
        members.append(EtcdMember(
            name, lab.directory / name, f"{scheme}://{svc.mgmt_ip}:{ETCD_CLIENT}",
            f"{scheme}://{svc.mgmt_ip}:{ETCD_PEER}", netns=svc.netns,
            tls=member_identity(pki, name, svc.mgmt_ip) if pki else None))
    return EtcdCluster(members, token=f"hypetunnel-{lab.name}")


def controllers(lab: Lab) -> dict[str, LabController]:
    cluster = etcd_cluster(lab)
    out = {}
    for node in NODES:
        svc = lab.service(node)
        args: list[str] = []
        for url in cluster.endpoints:
            args += ["--etcd", url]
        args += ["--node", node, "--peer", f"{svc.mgmt_ip}:{PEER_PORT}", *tls_args(lab, node)]
        if lab.tls_dir:  # only the pair's controllers may be on the peer channel
            args += [a for n in NODES for a in ("--peer-name", n)]
        out[node] = LabController(lab.directory / node, netns=svc.netns, extra_args=tuple(args),
                                  openflow_listen=f"{_listen(lab)}:0.0.0.0:{OPENFLOW_PORT}",
                                  ca=lab_ca(lab))
    return out


def switch_targets(lab: Lab) -> list[str]:
    scheme = "ssl" if lab.tls_dir else "tcp"
    return [f"{scheme}:{lab.service(n).mgmt_ip}:{OPENFLOW_PORT}" for n in NODES]


def tls_args(lab: Lab, name: str) -> list[str]:
    """A lab controller's TLS options: its identity in the lab's PKI (none: plain)."""
    return ["--tls-dir", str(lab.tls_dir), "--tls-name", name] if lab.tls_dir else []


def _listen(lab: Lab) -> str:
    return "pssl" if lab.tls_dir else "tcp"


def place_services(lab: Lab) -> None:
    hvs = list(lab.hypervisors)
    if len(hvs) < 2:
        raise LabError("a controller pair needs at least 2 hypervisors")
    witness = hvs[2] if len(hvs) > 2 else hvs[0]
    for name, hv in (("ctl1", hvs[0]), ("ctl2", hvs[1]), ("etcd1", hvs[0]), ("etcd2", hvs[1]),
                     ("etcd3", witness)):
        lab.add_service(name, hv)


def start(lab: Lab, progress: Callable[[str], None]) -> str:
    """Start etcd and both controllers; return the comma-separated API URLs (active first)."""
    place_services(lab)
    if lab.tls_dir:  # the controllers' certificates name their management addresses
        ensure_lab_pki(lab)
    progress("etcd: 3 members on the management overlay")
    etcd_cluster(lab).start()
    ctls = controllers(lab)
    urls = []
    for node, ctl in ctls.items():
        progress(f"controller {node}: starting in {ctl.netns}")
        urls.append(ctl.start())
        if node == NODES[0]:  # the primary first, so who is active is predictable
            # The active one writes the bootstrap token; the standby finds it in the store.
            lab_token(lab.directory, wait=TOKEN_WAIT)
            wait_until(lambda u=urls[0], ca=ctl.ca: role(u, ca, lab_token(lab.directory))
                       == "active", 30, f"{node} to become active")
    wait_until(lambda: role(urls[1], ctls[NODES[1]].ca, lab_token(lab.directory)) == "standby",
               30, "ctl2 to become standby")
    return ",".join(urls)


def role(url: str, ca: Path | None, token: str | None) -> str | None:
    try:
        with ApiClient(url, timeout=1.0, ca=ca, token=token) as api:
            return str(api.controller().get("role"))
    except Exception:
        return None


def active_api(lab: Lab) -> ApiClient:
    urls = [u for u in (lab.api_url or "").split(",") if u]
    return ClientPool(urls, functools.partial(ApiClient, ca=lab_ca(lab), token=api_token(lab)),
                      cache=ActiveCache(lab.directory / "active-controller.json")).active()
