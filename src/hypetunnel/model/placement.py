"""Placement policy: which hypervisor a VM goes to. Pure functions over the intent models.

A hypervisor without `capacity` is unlimited; one with `schedulable: false` (drained) takes no
new VMs. Among the hypervisors where a VM fits, the policy ranks by the share of the scarcer
resource (vCPUs or memory) that would be in use once the VM is there, so hypervisors of
different sizes compare fairly:

- spread: the lowest share wins (the most free capacity), then the fewest VMs, then the name.
  With no capacities declared this is "fewest VMs, ties by name".
- pack: the highest share wins (the least room left that still fits: best-fit bin-packing),
  then the most VMs, then the name. Unlimited hypervisors count as share 0: they are filled
  last under pack and first under spread.

No function here ever returns a hypervisor the VM does not fit on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from hypetunnel.errors import FieldError, IntentInvalid, NotFound
from hypetunnel.model.intent import VM, Capacity, Hypervisor, Intent, PlacementPolicy, vm_id

MAX_LISTED = 8  # hypervisors named in a "no room" reason; a large fabric would drown it


@dataclass(frozen=True, slots=True)
class Usage:
    """What the VMs placed on one hypervisor use."""

    vcpus: int = 0
    memory_mb: int = 0
    vms: int = 0

    def plus(self, vm: VM) -> Usage:
        return Usage(self.vcpus + vm.vcpus, self.memory_mb + vm.memory_mb, self.vms + 1)

    def minus(self, vm: VM) -> Usage:
        return Usage(self.vcpus - vm.vcpus, self.memory_mb - vm.memory_mb, self.vms - 1)


NO_USAGE = Usage()


class VmNotFound(NotFound):
    """The VM a placement question is about does not exist (404 through the API)."""

    def __init__(self, vid: str) -> None:
        tenant, _, name = vid.partition("/")
        path = f"tenants/{tenant}/vms/{name}"
        self.errors = [FieldError(path, "not found")]
        super().__init__(f"{path}: not found")


def schedulable(hv: Hypervisor) -> bool:
    return hv.schedulable is not False


def size(vm: VM) -> str:
    return f"{vm.vcpus} vCPU{'s' if vm.vcpus != 1 else ''} / {vm.memory_mb} MB"


def over_capacity(cap: Capacity, usage: Usage) -> bool:
    return usage.vcpus > cap.vcpus or usage.memory_mb > cap.memory_mb


def fits(vm: VM, hv: Hypervisor, usage: Usage) -> bool:
    cap = hv.capacity
    return cap is None or (usage.vcpus + vm.vcpus <= cap.vcpus
                           and usage.memory_mb + vm.memory_mb <= cap.memory_mb)


def free(hv: Hypervisor, usage: Usage) -> str:
    """'vcpus/memory_mb' still free on `hv` ("unlimited" without capacity)."""
    if hv.capacity is None:
        return "unlimited"
    return f"{hv.capacity.vcpus - usage.vcpus}/{hv.capacity.memory_mb - usage.memory_mb}"


def overflow(vm: VM, hv: Hypervisor, usage: Usage) -> str:
    """Why `vm` does not fit on `hv` next to VMs using `usage` (a written or kept placement)."""
    cap = hv.capacity
    whole = f"{cap.vcpus} vCPUs / {cap.memory_mb} MB" if cap is not None else "unlimited"
    if cap is not None and (vm.vcpus > cap.vcpus or vm.memory_mb > cap.memory_mb):
        # Larger than the whole hypervisor: what the others use is beside the point.
        return f"hypervisor {hv.name} has no room for {size(vm)}: it only has {whole} in all"
    others = (f"{usage.vms} other VM{' uses' if usage.vms == 1 else 's use'} "
              f"{usage.vcpus} vCPUs / {usage.memory_mb} MB")
    return f"hypervisor {hv.name} has no room for {size(vm)}: {others} of its {whole}"


def usage_of(intent: Intent, without: str | None = None) -> dict[str, Usage]:
    """hypervisor name -> what its placed VMs use, leaving out the VM with id `without`."""
    result: dict[str, Usage] = {}
    for t in intent.tenants:
        for v in t.vms:
            if v.hypervisor is None or vm_id(t.name, v.name) == without:
                continue
            result[v.hypervisor] = result.get(v.hypervisor, NO_USAGE).plus(v)
    return result


def _share(vm: VM, hv: Hypervisor, usage: Usage) -> float:
    # Correctly rounded division: equal ratios give equal floats, so ties stay ties.
    cap = hv.capacity
    if cap is None:
        return 0.0
    return max((usage.vcpus + vm.vcpus) / cap.vcpus,
               (usage.memory_mb + vm.memory_mb) / cap.memory_mb)


def place(vm: VM, hypervisors: Iterable[Hypervisor], usage: Mapping[str, Usage],
          policy: PlacementPolicy = "spread") -> str | None:
    """The hypervisor `policy` puts `vm` on, among the schedulable ones where it fits, given
    what the VMs already placed use; None when it fits nowhere."""
    best: tuple[float, int, str] | None = None
    for hv in hypervisors:
        used = usage.get(hv.name, NO_USAGE)
        if not schedulable(hv) or not fits(vm, hv, used):
            continue
        share = _share(vm, hv, used)
        key = (share, used.vms, hv.name) if policy == "spread" else (-share, -used.vms, hv.name)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def no_room(vm: VM, hypervisors: Sequence[Hypervisor], usage: Mapping[str, Usage],
            what: str = "schedulable hypervisor") -> str:
    """Why `place` found nothing: the VM's size and what is free where (vCPUs/MB)."""
    if not hypervisors:
        return "no hypervisor to place the VM on"
    shown = [f"{h.name} {free(h, usage.get(h.name, NO_USAGE))}" if schedulable(h)
             else f"{h.name} drained" for h in hypervisors[:MAX_LISTED]]
    if len(hypervisors) > MAX_LISTED:
        shown.append(f"... {len(hypervisors) - MAX_LISTED} more")
    return f"no {what} has room for {size(vm)} (free: {', '.join(shown)})"


