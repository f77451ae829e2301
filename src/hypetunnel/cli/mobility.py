"""`vm move`, `hypervisor drain|undrain`, `moves`: VM mobility from the command line."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from hypetunnel.cli.context import CliError, emit_json, handles_errors, out, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt, hypervisor_app, vm_app
from hypetunnel.errors import FieldError


def _line(m: dict[str, Any]) -> str:
    took = f"{(m['end'] - m['start']):.2f}s" if m.get("end") else "running"
    gap = m.get("interruption_ms")
    return (f"{m['vm']} #{m['seq']} {m['kind']}: {m['from']} -> {m['to']}: {m['result']} "
            f"({took}; network interrupted {gap if gap is not None else '?'} ms)")


def _check_timeout(timeout: float) -> None:
    # A non-positive timeout made `vm move` start the move and return at once, as if it had
    # been interrupted; refuse it before anything is asked of the controller.
    if not timeout > 0:  # also catches nan
        raise CliError([FieldError("timeout", f"must be a positive number of seconds, "
                                              f"not {timeout:g}")])


def _wait(ctx: typer.Context, recs: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
    """Follow the move records until each has a result (the compute side moves the VMs)."""
    deadline = time.monotonic() + timeout
    keys = {(r["vm"], r["seq"]) for r in recs}
    with state(ctx).client() as api:
        while True:
            done = [m for m in api.moves() if (m["vm"], m["seq"]) in keys]
            if all(m["result"] != "running" for m in done) and len(done) == len(keys):
                return done
            if time.monotonic() > deadline:
                return done
            time.sleep(0.1)


@vm_app.command("move")
@handles_errors
def move(ctx: typer.Context,
         vm: Annotated[str, typer.Argument(help="the VM, as tenant/vm")],
         to: Annotated[str, typer.Option("--to", help="destination hypervisor")],
         cold: Annotated[bool, typer.Option("--cold", help="stop, move, start")] = False,
         wait: Annotated[bool, typer.Option(help="follow the move to its end")] = True,
         timeout: Annotated[float, typer.Option(help="seconds to follow it")] = 120.0,
         output: OutputOpt = OutputFormat.table) -> None:
    """Move a VM (hot by default: it keeps MAC, IP and running processes)."""
    _check_timeout(timeout)
    tenant, _, name = vm.partition("/")
    if not name:
        raise CliError([FieldError("vm", f"{vm!r}: give the VM as tenant/vm")])
    with state(ctx).client() as api:
        rec = api.move_vm(tenant, name, to, cold)
    recs = _wait(ctx, [rec], timeout) if wait else [rec]
    if output is OutputFormat.json:
        emit_json(recs[0])
    else:
        out().print(_line(recs[0]), highlight=False)
    if recs[0]["result"] not in ("ok", "running"):
        raise typer.Exit(1)


@hypervisor_app.command("drain")
@handles_errors
def drain(ctx: typer.Context, name: str,
          wait: Annotated[bool, typer.Option(help="follow the moves to their end")] = True,
          timeout: Annotated[float, typer.Option(help="seconds to follow them")] = 300.0) -> None:
    """Mark the hypervisor unschedulable and move every VM away (hot)."""
    _check_timeout(timeout)
    with state(ctx).client() as api:
        recs = api.drain(name)
    for m in _wait(ctx, recs, timeout) if wait and recs else recs:
        out().print(_line(m), highlight=False)
    out().print(f"{name} drained: {len(recs)} VM(s) moved; it takes no new VMs until "
                f"`hypetunnel hypervisor undrain {name}`", highlight=False)


@hypervisor_app.command("undrain")
@handles_errors
def undrain(ctx: typer.Context, name: str) -> None:
    """Make the hypervisor schedulable again."""
    with state(ctx).client() as api:
        api.undrain(name)
    out().print(f"{name} is schedulable again", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("moves")
    @handles_errors
    def moves(ctx: typer.Context, vm: Annotated[str | None, typer.Option()] = None,
              output: OutputOpt = OutputFormat.table) -> None:
        """Every move: VM, from, to, kind, duration, measured interruption, result."""
        with state(ctx).client() as api:
            data = api.moves(vm)
        if output is OutputFormat.json:
            emit_json(data)
            return
        for m in data:
            out().print(_line(m), highlight=False)
