"""`hypetunnel controller ...`: run the controller daemon."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Run and inspect the SDN controller.")


@app.command("run")
def run(
    state_dir: Annotated[Path, typer.Option(help="Directory of the embedded SQLite store.")] = Path(
        "/var/lib/hypetunnel"),
    api: Annotated[str, typer.Option(help="REST API listen address HOST:PORT.")] = "127.0.0.1:8650",
    openflow: Annotated[list[str], typer.Option(
        help="OpenFlow listen target(s): tcp:HOST:PORT or unix:PATH.")] = ["tcp:0.0.0.0:6653"],  # noqa: B006
    switch_target: Annotated[list[str] | None, typer.Option(
        help="Controller target(s) switches are told to connect to (default: --openflow).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the controller in the foreground until SIGTERM/SIGINT."""
    from hypetunnel.controller.daemon import serve

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = api.rpartition(":")
    asyncio.run(serve(state_dir, host or "127.0.0.1", int(port), list(openflow),
                      list(switch_target) if switch_target else None))
