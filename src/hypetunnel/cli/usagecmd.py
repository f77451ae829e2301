"""`hypetunnel usage [--tenant T] [--since 1h] [--by tenant|network|vm]`: per-tenant accounting."""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
from rich.text import Text

from hypetunnel.cli import render
from hypetunnel.cli.auditcmd import parse_duration
from hypetunnel.cli.context import emit_json, handles_errors, out, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt


class By(enum.StrEnum):
    tenant = "tenant"
    network = "network"
    vm = "vm"


_KEYS = {By.tenant: ["tenant"], By.network: ["tenant", "network"],
         By.vm: ["tenant", "network", "vm"]}
_COUNTS = ["packets_in", "bytes_in", "packets_out", "bytes_out"]
_DROPS = ["dropped_packets", "dropped_bytes"]


def usage_table(rows: list[dict[str, Any]], by: By, window: str | None) -> Any:
    columns = _KEYS[by] + _COUNTS + ([] if by is By.vm else _DROPS)
    title = "Usage" + (f" (last {window})" if window else " (since accounting began)")
    return render.table(title, [c.replace("_", " ") for c in columns],
                        [[r.get(c, "") for c in columns] for r in rows])


def register(app: typer.Typer) -> None:
    @app.command("usage")
    @handles_errors
    def usage(ctx: typer.Context,
              tenant: Annotated[str | None, typer.Option(help="this tenant only")] = None,
              since: Annotated[str | None, typer.Option(
                  help="only this recent: 90s, 15m, 1h, 2d, 1w")] = None,
              by: Annotated[By, typer.Option(help="one row per tenant, network or VM")
                            ] = By.tenant,
              output: OutputOpt = OutputFormat.table) -> None:
        """Bytes and packets in and out per tenant, network or VM, and what was dropped at the
        source (frames to no known address, another tenant's included)."""
        seconds = parse_duration(since) if since is not None else None
        with state(ctx).client() as api:
            rows = render.as_items(api.usage(by.value, tenant, seconds), "usage")
        if output is OutputFormat.json:
            emit_json(rows)
        elif not rows:
            out().print(Text("no usage recorded", style="dim"))
        else:
            out().print(usage_table(rows, by, since))
