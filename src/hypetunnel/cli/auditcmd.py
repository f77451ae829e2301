"""`hypetunnel audit [--tenant T] [--since 1h]`: who changed what, and who was refused."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from hypetunnel.cli import render
from hypetunnel.cli.context import CliError, emit_json, handles_errors, out, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt
from hypetunnel.errors import FieldError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")


def parse_duration(text: str) -> float:
    """"90", "90s", "15m", "1h", "2d", "1w" -> seconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise CliError([FieldError("--since", f"{text!r} is not a duration like 90s, 15m, "
                                              "1h, 2d or 1w")])
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _what(e: dict[str, Any]) -> str:
    params = e.get("params") or {}
    route = str(e.get("route") or "")
    for name, value in params.items():  # the route with its parameters filled in
        route = route.replace("{" + name + "}", str(value))
    return f"{e.get('method') or ''} {route.removeprefix('/api/v1')}".strip()


def _result(e: dict[str, Any]) -> Text:
    status = e.get("status")
    if e.get("kind") == "refusal":
        why = e.get("auth_failure") or ("forbidden" if status == 403 else "refused")
        count = int(e.get("count") or 1)
        return Text(f"{status} {why}" + (f" x{count}" if count > 1 else ""), style="red")
    if status is None:
        return Text(f"committed r{e.get('revision')}", style="green")
    style = "green" if int(status) < 300 else "yellow" if int(status) < 500 else "red"
    return Text(f"{status}" + (f" r{e['revision']}" if e.get("revision") else ""), style=style)


def _detail(e: dict[str, Any]) -> str:
    plan = e.get("plan")
    if isinstance(plan, dict):
        signs = (("added", "+"), ("changed", "~"), ("removed", "-"))
        shown = [f"{sign}{item}" for key, sign in signs for item in plan.get(key) or []]
        counts = plan.get("counts") or {}
        total = sum(int(v) for v in counts.values())
        more = f" (+{total - len(shown)} more)" if total > len(shown) else ""
        return (", ".join(shown[:5]) + more) if shown else "no changes"
    if e.get("errors"):
        return "; ".join(e["errors"][:2])
    return str(e.get("answer") or e.get("error") or "")


def audit_table(entries: list[dict[str, Any]]) -> Any:
    rows = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(e.get("time", 0))))
        role = f" ({e['role']})" if e.get("role") else ""
        rows.append([when, f"{e.get('who')}{role}", e.get("tenant") or "-", _what(e),
                     _result(e), _detail(e), e.get("node") or "-"])
    return render.table("Audit trail (newest first)",
                        ["time", "who", "tenant", "what", "result", "detail", "controller"],
                        rows)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    @handles_errors
    def audit(ctx: typer.Context,
              tenant: Annotated[str | None, typer.Option(help="only this tenant's entries")]
              = None,
              since: Annotated[str | None, typer.Option(
                  help="only this recent: 90s, 15m, 1h, 2d, 1w")] = None,
              limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
              output: OutputOpt = OutputFormat.table) -> None:
        """Who changed what (token, role, route, plan, result, controller); refusals too."""
        seconds = parse_duration(since) if since is not None else None
        with state(ctx).client() as api:
            entries = render.as_items(api.audit(tenant, seconds, limit), "entries")
        if output is OutputFormat.json:
            emit_json(entries)
        elif not entries:
            out().print(Text("no audit entries", style="dim"))
        else:
            out().print(audit_table(entries))
