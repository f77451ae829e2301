"""`hypetunnel lab ...`: a simulated datacenter of namespaces on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hypetunnel.errors import HypeTunnelError

app = typer.Typer(no_args_is_help=True, help="Build, use and remove a namespace lab.")
console = Console(stderr=True)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Lab name (several labs coexist).")]


def _fail(e: Exception) -> None:
    for line in str(e).splitlines():
        console.print(f"[red]error:[/red] {line}", markup=True, highlight=False)
    raise typer.Exit(1)


def default_name() -> str:
    from hypetunnel.lab.topology import Lab

    env = os.environ.get("HYPETUNNEL_LAB")
    if env:
        return env
    names = Lab.list()
    return names[0] if len(names) == 1 else "lab"


@app.command("up")
def up(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
       name: NameOpt = "lab",
       ha: Annotated[bool, typer.Option("--ha", help="A primary/secondary controller pair and a "
                                        "3-member etcd cluster on the management overlay.")
                     ] = False,
       insecure: Annotated[bool, typer.Option(
           "--insecure", help="Plain control channels (no TLS, no certificates): for a "
                              "comparison run.")] = False,
       bare: Annotated[bool, typer.Option(
           "--bare", help="Bare hosts for Ansible instead: each an sshd on an out-of-band "
                          "network and nothing else (FILE: an intent file or {hosts: "
                          "[{name: hv1}, ...]}).")] = False) -> None:
    """Build hypervisors and VMs from FILE, start the controller, apply, wait until converged
    (with --bare: only the hosts, for `hypetunnel lab operator -- ansible-playbook ...`)."""
    from hypetunnel.lab import datacenter

    if bare:
        if ha or insecure:
            _fail(ValueError("--bare: --ha and --insecure are for a lab-built fabric; with "
                             "--bare the Ansible roles build it"))
        _up_bare(file, name)
        return
    try:
        with console.status("building the lab") as status:
            def progress(m: str) -> None:
                status.update(m)
                console.print(f"  {m}", highlight=False)

            lab = datacenter.up(file, name, ha=ha, agent=True, progress=progress,
                                insecure=insecure)
    except HypeTunnelError as e:
        _fail(e)
    console.print(f"[green]lab {name} is up[/green]: {len(lab.hypervisors)} hypervisors, "
                  f"{len(lab.vms)} VMs. Try `hypetunnel status`, `hypetunnel verify`, "
                  f"`hypetunnel lab exec {next(iter(lab.vms), 'VM')} -- ping ...`")


def _up_bare(file: Path, name: str) -> None:
    from hypetunnel.lab import bare

    try:
        lab = bare.up(file, name, progress=lambda m: console.print(f"  {m}", highlight=False))
    except HypeTunnelError as e:
        _fail(e)
    console.print(f"[green]bare lab {name} is up[/green]: {len(lab.bare_hosts)} hosts, "
                  "nothing configured", highlight=False)
    print(bare.how_to_run(lab))


@app.command("operator", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})
def operator_(command: Annotated[list[str], typer.Argument(help="command to run, after --")],
              name: NameOpt = "") -> None:
    """Run a command in a bare lab's operator namespace, set up for Ansible (ANSIBLE_CONFIG:
    inventory, ssh key, checked host keys; ANSIBLE_COLLECTIONS_PATH: this repository's)."""
    from hypetunnel.lab import operator
    from hypetunnel.lab.topology import Lab

    try:
        lab = Lab.load(name or default_name())
        if not lab.bare_hosts:
            raise ValueError(f"lab {lab.name} is not a bare lab (`lab up --bare`)")
    except (HypeTunnelError, ValueError) as e:
        _fail(e)
    rc = subprocess.call(["ip", "netns", "exec", lab.operator_netns, *command],
                         env=operator.environment(lab.state))
    sys.exit(rc)


