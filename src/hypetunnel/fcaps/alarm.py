"""The alarm model, after ITU-T X.733 and ONOS: what is wrong with which resource, how badly,
since when, and whether somebody took note."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["critical", "major", "minor", "warning", "info"]


@dataclass(frozen=True, slots=True)
class AlarmKind:
    name: str
    severity: Severity
    service_affecting: bool
    summary: str


_KINDS = (
    AlarmKind("hypervisor_lost", "critical", True,
              "neither OVSDB nor OpenFlow answers: the hypervisor is down or cut off"),
    AlarmKind("switch_disconnected", "major", False,
              "the OpenFlow channel is lost: installed flows stay, no change reaches them"),
    AlarmKind("ovsdb_unreachable", "minor", False,
              "OVSDB does not answer: tunnel ports and VM ports are not followed"),
    AlarmKind("flow_drift", "warning", False,
              "the switch's flows differed from the desired ones: repaired"),
    AlarmKind("vm_crash", "major", True,
              "the VM's port is gone from its hypervisor without a move"),
    AlarmKind("tunnel_down", "major", True,
              "BFD reports a tunnel down: the underlay path between two hypervisors is "
              "broken (a flapping tunnel's alarm stays open at least a minute)"),
    AlarmKind("hypervisor_partitioned", "major", True,
              "the controller reaches the hypervisor but its peers do not: every tunnel of "
              "it is down by BFD (its VMs reach nothing on other hypervisors)"),
    AlarmKind("underlay_mtu", "major", True,
              "the hypervisor's underlay interface has a smaller MTU than the fabric's "
              "underlay_mtu: VM packets near their MTU are dropped in the tunnel"),
    AlarmKind("etcd_member_down", "major", False,
              "an etcd member does not answer: the cluster tolerates one failure less"),
    AlarmKind("quorum_at_risk", "critical", False,
              "only a bare majority of etcd members answers (or fewer): one more loss stops "
              "every change"),
    AlarmKind("controller_failover", "warning", False,
              "another controller took over (a new election term)"),
)
KINDS: dict[str, AlarmKind] = {k.name: k for k in _KINDS}


@dataclass(frozen=True, slots=True)
class Alarm:
    id: str
    resource: str  # e.g. switch/hv1, hypervisor/hv1, tunnel/hv1-hv2, vm/acme/web1, controller/ctl1
    kind: str
    severity: Severity
    service_affecting: bool
    raised: float  # epoch seconds
    updated: float
    cleared: float | None = None
    acknowledged: bool = False
    tenant: str | None = None  # the tenant whose resource it is (None: the provider's)
    text: str = ""

    @property
    def open(self) -> bool:
        return self.cleared is None

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alarm:
        return cls(id=str(doc["id"]), resource=str(doc["resource"]), kind=str(doc["kind"]),
                   severity=doc["severity"], service_affecting=bool(doc["service_affecting"]),
                   raised=float(doc["raised"]), updated=float(doc["updated"]),
                   cleared=None if doc.get("cleared") is None else float(doc["cleared"]),
                   acknowledged=bool(doc.get("acknowledged")), tenant=doc.get("tenant"),
                   text=str(doc.get("text") or ""))