# -- questions about one VM of a resolved intent (moves, drain, restart after failure) ---------
def find_vm(intent: Intent, vid: str) -> tuple[str, VM]:
    """(intent path of the VM, the VM) for id "tenant/vm"; VmNotFound otherwise."""
    tenant, _, name = vid.partition("/")
    for ti, t in enumerate(intent.tenants):
        if t.name != tenant:
            continue
        for j, v in enumerate(t.vms):
            if v.name == name:
                return f"tenants[{ti}].vms[{j}]", v
    raise VmNotFound(vid)


def choose_destination(vid: str, intent: Intent, exclude: Collection[str] = frozenset()) -> str:
    """Where `intent.fabric.placement` would move VM `vid` (tenant/vm): never its current
    hypervisor nor one in `exclude`, never a drained or full one. The VM's own size counts as
    having left its current hypervisor. Raises VmNotFound, or IntentInvalid at the VM's
    `hypervisor` path when no hypervisor has room."""
    path, vm = find_vm(intent, vid)
    usage = usage_of(intent, without=vid)
    candidates = [h for h in intent.hypervisors
                  if h.name != vm.hypervisor and h.name not in exclude]
    chosen = place(vm, candidates, usage, intent.fabric.placement)
    if chosen is None:
        raise IntentInvalid([FieldError(f"{path}.hypervisor", no_room(
            vm, candidates, usage, f"other schedulable hypervisor than {vm.hypervisor}"))])
    return chosen


def check_destination(vid: str, intent: Intent, to: str) -> None:
    """Raise if VM `vid` cannot move to hypervisor `to` (explicit `vm move --to`): VmNotFound,
    or IntentInvalid at path "to" when `to` is unknown, its current one, drained or full."""
    _, vm = find_vm(intent, vid)
    hv = intent.hypervisor(to)
    why: str | None = None
    if hv is None:
        why = f"unknown hypervisor {to!r}"
    elif vm.hypervisor == to:
        why = f"VM {vid} is already on {to}"
    elif not schedulable(hv):
        why = f"hypervisor {to} is drained (schedulable: false): it takes no new VMs"
    else:
        used = usage_of(intent, without=vid).get(to, NO_USAGE)
        if not fits(vm, hv, used):
            why = f"hypervisor {to} has no room for {size(vm)} (free: {free(hv, used)})"
    if why is not None:
        raise IntentInvalid([FieldError("to", why)])


def evacuate(intent: Intent, hypervisor: str, exclude: Collection[str] = frozenset(),
             only: Collection[str] | None = None) -> dict[str, str]:
    """VM id -> destination for every VM on `hypervisor` (drain, restart after its failure),
    or for those of `only`, each choice counting the ones before it; largest VMs first so
    they still find room. Raises IntentInvalid naming every VM that fits nowhere (nothing is
    half-planned)."""
    leaving: list[tuple[str, str, VM]] = []
    for ti, t in enumerate(intent.tenants):
        for j, v in enumerate(t.vms):
            if v.hypervisor == hypervisor and (only is None or vm_id(t.name, v.name) in only):
                leaving.append((vm_id(t.name, v.name), f"tenants[{ti}].vms[{j}]", v))
    leaving.sort(key=lambda x: (-x[2].vcpus, -x[2].memory_mb, x[0]))
    usage = usage_of(intent)
    candidates = [h for h in intent.hypervisors
                  if h.name != hypervisor and h.name not in exclude]
    moves: dict[str, str] = {}
    errors: list[FieldError] = []
    for vid, path, vm in leaving:
        chosen = place(vm, candidates, usage, intent.fabric.placement)
        if chosen is None:
            errors.append(FieldError(f"{path}.hypervisor", no_room(
                vm, candidates, usage, f"other schedulable hypervisor than {hypervisor}")))
            continue
        moves[vid] = chosen
        usage[chosen] = usage.get(chosen, NO_USAGE).plus(vm)
    if errors:
        raise IntentInvalid(errors)
    return moves