@app.command("attach")
def attach_(name: NameOpt = "",
            host: Annotated[list[str] | None, typer.Option(
                "--host", help="Adopt only this bare host (repeatable; default: all).")] = None,
            api: Annotated[str | None, typer.Option(
                "--api", help="The controllers' API URL[,URL] (default: https://<mgmt ip>:8650 "
                              "of the first two hosts).")] = None,
            ca: Annotated[Path | None, typer.Option(
                "--ca", help="CA of their HTTPS certificates (default: the controller role's "
                             "<host root>/etc/hypetunnel/pki/ca.crt on the first host).")] = None,
            token_file: Annotated[Path | None, typer.Option(
                "--token-file", help="Their admin token (default: <host root>/var/lib/"
                                     "hypetunnel/admin.token on the first host).")] = None,
            no_api: Annotated[bool, typer.Option(
                "--no-api", help="Only adopt the hosts' Open vSwitch; no controllers.")] = False,
            agent: Annotated[bool, typer.Option(
                help="Start the lab's compute agent (plugs VMs where the controller places "
                     "them).")] = True) -> None:
    """After Ansible configured a bare lab: take its hosts in as lab hypervisors and talk to
    the controllers the roles deployed, so `lab sync`, `verify` and VM moves work on it."""
    from hypetunnel.lab import attach, datacenter
    from hypetunnel.lab.topology import Lab

    try:
        lab = Lab.load(name or default_name())
        if not lab.bare_hosts:
            raise ValueError(f"lab {lab.name} is not a bare lab (`lab up --bare`)")
        urls = [u for u in (api or "").split(",") if u] or attach.default_api_urls(lab.state)
        ca_file = ca or attach.default_ca(lab.state)
        if not no_api:  # bad input: refused before anything is recorded
            attach.parse_api_urls(urls)
            if not ca_file.is_file():
                raise ValueError(f"--ca: {ca_file} is not a file (has the controller role run?)")
        adopted = lab.adopt_bare(host or None)
        console.print(f"adopted {', '.join(h.name for h in adopted)}: Open vSwitch in "
                      f"<host root>/var/run/openvswitch", highlight=False)
        if len(lab.hypervisors) > 1:
            datacenter.warm_underlay(lab)
        if no_api:
            return
        lab.attach_api(urls, ca_file, token_file or attach.default_token_file(lab.state))
        with datacenter.api_for(lab) as client:
            role = client.controller().get("role")
        console.print(f"API: {', '.join(urls)} (active: {role}) via {lab.api_url}",
                      highlight=False)
        if agent:
            datacenter.stop_agent(lab)
            datacenter.start_agent(lab)
            console.print("compute agent started", highlight=False)
    except (HypeTunnelError, ValueError) as e:
        _fail(e)


@app.command("down")
def down(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """Remove every namespace, process, link and file of the lab."""
    from hypetunnel.lab import datacenter

    try:
        datacenter.down(name or default_name())
    except HypeTunnelError as e:
        _fail(e)
    console.print(f"lab {name or default_name()} removed")


@app.command("list")
def list_labs() -> None:
    from hypetunnel.lab.topology import Lab

    for n in Lab.list():
        print(n)


@app.command("sync")
def sync(name: NameOpt = "") -> None:
    """Plug/unplug lab VMs to match the controller's intent (the lab's stand-in for Nova)."""
    from hypetunnel.lab import datacenter
    from hypetunnel.lab.topology import Lab

    try:
        lab = Lab.load(name or default_name())
        with datacenter.api_for(lab) as api:
            datacenter.sync_vms(lab, api, lambda m: console.print(f"  {m}"))
            datacenter.wait_converged(api, 30)
    except HypeTunnelError as e:
        _fail(e)


@app.command("agent", hidden=True)
def agent(name: NameOpt = "") -> None:
    """The lab's compute agent (started by `lab up`): keeps VMs in line with the intent."""
    from hypetunnel.lab import datacenter

    datacenter.run_agent(name or default_name())


@app.command("exec", context_settings={"allow_extra_args": True,
                                        "ignore_unknown_options": True})
def exec_(target: Annotated[str, typer.Argument(help="VM (tenant/vm or vm) or hypervisor")],
          command: Annotated[list[str], typer.Argument(help="command to run, after --")],
          name: NameOpt = "") -> None:
    """Run a command inside a VM's or a hypervisor's namespace."""
    from hypetunnel.lab.topology import Lab

    try:
        netns = Lab.load(name or default_name()).netns_of(target)
    except HypeTunnelError as e:
        _fail(e)
    rc = subprocess.call(["ip", "netns", "exec", netns, *command])
    sys.exit(rc)
