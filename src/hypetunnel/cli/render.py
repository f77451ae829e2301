"""Rich rendering of API answers: plans as "+ ~ -" lines, status and object lists as tables.

The renderers are lenient about the exact JSON they get (a list or {"items": [...]}, a count or
a list of tunnels): the API and runtime evolve separately and a missing field shows as "-".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

PLAN_SECTIONS = (("added", "+", "green"), ("changed", "~", "yellow"), ("removed", "-", "red"))


def is_plan(data: Any) -> bool:
    return isinstance(data, dict) and any(k in data for k in ("added", "changed", "removed"))


def plan_lines(plan: dict[str, Any]) -> list[Text]:
    """One styled line per plan item, added first, then changed, then removed."""
    items = [
        (sign, style, str(item.get("kind", "")), str(item.get("key", "")),
         str(item.get("detail") or ""))
        for section, sign, style in PLAN_SECTIONS
        for item in plan.get(section) or []
        if isinstance(item, dict)
    ]
    # Align the columns so a long plan reads like a table, but without table borders to grep.
    kind_w = max((len(i[2]) for i in items), default=0)
    key_w = max((len(i[3]) for i in items), default=0)
    lines: list[Text] = []
    for sign, style, kind, key, detail in items:
        head = f"{sign} {kind:<{kind_w}}  "
        text = f"{head}{key:<{key_w}}  {detail}" if detail else f"{head}{key}"
        lines.append(Text(text.rstrip(), style=style))
    return lines


def plan_summary(plan: dict[str, Any], dry_run: bool = False) -> Text:
    counts = {s: len(plan.get(s) or []) for s, _, _ in PLAN_SECTIONS}
    revision = plan.get("revision")
    rev = f" (revision {revision})" if revision is not None else ""
    if not any(counts.values()):
        return Text(f"No changes: the fabric already matches{rev}.", style="bold")
    summary = (
        f"Plan: {counts['added']} to add, {counts['changed']} to change, "
        f"{counts['removed']} to remove."
    )
    if plan.get("applied"):
        return Text(f"{summary} Applied{rev}.", style="bold green")
    if dry_run:
        return Text(f"{summary} Dry run: nothing applied{rev}.", style="bold yellow")
    return Text(f"{summary} Not applied{rev}.", style="bold yellow")


def print_plan(console: Console, plan: dict[str, Any], dry_run: bool = False) -> None:
    for line in plan_lines(plan):
        console.print(line, soft_wrap=True)
    console.print(plan_summary(plan, dry_run), soft_wrap=True)


# --- cells --------------------------------------------------------------------------------------


def as_items(data: Any, *keys: str) -> list[dict[str, Any]]:
    """A list response, whether bare or wrapped as {"items": [...]} / {"tenants": [...]}."""
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)]
    if isinstance(data, dict):
        for key in (*keys, "items"):
            if isinstance(data.get(key), list):
                return [d for d in data[key] if isinstance(d, dict)]
    return []


def pick(item: dict[str, Any], *keys: str) -> Any:
    """The first of several spellings that is present (and not None)."""
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return None


def cell(value: Any) -> Text:
    if isinstance(value, Text):
        return value
    if value is None or value == "":
        return Text("-", style="dim")
    if isinstance(value, bool):
        return Text("yes", style="green") if value else Text("no", style="red")
    if isinstance(value, (list, tuple, set, dict)):
        return Text(str(len(value)))
    return Text(str(value))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    return t


# --- object lists -------------------------------------------------------------------------------


def tenants_table(items: list[dict[str, Any]]) -> Table:
    return table(
        "Tenants",
        ["name", "encapsulation", "networks", "vms"],
        (
            [t.get("name"), t.get("encapsulation") or "(fabric)", t.get("networks"), t.get("vms")]
            for t in items
        ),
    )


def networks_table(tenant: str, items: list[dict[str, Any]]) -> Table:
    return table(
        f"Networks of {tenant}",
        ["name", "cidr", "vni", "encapsulation", "mtu"],
        ([n.get("name"), n.get("cidr"), n.get("vni"), n.get("encapsulation"), n.get("mtu")]
         for n in items),
    )


def vms_table(tenant: str, items: list[dict[str, Any]]) -> Table:
    return table(
        f"VMs of {tenant}",
        ["name", "network", "ip", "mac", "hypervisor", "bound"],
        (
            [v.get("name"), v.get("network"), v.get("ip"), v.get("mac"), v.get("hypervisor"),
             v.get("bound")]
            for v in items
        ),
    )


def hypervisors_table(items: list[dict[str, Any]]) -> Table:
    return table(
        "Hypervisors",
        ["name", "underlay_ip", "ovsdb"],
        ([h.get("name"), h.get("underlay_ip"), h.get("ovsdb")] for h in items),
    )


# --- status -------------------------------------------------------------------------------------

STATUS_COLUMNS = ["hypervisor", "connected", "synced", "flows", "tunnels", "vms", "converged"]


def connected_cell(sw: dict[str, Any]) -> Any:
    """One "connected" verdict from the runtime's separate OVSDB and OpenFlow sessions."""
    if sw.get("connected") is not None:
        return sw["connected"]
    ovsdb, openflow = sw.get("ovsdb_connected"), sw.get("openflow_connected")
    if ovsdb is None and openflow is None:
        return None
    if ovsdb and openflow:
        return True
    if ovsdb:
        return Text("ovsdb only", style="yellow")
    if openflow:
        return Text("openflow only", style="yellow")
    return False


