"""`hypetunnel controller ...`: run the controller daemon, see and change who is active."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Run and inspect the SDN controller (pair).")


@app.command("run")
def run(
    state_dir: Annotated[Path, typer.Option(help="Directory of the embedded SQLite store.")] = Path(
        "/var/lib/hypetunnel"),
    api: Annotated[str, typer.Option(
        help="REST API listen address HOST:PORT, or unix:/path.")] = "127.0.0.1:8650",
    openflow: Annotated[list[str], typer.Option(
        help="OpenFlow listen target(s): tcp:HOST:PORT or unix:PATH (with --tls-dir: "
             "ssl:/pssl:HOST:PORT, TLS only).")] = ["tcp:0.0.0.0:6653"],  # noqa: B006
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
        min=0)] = 200.0,
    api_burst: Annotated[float, typer.Option(help="API burst per caller.", min=1)] = 400.0,
    tls_dir: Annotated[Path | None, typer.Option(
        help="PKI directory (`hypetunnel pki`): TLS with mutual authentication on every "
             "control channel. Without it every channel is plain.")] = None,
    tls_name: Annotated[str | None, typer.Option(
        help="Our certificate's name in --tls-dir (default: --node, else 'controller').")
    ] = None,
    peer_name: Annotated[list[str] | None, typer.Option(
        help="HA with --tls-dir: a controller of the pair (its certificate's CN), the only "
             "peers the peer channel accepts; repeat for each.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the controller in the foreground until SIGTERM/SIGINT."""
    from hypetunnel.cli.context import print_errors
    from hypetunnel.errors import FieldError, HypeTunnelError
    from hypetunnel.southbound.openflow.server import parse_target

    # Checked before anything starts: a bad target used to end in a long traceback from
    # inside the event loop, after the store and the API were already up.
    for target in openflow:
        try:
            parse_target(target, tls=tls_dir is not None)
        except HypeTunnelError as e:
            print_errors([FieldError("--openflow", str(e))])
            raise typer.Exit(2) from e
    if tls_name is not None and tls_dir is None:
        print_errors([FieldError("--tls-name", "needs --tls-dir")])
        raise typer.Exit(2)
    from hypetunnel.daemon import DaemonConfig, serve
    from hypetunnel.pki import TlsConfig

    tls = TlsConfig(tls_dir, tls_name or node or "controller") if tls_dir is not None else None

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:  # one line per etcd request (several a second) would bury what happened
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(DaemonConfig(state_dir=state_dir, api=api, openflow=list(openflow),
                                       switch_targets=list(switch_target) if switch_target
                                       else None,
                                       etcd=list(etcd) if etcd else None, node=node, peer=peer,
                                       api_rate=api_rate, api_burst=api_burst,
                                       tls=tls, peer_names=list(peer_name or []))))
    except HypeTunnelError as e:  # e.g. the port is taken: one line, not a traceback
        print_errors([FieldError("", str(e))])
        raise typer.Exit(1) from e


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
