"""The `hypetunnel` command: global options and the assembly of every sub-command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hypetunnel.cli import (
    alarmcmd,
    auditcmd,
    backupcmd,
    controllercmd,
    democmd,
    fabric,
    labcmd,
    mobility,
    pkicmd,
    resources,
    tokencmd,
    usagecmd,
)
from hypetunnel.cli.context import CliState

app = typer.Typer(
    name="hypetunnel",
    no_args_is_help=True,
    help="HypeTunnel: per-tenant VXLAN/GRE/Geneve overlays on Open vSwitch hypervisors.",
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            envvar="HYPETUNNEL_API",
            help="API URL (default: the running lab's, else http://127.0.0.1:8650)",
        ),
    ] = None,
    lab: Annotated[
        str | None,
        typer.Option("--lab", envvar="HYPETUNNEL_LAB", help="use the API of the lab NAME"),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", envvar="HYPETUNNEL_PROFILE",
                     help="profile of ~/.config/hypetunnel/config.yaml (API URL, token, CA)"),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", envvar="HYPETUNNEL_CA", dir_okay=False,
                     help="CA file the API's HTTPS certificate is verified against "
                          "(default: the lab's CA when the API is a lab's, else the "
                          "profile's ca_file)"),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v",
                     help="say which controller was asked and who answered (on stderr)"),
    ] = False,
) -> None:
    # ensure_object keeps a CliState passed in by the caller (tests inject a client factory).
    st = ctx.ensure_object(CliState)
    st.api = api
    st.lab = lab
    st.profile = profile
    st.ca = ca
    st.verbose = verbose
    st.forget_url()


fabric.register(app)
app.add_typer(resources.tenant_app, name="tenant")
app.add_typer(resources.network_app, name="network")
app.add_typer(resources.vm_app, name="vm")
app.add_typer(resources.hypervisor_app, name="hypervisor")
mobility.register(app)  # also adds `vm move` and `hypervisor drain|undrain`
app.add_typer(labcmd.app, name="lab")
app.add_typer(controllercmd.app, name="controller")
auditcmd.register(app)
alarmcmd.register(app)
usagecmd.register(app)
backupcmd.register(app)
app.add_typer(tokencmd.app, name="token")
app.add_typer(pkicmd.app, name="pki")

# The lead's democmd adds `demo`/`verify` through register(app) once it exists.
_register_demo = getattr(democmd, "register", None)
if callable(_register_demo):
    _register_demo(app)


if __name__ == "__main__":
    app()
