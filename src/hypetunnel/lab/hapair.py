"""The lab's controller pair: two controllers and a 3-member etcd cluster on the management
overlay, as a provider would run them on real hypervisors.

ctl1 and ctl2 live in their own namespaces attached to the management bridges of the first two
hypervisors; an etcd member sits beside each, and a witness member on a third hypervisor (the
first one again in a 2-hypervisor lab), so losing any one node keeps quorum.
"""

from __future__ import annotations

from collections.abc import Callable

from hypetunnel.client import ActiveCache, ApiClient, ClientPool
from hypetunnel.lab.controller import TOKEN_WAIT, LabController, lab_token
from hypetunnel.lab.etcd import EtcdCluster, EtcdMember
from hypetunnel.lab.proc import LabError, wait_until
from hypetunnel.lab.topology import Lab

NODES = ("ctl1", "ctl2")
OPENFLOW_PORT, PEER_PORT, ETCD_CLIENT, ETCD_PEER = 6653, 6654, 2379, 2380


def etcd_cluster(lab: Lab) -> EtcdCluster:
    members = []
    for name in ("etcd1", "etcd2", "etcd3"):
        svc = lab.service(name)
        members.append(EtcdMember(name, lab.directory / name, f"http://{svc.mgmt_ip}:{ETCD_CLIENT}",
                                  f"http://{svc.mgmt_ip}:{ETCD_PEER}", netns=svc.netns))
    return EtcdCluster(members, token=f"hypetunnel-{lab.name}")


def controllers(lab: Lab) -> dict[str, LabController]:
    cluster = etcd_cluster(lab)
    out = {}
    for node in NODES:
        svc = lab.service(node)
        args: list[str] = []
        for url in cluster.endpoints:
            args += ["--etcd", url]
        args += ["--node", node, "--peer", f"{svc.mgmt_ip}:{PEER_PORT}"]
        out[node] = LabController(lab.directory / node, netns=svc.netns, extra_args=tuple(args))
    return out


def switch_targets(lab: Lab) -> list[str]:
    return [f"tcp:{lab.service(n).mgmt_ip}:{OPENFLOW_PORT}" for n in NODES]


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
    progress("etcd: 3 members on the management overlay")
    etcd_cluster(lab).start()
    ctls = controllers(lab)
    urls = []
    for node, ctl in ctls.items():
        progress(f"controller {node}: starting in {ctl.netns}")
        urls.append(ctl.start(openflow=f"tcp:0.0.0.0:{OPENFLOW_PORT}"))
        if node == NODES[0]:  # the primary first, so who is active is predictable
            # The active one writes the bootstrap token; the standby finds it in the store.
            lab_token(lab.directory, wait=TOKEN_WAIT)
            wait_until(lambda u=urls[0]: role(u, lab_token(lab.directory)) == "active", 30,
                       f"{node} to become active")
    wait_until(lambda: role(urls[1], lab_token(lab.directory)) == "standby", 30,
               "ctl2 to become standby")
    return ",".join(urls)


def role(url: str, token: str | None) -> str | None:
    try:
        with ApiClient(url, timeout=1.0, token=token) as api:
            return str(api.controller().get("role"))
    except Exception:
        return None


def active_api(lab: Lab) -> ApiClient:
    urls = [u for u in (lab.api_url or "").split(",") if u]
    return ClientPool(urls, cache=ActiveCache(lab.directory / "active-controller.json"),
                      token=lab_token(lab.directory, wait=TOKEN_WAIT)).active()
