"""Semantic rules of an intent that pydantic cannot check one field at a time.

Every rule reports FieldError(path, reason) on the offending field; for duplicates the later
occurrence is blamed and the reason points at the first, so a newly added object (appended last)
is the one named. Each rule is a single pass with dicts (overlap: sort + neighbour check), so
validation stays linear in the size of the intent.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypetunnel.errors import FieldError
from hypetunnel.model.intent import VM, Intent, Tenant, vm_id
from hypetunnel.model.placement import NO_USAGE, Usage, fits, overflow


def reserved_reason(ip: IPv4Address, cidr: IPv4Network) -> str | None:
    """Why `ip` cannot be given to a VM in `cidr`, or None when it can."""
    if ip not in cidr:
        return f"{ip} is outside the network {cidr}"
    if ip == cidr.network_address:
        return f"{ip} is the network address of {cidr}"
    if ip == cidr.broadcast_address:
        return f"{ip} is the broadcast address of {cidr}"
    if ip == cidr.network_address + 1:
        return f"{ip} is reserved for the gateway of {cidr}"
    return None


def _unique_names(
    names: list[str], where: str, what: str, errors: list[FieldError]
) -> dict[str, int]:
    """name -> index of its first occurrence; duplicates reported at `where[i].name`."""
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            errors.append(
                FieldError(f"{where}[{i}].name",
                           f"duplicate {what} name {name!r} (also {where}[{first[name]}])")
            )
        else:
            first[name] = i
    return first


def _check_overlaps(tenant: Tenant, tp: str, errors: list[FieldError]) -> None:
    # Sorted by first address, a network can only overlap the widest one that starts before it.
    order = sorted(range(len(tenant.networks)),
                   key=lambda i: (int(tenant.networks[i].cidr.network_address), i))
    widest: int | None = None  # index of the network reaching furthest so far
    blamed_once: set[int] = set()  # a wide network overlapping many is reported once
    for i in order:
        net = tenant.networks[i]
        if widest is not None and tenant.networks[widest].cidr.overlaps(net.cidr):
            blamed, kept = (i, widest) if i > widest else (widest, i)
            if blamed not in blamed_once:
                blamed_once.add(blamed)
                errors.append(FieldError(
                    f"{tp}.networks[{blamed}].cidr",
                    f"{tenant.networks[blamed].cidr} overlaps network "
                    f"{tenant.networks[kept].name!r} ({tenant.networks[kept].cidr}) of tenant "
                    f"{tenant.name!r}",
                ))
        if widest is None or (
            int(net.cidr.broadcast_address)
            > int(tenant.networks[widest].cidr.broadcast_address)
        ):
            widest = i


def _check_vms(
    tenant: Tenant, tp: str, networks: dict[str, int], hypervisors: dict[str, int],
    errors: list[FieldError],
) -> None:
    used_ips: dict[tuple[str, IPv4Address], int] = {}
    used_macs: dict[tuple[str, str], int] = {}
    # Usable host range per network as ints: the common case is one comparison, not ipaddress math.
    # (From the prefix length: broadcast_address would build two address objects per network.)
    usable = {n.name: (int(n.cidr.network_address) + 2,
                       int(n.cidr.network_address) + (1 << (32 - n.cidr.prefixlen)) - 2)
              for n in tenant.networks}
    for j, vm in enumerate(tenant.vms):
        vp = f"{tp}.vms[{j}]"
        if vm.hypervisor is not None and vm.hypervisor not in hypervisors:
            errors.append(FieldError(f"{vp}.hypervisor", f"unknown hypervisor {vm.hypervisor!r}"))
        if vm.network not in networks:
            errors.append(FieldError(
                f"{vp}.network", f"unknown network {vm.network!r} in tenant {tenant.name!r}"
            ))
            continue
        if vm.ip is not None:
            low, high = usable[vm.network]
            why = None
            if not low <= int(vm.ip) <= high:
                why = reserved_reason(vm.ip, tenant.networks[networks[vm.network]].cidr)
            if why:
                errors.append(FieldError(f"{vp}.ip", why))
            elif (vm.network, vm.ip) in used_ips:
                other = used_ips[(vm.network, vm.ip)]
                errors.append(FieldError(
                    f"{vp}.ip", f"{vm.ip} is already used by VM {tenant.vms[other].name!r} "
                    f"in network {vm.network!r}",
                ))
            else:
                used_ips[(vm.network, vm.ip)] = j
        if vm.mac is not None:
            if (vm.network, vm.mac) in used_macs:
                other = used_macs[(vm.network, vm.mac)]
                errors.append(FieldError(
                    f"{vp}.mac", f"{vm.mac} is already used by VM {tenant.vms[other].name!r} "
                    f"in network {vm.network!r}",
                ))
            else:
                used_macs[(vm.network, vm.mac)] = j


def _check_capacity(intent: Intent, previous: Intent | None, errors: list[FieldError]) -> None:
    """Written placements must fit. VMs that stay where `previous` had them (same size) are
    counted first, then the others in list order: each VM that does not fit next to those
    before it on its hypervisor is named (and not counted, so every misfit is reported), so a
    new VM is blamed rather than one already running there. Drained hypervisors need the
    stored intent: allocate.resolve checks those."""
    by_name = {h.name: h for h in intent.hypervisors if h.capacity is not None}
    if not by_name:
        return
    before_now: dict[str, VM] = {}
    if previous is not None:
        before_now = {vm_id(t.name, v.name): v for t in previous.tenants for v in t.vms}
    staying: list[tuple[int, int]] = []
    others: list[tuple[int, int]] = []
    for ti, t in enumerate(intent.tenants):
        for j, vm in enumerate(t.vms):
            if vm.hypervisor not in by_name:
                continue
            old = before_now.get(vm_id(t.name, vm.name))
            same = old is not None and (old.hypervisor, old.vcpus, old.memory_mb) == (
                vm.hypervisor, vm.vcpus, vm.memory_mb)
            (staying if same else others).append((ti, j))
    used: dict[str, Usage] = {}
    for ti, j in staying + others:
        t = intent.tenants[ti]
        vm = t.vms[j]
        hv = by_name[str(vm.hypervisor)]
        before = used.get(hv.name, NO_USAGE)
        if fits(vm, hv, before):
            used[hv.name] = before.plus(vm)
        else:
            errors.append(FieldError(f"tenants[{ti}].vms[{j}].hypervisor",
                                     f"VM {vm_id(t.name, vm.name)}: " + overflow(vm, hv, before)))


def _check_vnis(intent: Intent, previous: Intent | None, errors: list[FieldError]) -> None:
    """A VNI is a network's identity on the wire, fabric-wide: one network per VNI. A network
    that already held its VNI in `previous` keeps it, so a newly added network is the one
    blamed and the holder is named, wherever the two are in the list."""
    holder: dict[int, str] = {}  # VNI -> tenant/network
    if previous is not None:
        held_before = {f"{t.name}/{n.name}": n.vni for t in previous.tenants for n in t.networks}
        for t in intent.tenants:
            for n in t.networks:
                key = f"{t.name}/{n.name}"
                if n.vni is not None and held_before.get(key) == n.vni:
                    holder.setdefault(n.vni, key)
    for ti, t in enumerate(intent.tenants):
        for ni, n in enumerate(t.networks):
            if n.vni is None:
                continue
            key = f"{t.name}/{n.name}"
            owner = holder.setdefault(n.vni, key)
            if owner != key:
                errors.append(FieldError(f"tenants[{ti}].networks[{ni}].vni",
                                         f"VNI {n.vni} is already used by {owner}"))


def validate_intent(intent: Intent, previous: Intent | None = None) -> list[FieldError]:
    """All rule violations of `intent` (empty list: valid). Absent optional values are fine.
    `previous` (the stored intent a change starts from) only decides who is blamed when an
    existing object and a new one collide across lists (VNIs, capacity): the new one."""
    errors: list[FieldError] = []
    hypervisors = _unique_names([h.name for h in intent.hypervisors], "hypervisors",
                                "hypervisor", errors)
    underlay: dict[IPv4Address, int] = {}
    for i, hv in enumerate(intent.hypervisors):
        if hv.underlay_ip is None:
            continue
        if hv.underlay_ip in underlay:
            errors.append(FieldError(
                f"hypervisors[{i}].underlay_ip",
                f"{hv.underlay_ip} is already the underlay IP of hypervisor "
                f"{intent.hypervisors[underlay[hv.underlay_ip]].name!r}",
            ))
        else:
            underlay[hv.underlay_ip] = i

    _unique_names([t.name for t in intent.tenants], "tenants", "tenant", errors)
    for ti, tenant in enumerate(intent.tenants):
        tp = f"tenants[{ti}]"
        networks = _unique_names([n.name for n in tenant.networks], f"{tp}.networks",
                                 "network", errors)
        _unique_names([v.name for v in tenant.vms], f"{tp}.vms", "VM", errors)
        _check_overlaps(tenant, tp, errors)
        _check_vms(tenant, tp, networks, hypervisors, errors)
    _check_vnis(intent, previous, errors)
    _check_capacity(intent, previous, errors)
    return errors