def switch_row(sw: dict[str, Any]) -> list[Any]:
    return [
        pick(sw, "hypervisor", "name"),
        connected_cell(sw),
        pick(sw, "synced", "in_sync"),
        pick(sw, "flows", "flow_count", "n_flows"),
        pick(sw, "tunnels", "tunnel_count", "n_tunnels"),
        pick(sw, "vms_bound", "vms"),
        pick(sw, "converged"),
    ]


def print_status(console: Console, status: dict[str, Any]) -> None:
    switches = as_items(status.get("switches"), "switches")
    if switches:
        console.print(table("Switches", STATUS_COLUMNS, (switch_row(s) for s in switches)))
    else:
        console.print(Text("no switches known to the controller", style="dim"))
    for sw in switches:
        if sw.get("last_error"):
            name = pick(sw, "hypervisor", "name")
            console.print(Text(f"{name}: last error: {sw['last_error']}", style="red"),
                          soft_wrap=True)
    vms = status.get("vms")
    if isinstance(vms, dict) and "total" in vms:
        console.print(f"VMs bound: {vms.get('bound', '-')}/{vms['total']}", soft_wrap=True)
    converged = status.get("converged")
    line = Text(f"revision {status.get('revision', '-')}: ")
    if converged is True:
        line.append("converged", style="bold green")
    elif converged is False:
        line.append("not converged", style="bold yellow")
    else:
        line.append("convergence unknown", style="dim")
    console.print(line, soft_wrap=True)


# --- overlay ------------------------------------------------------------------------------------


def overlay_table(overlay: dict[str, Any]) -> Table:
    """Per hypervisor: its tunnels and the tenant networks (VNIs) present on it."""
    t = Table(title="Overlay", title_justify="left", header_style="bold", show_lines=True)
    for c in ("hypervisor", "flows", "tunnels", "networks"):
        t.add_column(c, overflow="fold")
    for hv in as_items(overlay, "hypervisors"):
        tunnels = "\n".join(
            f"{tu.get('name')} -> {tu.get('remote')} {tu.get('remote_ip', '')} "
            f"({tu.get('encapsulation')})"
            for tu in as_items(hv.get("tunnels"))
        )
        networks = "\n".join(
            f"vni {n.get('vni')} {n.get('tenant')}/{n.get('network')}: "
            f"{', '.join(n.get('local_vms') or []) or 'no local VMs'}"
            for n in as_items(hv.get("networks"))
        )
        t.add_row(cell(hv.get("hypervisor")), cell(hv.get("flows")), cell(tunnels),
                  cell(networks))
    return t
