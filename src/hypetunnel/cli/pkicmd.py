"""`hypetunnel pki init|issue|list`: the CA and the certificates of hypervisors and controllers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="A small PKI: a CA, then one certificate per "
                  "hypervisor and per controller (CN = the name).")

DirOpt = Annotated[Path, typer.Option("--dir", help="The PKI directory (ca.crt, NAME.crt, "
                                      "NAME.key).")]


def _fail(message: str) -> None:
    from hypetunnel.cli.context import print_errors
    from hypetunnel.errors import FieldError

    print_errors([FieldError("", message)])
    raise typer.Exit(1)


@app.command("init")
def init(directory: DirOpt,
         days: Annotated[int, typer.Option(help="CA validity in days.")] = 3650) -> None:
    """Create the CA (kept if the directory already has one)."""
    from hypetunnel.pki import PkiError, init_ca

    try:
        existed = (directory / "ca.crt").is_file()
        crt = init_ca(directory, days=days)
    except PkiError as e:
        _fail(str(e))
    typer.echo(f"CA {'kept' if existed else 'created'}: {crt}")


@app.command("issue")
def issue(name: Annotated[str, typer.Argument(help="Hypervisor or controller name (the CN).")],
          directory: DirOpt,
          ip: Annotated[list[str] | None, typer.Option(help="IP address SAN (repeatable).")
                        ] = None,
          dns: Annotated[list[str] | None, typer.Option(help="Extra DNS SAN (repeatable).")
                         ] = None,
          days: Annotated[int, typer.Option(help="Validity in days.")] = 365) -> None:
    """Issue NAME's certificate and key; issuing again rotates them (new key, new serial)."""
    from hypetunnel.pki import PkiError
    from hypetunnel.pki import issue as issue_cert

    try:
        crt, key = issue_cert(directory, name, ips=ip or (), dns=dns or (), days=days)
    except PkiError as e:
        _fail(str(e))
    typer.echo(f"issued {name}: {crt} (key {key}, mode 0600)")


@app.command("list")
def list_(directory: DirOpt) -> None:
    """Every certificate: name, CN, serial, expiry."""
    from hypetunnel.pki import PkiError, list_certificates

    try:
        certs = list_certificates(directory)
    except PkiError as e:
        _fail(str(e))
    now = dt.datetime.now(dt.UTC)
    for c in certs:
        left = c.expires_in(now)
        state = "EXPIRED" if left.total_seconds() <= 0 else f"{left.days} days left"
        typer.echo(f"{c.name:<16} CN={c.common_name:<16} {'CA ' if c.is_ca else ''}"
                      f"serial {c.serial:x}  expires {c.not_after:%Y-%m-%d %H:%M} UTC "
                      f"({state})  {' '.join(c.sans)}".rstrip())
