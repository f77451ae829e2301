"""`hypetunnel token create|list|revoke`: API tokens (an admin token is needed for all three).

Arguments are checked here first (role, tenant, name, --expires), so a bad one is reported
naming its option before anything is sent, as the API would report it.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from hypetunnel.api.auth import Role
from hypetunnel.api.tokens import check_new_token, parse_duration
from hypetunnel.cli.context import CliError, emit_json, handles_errors, out, state
from hypetunnel.cli.resources import OutputFormat, OutputOpt
from hypetunnel.errors import FieldError, IntentInvalid

app = typer.Typer(no_args_is_help=True, help="API tokens: who may do what (admin only).")

# The API's body fields, as the CLI's options are called.
_OPTION_OF = {"name": "NAME", "role": "--role", "tenant": "--tenant", "expires_in": "--expires"}


def _when(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command("create")
@handles_errors
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The token's name: [a-z][a-z0-9-]{0,30}")],
    role: Annotated[str, typer.Option(
        help=f"One of {', '.join(r.value for r in Role)}")],
    tenant: Annotated[str | None, typer.Option(
        help="The tenant of a tenant-admin or tenant-reader token")] = None,
    expires: Annotated[str | None, typer.Option(
        help="Valid for this long: 30d, 12h, 90m, 3600s (default: until revoked)")] = None,
) -> None:
    """Create a token and print it. It is shown this once: the controller keeps only a hash."""
    try:
        expires_in = parse_duration(expires, "--expires") if expires is not None else None
    except IntentInvalid as e:
        raise CliError(e.errors) from e
    errors = check_new_token(name, role, tenant, expires_in)
    if errors:
        raise CliError([FieldError(_OPTION_OF.get(e.path, e.path), e.reason) for e in errors])
    with state(ctx).client() as api:
        data = api.create_token(name, role, tenant, expires_in)
    scope = f" for tenant {tenant}" if tenant else ""
    typer.echo(f"token {name} ({role}{scope}), expires {_when(data.get('expires_at'))}; "
               "it is shown only now:", err=True)
    typer.echo(data["token"])


@app.command("list")
@handles_errors
def list_tokens(ctx: typer.Context, output: OutputOpt = OutputFormat.table) -> None:
    """Every token with its role, tenant, expiry and state (never a secret)."""
    with state(ctx).client() as api:
        items = api.list_tokens()
    if output is OutputFormat.json:
        emit_json(items)
        return
    table = Table("name", "role", "tenant", "created", "expires", "state")
    for t in items:
        table.add_row(t["name"], t["role"], t.get("tenant") or "-", _when(t.get("created_at")),
                      _when(t.get("expires_at")), t.get("state", "?"))
    out().print(table)


@app.command("revoke")
@handles_errors
def revoke(ctx: typer.Context,
           name: Annotated[str, typer.Argument(help="The token to refuse from now on")]) -> None:
    """Revoke a token: both controllers of a pair refuse it from now on."""
    with state(ctx).client() as api:
        api.revoke_token(name)
    out().print(f"token {name}: revoked")
