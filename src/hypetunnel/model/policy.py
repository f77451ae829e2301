"""Pure: the fault policy that holds for a VM. A VM's own policy wins field by field over its
tenant's, the tenant's over the fabric's, and the built-in defaults come last: a crashed VM is
restarted after 10 s; a partitioned hypervisor is only alarmed (a drain moves VMs, so the
provider or the tenant asks for it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hypetunnel.model.intent import FaultPolicy, Intent

DEFAULT_RESTART_GRACE = 10  # seconds a vm_crash alarm stays open before the restart


@dataclass(frozen=True, slots=True)
class VmFaultPolicy:
    vm_crash: Literal["restart", "alarm"] = "restart"
    restart_grace: int = DEFAULT_RESTART_GRACE
    partition: Literal["drain", "alarm"] = "alarm"


DEFAULT = VmFaultPolicy()


def fabric_fault_policy(intent: Intent) -> VmFaultPolicy:
    """The fabric's own policy (over the defaults): what holds for the hypervisors
    themselves (a partition drain cordons the hypervisor only when the fabric says drain)."""
    return _resolve([intent.fabric.fault_policy])


def vm_fault_policy(intent: Intent, vm: str) -> VmFaultPolicy:
    """The policy of VM `vm` ("tenant/name"); the fabric's for a VM the intent lacks."""
    tenant_name, _, name = vm.partition("/")
    levels: list[FaultPolicy | None] = [intent.fabric.fault_policy]
    tenant = intent.tenant(tenant_name)
    if tenant is not None:
        levels.append(tenant.fault_policy)
        levels.append(next((v.fault_policy for v in tenant.vms if v.name == name), None))
    return _resolve(levels)


def _resolve(levels: list[FaultPolicy | None]) -> VmFaultPolicy:
    out = DEFAULT
    for level in levels:
        if level is None:
            continue
        out = VmFaultPolicy(
            vm_crash=level.vm_crash or out.vm_crash,
            restart_grace=(level.restart_grace if level.restart_grace is not None
                           else out.restart_grace),
            partition=level.partition or out.partition)
    return out
