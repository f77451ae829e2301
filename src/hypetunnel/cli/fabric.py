"""Whole-fabric commands: `apply FILE`, `status`, `overlay`, `intent`.

`apply` validates the file locally before any request, so a typo is reported with the file
name, field path and line even when no controller is running, and nothing is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypetunnel.cli import render
from hypetunnel.cli.context import emit_json, handles_errors, out, reporting, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt
from hypetunnel.client import ApiError
from hypetunnel.errors import FieldError
from hypetunnel.model.intent import Intent


def load_intent(path: Path) -> Intent:
    """Indirection so tests can stand in for the loader; imported late to keep --help fast."""
    from hypetunnel.model.loader import load_intent_file

    return load_intent_file(path)


def _relative_to_intent(e: ApiError) -> None:
    # The API validated {"intent": ...}; strip that wrapper so paths match the user's file.
    e.errors = [
        FieldError(f.path.removeprefix("intent.").removeprefix("intent"), f.reason)
        if f.path == "intent" or f.path.startswith("intent.") or f.path.startswith("intent[")
        else f
        for f in e.errors
    ]


def apply(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="intent YAML file"),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show the plan without changing anything")
    ] = False,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """Make the fabric match FILE (declarative: objects not in it are removed)."""
    source = str(file)
    with reporting(source):
        document = load_intent(file).model_dump(mode="json", exclude_none=True)
    # Only the server's verdict on the document names the file; "cannot reach" must not.
    with reporting(), state(ctx).client() as api:
        try:
            plan = api.apply(document, dry_run=dry_run)
        except ApiError as e:
            if e.status == 422:
                e.source = source
                _relative_to_intent(e)
            raise
    if output is OutputFormat.json:
        emit_json(plan)
    else:
        render.print_plan(out(), plan, dry_run=dry_run)


@handles_errors
def status(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Show the controller's view of each switch and whether the fabric has converged."""
    with state(ctx).client() as api:
        data = api.status()
    if output is OutputFormat.json:
        emit_json(data)
    else:
        render.print_status(out(), data)


@handles_errors
def overlay(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Show per hypervisor the tunnels and tenant networks the controller programs."""
    with state(ctx).client() as api:
        data = api.overlay()
    if output is OutputFormat.json:
        emit_json(data)
    else:
        out().print(render.overlay_table(data))


@handles_errors
def intent(ctx: typer.Context) -> None:
    """Print the stored, resolved intent (every VNI, IP, MAC and placement filled in) as JSON."""
    with state(ctx).client() as api:
        emit_json(api.get_intent())


@handles_errors
def trace(ctx: typer.Context,
          src: Annotated[str, typer.Argument(help="source VM id, e.g. acme/web1")],
          dst: Annotated[str, typer.Argument(help="destination VM id or IP address")],
          arp: Annotated[bool, typer.Option("--arp", help="trace an ARP request instead")] = False,
          output: OutputOpt = OutputFormat.table) -> None:
    """Trace a tenant frame across switches and tunnels: where it is delivered, or dropped."""
    with state(ctx).client() as api:
        data = api.trace(src, dst, "arp" if arp else "ip")
    if output is OutputFormat.json:
        emit_json(data)
        return
    console = out()
    console.print(f"{data['kind']} frame {src} -> {dst}: {data['frame']}", highlight=False)
    for t in data.get("tunnels", []):  # a tenant token's trace has no tunnels nor hypervisors
        console.print(f"  tunnel {t['from']} -> {t['to']} VNI/key {t['vni']}", highlight=False)
    for d in data["deliveries"]:
        where = (f" on {d['hypervisor']} via {' -> '.join(d.get('hops', []))}"
                 if "hypervisor" in d else "")
        console.print(f"  delivered to {d['vm']}{where}", highlight=False)
        if data["kind"] == "arp":
            console.print(f"    answer: {d['frame']}", highlight=False)
    if not data["deliveries"]:
        console.print(f"  [red]{data.get('verdict', 'dropped')}[/red]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
    app.command("apply")(apply)
    app.command("status")(status)
    app.command("overlay")(overlay)
    app.command("intent")(intent)
