"""`hypetunnel controller ...`: run the controller daemon, see and change who is active."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from hypetunnel.daemon_config import DEFAULTS

app = typer.Typer(no_args_is_help=True, help="Run and inspect the SDN controller (pair).")


D = DEFAULTS  # the defaults are the config model's: one place


@app.command("run")
def run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        help="YAML file of settings: one key per flag (the flag without --, - as _); flags "
             "given here win over it.", dir_okay=False)] = None,
    state_dir: Annotated[Path, typer.Option(
        help="Directory of the embedded SQLite store and the bootstrap admin token.")
    ] = D.state_dir,
    api: Annotated[str, typer.Option(
        help="REST API listen address HOST:PORT, or unix:/path.")] = D.api,
    openflow: Annotated[list[str], typer.Option(
        help="OpenFlow listen target(s): tcp:HOST:PORT or unix:PATH (with --tls-dir: "
             "ssl:/pssl:HOST:PORT, TLS only).")] = D.openflow,
    switch_target: Annotated[list[str] | None, typer.Option(
        help="Controller target(s) switches are told to connect to (default: leave the "
             "targets enlistment set).")] = None,
    etcd: Annotated[list[str] | None, typer.Option(
        help="etcd client URL(s): shared store and election for a primary/secondary pair.")
    ] = None,
    node: Annotated[str | None, typer.Option(help="HA: this controller's name.")] = None,
    peer: Annotated[str | None, typer.Option(
        help="HA: HOST:PORT where the active controller serves heartbeats.")] = None,
    api_rate: Annotated[float, typer.Option(
        help="API requests per second per caller (token, else address); 0: unlimited.",
        min=0)] = D.api_rate,
    api_burst: Annotated[float, typer.Option(help="API burst per caller.", min=1)
                         ] = D.api_burst,
    tls_dir: Annotated[Path | None, typer.Option(
        help="PKI directory (`hypetunnel pki`): TLS with mutual authentication on every "
             "control channel. Without it every channel is plain.")] = None,
    tls_name: Annotated[str | None, typer.Option(
        help="Our certificate's name in --tls-dir (default: --node, else 'controller').")
    ] = None,
    peer_name: Annotated[list[str] | None, typer.Option(
        help="HA with --tls-dir: a controller of the pair (its certificate's CN), the only "
             "peers the peer channel accepts; repeat for each.")] = None,
    log_level: Annotated[str, typer.Option(
        help="debug, info or warning.")] = D.log_level,
    log_format: Annotated[str, typer.Option(
        help="json: one JSON object per line on stdout (ts, level, logger, msg, extra "
             "fields); text: lines for people, on stderr.")] = D.log_format,
    webhook: Annotated[list[str] | None, typer.Option(
        help="URL every alarm change is POSTed to (JSON), retried until it answers 2xx; "
             "repeat for more targets.")] = None,
    flow_audit_interval: Annotated[float, typer.Option(
        help="Seconds between reads of every switch's flow table: a difference from the "
             "desired flows is repaired and alarmed (flow_drift).", min=0.1)
    ] = D.flow_audit_interval,
    usage_interval: Annotated[float, typer.Option(
        help="Seconds between reads of every switch's flow counters, for per-tenant usage "
             "(hypetunnel usage).", min=0.1)
    ] = D.usage_interval,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="--log-level debug.")
                       ] = False,
) -> None:
    """Run the controller in the foreground until SIGTERM/SIGINT."""
    from hypetunnel.cli.context import print_errors
    from hypetunnel.daemon_config import ConfigInvalid, load
    from hypetunnel.errors import FieldError, HypeTunnelError
    from hypetunnel.logs import configure

    given = explicit_options(ctx, exclude={"config", "verbose"})
    if verbose and "log_level" not in given:
        given["log_level"] = "debug"
    try:  # checked before anything starts: a bad value names its key and exits 2
        settings = load(config, given)
    except ConfigInvalid as e:
        print_errors(e.errors)
        raise typer.Exit(2) from e
    configure(settings.log_level, settings.log_format)
    from hypetunnel.daemon import serve  # after configure: its imports' warnings are logged
    try:
        asyncio.run(serve(settings.to_daemon()))
    except HypeTunnelError as e:  # e.g. the port is taken: one line, not a traceback
        print_errors([FieldError("", str(e))])
        raise typer.Exit(1) from e


def explicit_options(ctx: typer.Context, exclude: set[str]) -> dict[str, Any]:
    """The options given on the command line (not defaulted), by config key."""
    given: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name in exclude:
            continue
        # By name: typer vendors its own click, whose ParameterSource is not click's.
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            given[name] = list(value) if isinstance(value, tuple | list) else value
    return given


@app.command("unit")
def unit(
    venv: Annotated[Path, typer.Option(help="The virtualenv HypeTunnel is installed in.")
                    ] = Path("/opt/hypetunnel/venv"),
    config: Annotated[Path, typer.Option(help="The controller's config file (--config).")
                      ] = Path("/etc/hypetunnel/controller.yaml"),
    state_dir: Annotated[Path, typer.Option(
        help="The config's state_dir: the one directory the service may write.")
    ] = Path("/var/lib/hypetunnel"),
    user: Annotated[str, typer.Option(help="The user (and group) the service runs as.")
                    ] = "hypetunnel",
) -> None:
    """Print the systemd unit hypetunnel-controller.service for these paths."""
    from hypetunnel.cli.context import print_errors
    from hypetunnel.errors import FieldError
    from hypetunnel.service_unit import UnitPaths, render

    try:
        text = render(UnitPaths(venv=venv, config=config, state_dir=state_dir, user=user))
    except ValueError as e:
        key, _, reason = str(e).partition(": ")
        print_errors([FieldError("--" + key.replace("_", "-"), reason)])
        raise typer.Exit(2) from e
    typer.echo(text, nl=False)


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Role, term, leader, and which switches each controller holds."""
    from hypetunnel.cli.context import handles_errors, out, state

    @handles_errors
    def show(ctx: typer.Context) -> None:
        console = out()
        for url, data in state(ctx).client_pool().status_all():
            c = data.get("controller", {})
            held = [s["hypervisor"] for s in data.get("switches", []) if s.get("role") == "MASTER"
                    or (c.get("role") == "active" and s.get("openflow_connected"))]
            console.print(f"{c.get('node', 'controller')} ({url}): role {c.get('role')}, "
                          f"term {c.get('term')}, leader {(c.get('leader') or {}).get('node')}, "
                          f"standbys connected {c.get('standbys_connected', 0)}, "
                          f"holds {', '.join(held) or 'no switch'}", highlight=False)

    show(ctx)


@app.command("failover")
def failover(ctx: typer.Context) -> None:
    """Graceful hand-over: the active controller steps down and the standby takes over."""
    from hypetunnel.cli.context import handles_errors, out, state

    @handles_errors
    def go(ctx: typer.Context) -> None:
        data = state(ctx).client_pool().active().failover()
        out().print(f"{data.get('node')} stepped down (term {data.get('term')}); "
                    "the standby takes over", highlight=False)

    go(ctx)
