"""`hypetunnel alarms [--all]`, `hypetunnel alarm ack ID`, `hypetunnel events [--resource R]
[--since 1h]`: the alarm book and the state log."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.text import Text

from hypetunnel.cli import render
from hypetunnel.cli.auditcmd import parse_duration
from hypetunnel.cli.context import emit_json, handles_errors, out, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt

alarm_app = typer.Typer(no_args_is_help=True, help="Act on one alarm.")
_SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow",
                   "warning": "yellow", "info": "dim"}


def _when(t: Any) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))


def alarms_table(alarms: list[dict[str, Any]]) -> Any:
    rows = []
    for a in alarms:
        sev = str(a.get("severity", ""))
        rows.append([a.get("id"), Text(sev, style=_SEVERITY_STYLE.get(sev, "")),
                     a.get("kind"), a.get("resource"), "yes" if a.get("service_affecting")
                     else "no", _when(a.get("raised")), _when(a.get("cleared")),
                     "yes" if a.get("acknowledged") else "no", a.get("text")])
    return render.table("Alarms", ["id", "severity", "kind", "resource", "service",
                                   "raised", "cleared", "ack", "text"], rows)


def events_table(events: list[dict[str, Any]]) -> Any:
    rows = [[_when(e.get("time")), e.get("resource"), e.get("state"), e.get("cause")]
            for e in events]
    return render.table("State log (oldest first)", ["time", "resource", "state", "cause"],
                        rows)


def register(app: typer.Typer) -> None:
    @app.command("alarms")
    @handles_errors
    def alarms(ctx: typer.Context,
               all: Annotated[bool, typer.Option("--all", help="cleared alarms too")] = False,
               output: OutputOpt = OutputFormat.table) -> None:
        """The open alarms (with --all the cleared ones too)."""
        with state(ctx).client() as api:
            items = render.as_items(api.alarms(all), "alarms")
        if output is OutputFormat.json:
            emit_json(items)
        elif not items:
            out().print(Text("no alarms", style="dim"))
        else:
            out().print(alarms_table(items))

    @alarm_app.command("ack")
    @handles_errors
    def ack(ctx: typer.Context, alarm_id: Annotated[str, typer.Argument(metavar="ID")],
            output: OutputOpt = OutputFormat.table) -> None:
        """Acknowledge alarm ID (it stays open until its fault is gone)."""
        with state(ctx).client() as api:
            alarm = api.ack_alarm(alarm_id)
        if output is OutputFormat.json:
            emit_json(alarm)
        else:
            out().print(alarms_table([alarm]))

    app.add_typer(alarm_app, name="alarm")

    @app.command("events")
    @handles_errors
    def events(ctx: typer.Context,
               resource: Annotated[str | None, typer.Option(
                   help="a resource (vm/acme/web1, switch/hv1) or a prefix (vm/acme)")] = None,
               since: Annotated[str | None, typer.Option(
                   help="only this recent: 90s, 15m, 1h, 2d, 1w")] = None,
               limit: Annotated[int, typer.Option(min=1, max=2000)] = 200,
               output: OutputOpt = OutputFormat.table) -> None:
        """The state log: every change of state of a resource, with its time and cause."""
        seconds = parse_duration(since) if since is not None else None
        with state(ctx).client() as api:
            items = render.as_items(api.events(resource, seconds, limit), "events")
        if output is OutputFormat.json:
            emit_json(items)
        elif not items:
            out().print(Text("no events", style="dim"))
        else:
            out().print(events_table(items))
