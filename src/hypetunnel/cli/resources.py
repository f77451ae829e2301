"""`hypetunnel tenant|network|vm|hypervisor list|create|delete`: one object at a time.

Arguments are built into the intent models locally first, so a bad name or CIDR is reported
before any request, with the same "error: path: reason" lines the API would give.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.text import Text

from hypetunnel.cli import render
from hypetunnel.cli.context import CliError, emit_json, handles_errors, out, state
from hypetunnel.model.intent import VM, Hypervisor, Network, Tenant
from hypetunnel.model.loader import pydantic_field_errors


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class EncapChoice(StrEnum):
    vxlan = "vxlan"
    gre = "gre"
    geneve = "geneve"


OutputOpt = Annotated[
    OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts")
]

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: isolated groups of networks.")
network_app = typer.Typer(no_args_is_help=True, help="A tenant's networks (one VNI each).")
vm_app = typer.Typer(no_args_is_help=True, help="A tenant's VMs.")
hypervisor_app = typer.Typer(no_args_is_help=True, help="Hypervisors (Open vSwitch hosts).")


def build(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """Validate the fields locally and return the JSON body for the API."""
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        obj = model(**given)
    except ValidationError as e:
        raise CliError(pydantic_field_errors(e.errors(), model)) from e
    return obj.model_dump(mode="json", exclude_none=True)


def show(data: Any, what: str) -> None:
    """Print a create/delete answer: a plan when the API returns one, else a short note."""
    if render.is_plan(data):
        render.print_plan(out(), data)
    else:
        out().print(f"{what}: done")


def show_list(output: OutputFormat, items: list[dict[str, Any]], table: Any, noun: str) -> None:
    if output is OutputFormat.json:
        emit_json(items)
    elif not items:
        out().print(Text(f"no {noun}", style="dim"))
    else:
        out().print(table)


# --- tenants ------------------------------------------------------------------------------------


@tenant_app.command("list")
@handles_errors
def tenant_list(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """List tenants."""
    with state(ctx).client() as api:
        items = render.as_items(api.list_tenants(), "tenants")
    show_list(output, items, render.tenants_table(items), "tenants")


@tenant_app.command("create")
@handles_errors
def tenant_create(
    ctx: typer.Context,
    name: str,
    encapsulation: Annotated[
        EncapChoice | None, typer.Option(help="overrides the fabric default for this tenant")
    ] = None,
) -> None:
    """Create a tenant (without networks or VMs)."""
    body = build(Tenant, name=name, encapsulation=encapsulation.value if encapsulation else None)
    with state(ctx).client() as api:
        show(api.create_tenant(body), f"tenant {name} created")


@tenant_app.command("delete")
@handles_errors
def tenant_delete(ctx: typer.Context, name: str) -> None:
    """Delete a tenant with all its networks and VMs."""
    with state(ctx).client() as api:
        show(api.delete_tenant(name), f"tenant {name} deleted")


# --- networks -----------------------------------------------------------------------------------


@network_app.command("list")
@handles_errors
def network_list(ctx: typer.Context, tenant: str, output: OutputOpt = OutputFormat.table) -> None:
    """List a tenant's networks with their VNI, encapsulation and MTU."""
    with state(ctx).client() as api:
        items = render.as_items(api.list_networks(tenant), "networks")
    show_list(output, items, render.networks_table(tenant, items), f"networks in {tenant}")


@network_app.command("create")
@handles_errors
def network_create(
    ctx: typer.Context,
    tenant: str,
    name: str,
    cidr: Annotated[str, typer.Option(help="e.g. 10.1.0.0/24")],
    vni: Annotated[int | None, typer.Option(help="allocated when omitted")] = None,
) -> None:
    """Create a network in a tenant."""
    body = build(Network, name=name, cidr=cidr, vni=vni)
    with state(ctx).client() as api:
        show(api.create_network(tenant, body), f"network {tenant}/{name} created")


