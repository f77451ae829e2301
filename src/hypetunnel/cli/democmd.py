"""`hypetunnel demo` (the main job) and `hypetunnel verify`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hypetunnel.errors import HypeTunnelError

if TYPE_CHECKING:
    from hypetunnel.lab.probe import ProbeResult

console = Console()
err = Console(stderr=True)


def bundled_example() -> Path:
    return Path(str(resources.files("hypetunnel") / "examples" / "three-hypervisors.yaml"))


def matrix_table(results: list[ProbeResult], network_of: dict[str, str]) -> Table:
    vms = sorted(network_of)
    table = Table(title="connectivity / isolation (real pings; ✓ reaches, · isolated)",
                  caption="same-IP pairs (=) cannot be pinged: the kernel answers locally")
    table.add_column("from \\ to", style="bold")
    for i, _ in enumerate(vms, 1):
        table.add_column(str(i), justify="center")
    cell = {(r.src, r.dst): r for r in results}
    for i, src in enumerate(vms, 1):
        row = [f"{i} {src} [dim]{network_of[src].split('/')[1]}[/dim]"]
        for dst in vms:
            r = cell.get((src, dst))
            if r is None:
                row.append("[dim]-[/dim]")
            elif r.reached is None:
                row.append("[dim]=[/dim]")
            elif r.ok:
                row.append("[green]✓[/green]" if r.expected else "[blue]·[/blue]")
            else:
                row.append("[red bold]LEAK[/red bold]" if r.reached
                           else "[red bold]FAIL[/red bold]")
        table.add_row(*row)
    return table


def overlay_table(overlay: dict[str, Any]) -> Table:
    table = Table(title="overlay: tunnels, VNIs and flows per switch")
    for col in ("hypervisor", "tunnels (port -> remote, encapsulation)", "networks (VNI)",
                "flows"):
        table.add_column(col)
    for hv in overlay["hypervisors"]:
        tunnels = "\n".join(f"{t['name']} -> {t['remote']} {t['encapsulation']}"
                            for t in hv["tunnels"]) or "-"
        nets = "\n".join(f"{n['tenant']}/{n['network']} ({n['vni']}, {n['encapsulation']}): "
                         f"{', '.join(v.split('/')[1] for v in n['local_vms'])}"
                         for n in hv["networks"]) or "-"
        table.add_row(hv["hypervisor"], tunnels, nets, str(hv["flows"]))
    return table


def show_verify(lab, api) -> bool:  # type: ignore[no-untyped-def]
    from hypetunnel.lab.verify import summary, verify

    with console.status("probing every VM pair with real packets"):
        results, network_of = verify(lab, api)
    console.print(matrix_table(results, network_of))
    s = summary(results)
    console.print(f"reachability {s['reach_ok']}/{s['reach_total']}, "
                  f"isolation {s['isolation_ok']}/{s['isolation_total']}")
    for f in s["failures"]:
        console.print(f"[red]✗ {f}[/red]")
    return not s["failures"]


def show_wire(lab) -> None:  # type: ignore[no-untyped-def]
    """Ping across hypervisors in each tenant while tcpdump watches the underlay."""
    from hypetunnel.lab.capture import capture, encapsulations

    pairs: dict[str, tuple[Any, Any]] = {}
    for v in lab.vms.values():
        for w in lab.vms.values():
            t = v.vm_id.split("/")[0]
            if (t not in pairs and w.vm_id.split("/")[0] == t and v.hypervisor != w.hypervisor
                    and v.prefixlen == w.prefixlen and v.ip.rsplit(".", 1)[0]
                    == w.ip.rsplit(".", 1)[0]):
                pairs[t] = (v, w)

    def pings() -> None:
        for v, w in pairs.values():
            lab.exec(v.vm_id, ["ping", "-c", "2", "-i", "0.2", "-W", "1", w.ip], check=False)

    seen = encapsulations(capture(lab, pings))
    for v, w in pairs.values():
        console.print(f"underlay while {v.vm_id} pings {w.vm_id}:")
    for e in sorted(seen, key=lambda e: (e.kind, e.vni)):
        console.print(f"  tcpdump on the underlay: [bold]{e.kind}[/bold] with "
                      f"{'key' if e.kind == 'gre' else 'VNI'} {e.vni}")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(keep: Annotated[bool, typer.Option(help="Leave the lab running.")] = False,
             file: Annotated[Path | None, typer.Option(help="Intent file (default: bundled "
                                                       "3-hypervisor example).")] = None,
             name: Annotated[str, typer.Option(help="Lab name.")] = "demo",
             insecure: Annotated[bool, typer.Option(
                 "--insecure", help="Plain control channels (no TLS): a comparison run.")
             ] = False) -> None:
        """Build the example datacenter, prove it with real packets, show the overlay."""
        from hypetunnel.lab import datacenter

        path = file or bundled_example()
        ok = False
        try:
            with console.status("building the lab") as status:
                # A kept lab gets the compute agent, as `lab up` does: the README's next steps
                # (vm create ...) rely on it to plug new VMs.
                def progress(m: str) -> None:
                    status.update(m)
                    console.print(f"  {m}", highlight=False)

                lab = datacenter.up(path, name, agent=keep, insecure=insecure, progress=progress)
            with datacenter.api_for(lab) as api:
                ok = show_verify(lab, api)
                show_wire(lab)
                console.print(overlay_table(api.overlay()))
        except HypeTunnelError as e:
            for line in str(e).splitlines():
                err.print(f"[red]error:[/red] {line}", highlight=False)
        finally:
            if not keep:
                with console.status("tearing the lab down"):
                    datacenter.down(name)
                console.print(f"lab {name} removed (use --keep to leave it running)")
            else:
                console.print(f"lab {name} left running: `hypetunnel lab down {name}`")
        raise typer.Exit(0 if ok else 1)

    @app.command("verify")
    def verify_cmd(name: Annotated[str, typer.Option("--name", "-n")] = "") -> None:
        """Real probes: every pair in a network reaches; no pair across networks/tenants."""
        from hypetunnel.cli.labcmd import default_name
        from hypetunnel.lab import datacenter
        from hypetunnel.lab.topology import Lab

        try:
            lab = Lab.load(name or os.environ.get("HYPETUNNEL_LAB") or default_name())
            with datacenter.api_for(lab) as api:
                ok = show_verify(lab, api)
        except HypeTunnelError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False)
            raise typer.Exit(1) from e
        raise typer.Exit(0 if ok else 1)
