"""What a failed lab test leaves behind for whoever reads the report: the tails of every
daemon log in the lab's directory and each hypervisor's view of its tunnels and flows.

Only reads; every command is bounded and its failure is reported, not raised, because it runs
while the lab may be broken.
"""

from __future__ import annotations

from pathlib import Path

from hypetunnel.lab.topology import Lab

LOG_TAIL_LINES = 40


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


def _run(lab: Lab, hv: str, argv: list[str]) -> str:
    try:
        out = lab.exec(hv, argv, check=False, timeout=10)
        return (out.stdout or "") + (out.stderr or "")
    except Exception as e:  # a broken lab is what is being described
        return f"({e})"


def report(lab: Lab) -> str:
    parts = []
    for log in sorted(lab.directory.glob("*/*.log")):
        parts.append(f"--- {log.relative_to(lab.directory)} (last {LOG_TAIL_LINES} lines)\n"
                     f"{_tail(log)}")
    for name, hv in lab.hypervisors.items():
        try:
            neigh = hv.ovs.appctl("tnl/neigh/show", check=False)
            flows = hv.ovs.ofctl("dump-flows", bridge_mgmt="br-int", check=False)
            ctrl = hv.ovs.vsctl("--columns=target,role,is_connected,status", "list",
                                "Controller", check=False)
        except Exception as e:  # see _run
            parts.append(f"--- {name}: ({e})")
            continue
        parts.append(f"--- {name}: tunnel neighbours\n{neigh}")
        parts.append(f"--- {name}: br-int has {flows.count('actions=')} flows; controllers\n"
                     f"{ctrl}")
        parts.append(f"--- {name}: routes\n{_run(lab, name, ['ip', 'route'])}"
                     f"{_run(lab, name, ['ip', 'neigh'])}")
    return "\n".join(parts)