@network_app.command("delete")
@handles_errors
def network_delete(ctx: typer.Context, tenant: str, name: str) -> None:
    """Delete a network (it must have no VMs)."""
    with state(ctx).client() as api:
        show(api.delete_network(tenant, name), f"network {tenant}/{name} deleted")


# --- VMs ----------------------------------------------------------------------------------------


@vm_app.command("list")
@handles_errors
def vm_list(ctx: typer.Context, tenant: str, output: OutputOpt = OutputFormat.table) -> None:
    """List a tenant's VMs with their resolved address and placement."""
    with state(ctx).client() as api:
        items = render.as_items(api.list_vms(tenant), "vms")
    show_list(output, items, render.vms_table(tenant, items), f"VMs in {tenant}")


@vm_app.command("create")
@handles_errors
def vm_create(
    ctx: typer.Context,
    tenant: str,
    name: str,
    network: Annotated[str, typer.Option(help="the tenant's network to attach to")],
    hypervisor: Annotated[str | None, typer.Option(help="placed when omitted")] = None,
    ip: Annotated[str | None, typer.Option(help="allocated from the CIDR when omitted")] = None,
    mac: Annotated[str | None, typer.Option(help="derived from the VM id when omitted")] = None,
    vcpus: Annotated[int | None, typer.Option(help="virtual CPUs (default 1)")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory in MB (default 512)")] = None,
) -> None:
    """Create a VM in a tenant (placed where it fits when --hypervisor is omitted)."""
    body = build(VM, name=name, network=network, hypervisor=hypervisor, ip=ip, mac=mac,
                 vcpus=vcpus, memory_mb=memory_mb)
    with state(ctx).client() as api:
        show(api.create_vm(tenant, body), f"vm {tenant}/{name} created")


@vm_app.command("delete")
@handles_errors
def vm_delete(ctx: typer.Context, tenant: str, name: str) -> None:
    """Delete a VM."""
    with state(ctx).client() as api:
        show(api.delete_vm(tenant, name), f"vm {tenant}/{name} deleted")


# --- hypervisors --------------------------------------------------------------------------------


@hypervisor_app.command("list")
@handles_errors
def hypervisor_list(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """List hypervisors."""
    with state(ctx).client() as api:
        items = render.as_items(api.list_hypervisors(), "hypervisors")
    show_list(output, items, render.hypervisors_table(items), "hypervisors")


@hypervisor_app.command("create")
@handles_errors
def hypervisor_create(
    ctx: typer.Context,
    name: str,
    underlay_ip: Annotated[str | None, typer.Option(help="tunnel endpoint address")] = None,
    ovsdb: Annotated[
        str | None, typer.Option(help='OVSDB endpoint, e.g. "tcp:10.0.0.1:6640"')
    ] = None,
    vcpus: Annotated[
        int | None, typer.Option(help="capacity: vCPUs it can host (with --memory-mb)")
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option(help="capacity: memory in MB it can host (with --vcpus)")
    ] = None,
) -> None:
    """Add a hypervisor, or update it (PUT: the given fields replace the stored ones, omitted
    ones are kept). Without a capacity a hypervisor is unlimited."""
    capacity = None
    if vcpus is not None or memory_mb is not None:
        capacity = {k: v for k, v in (("vcpus", vcpus), ("memory_mb", memory_mb)) if v is not None}
    body = build(Hypervisor, name=name, underlay_ip=underlay_ip, ovsdb=ovsdb, capacity=capacity)
    with state(ctx).client() as api:
        show(api.put_hypervisor(name, body), f"hypervisor {name} saved")


@hypervisor_app.command("delete")
@handles_errors
def hypervisor_delete(ctx: typer.Context, name: str) -> None:
    """Delete a hypervisor (it must host no VMs)."""
    with state(ctx).client() as api:
        show(api.delete_hypervisor(name), f"hypervisor {name} deleted")
