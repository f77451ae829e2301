"""Attaching a lab to controllers it did not start: the pair the Ansible roles deployed.

The controllers serve HTTPS on their management-overlay addresses (https://<mgmt ip>:8650),
which exist only inside the bare hosts' namespaces. The lab's clients run in the root
namespace, so each URL gets a forwarder (lab/forward.py) in the namespace of the host that
owns the address (or, for an address no bare host has, the first host: the management overlay
routes it) listening on a unix socket under <lab dir>/api/. The lab's api_url lists those
sockets, and its CA and token are the controllers' own (api_ca, api_token_file), so
datacenter.api_for, `lab sync`, `verify`, the compute agent and the CLI's --lab work on it as
on any lab. TLS stays end to end; over a unix socket the client checks the certificate chain
against the CA but not the host name (the certificates name management addresses).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from hypetunnel.lab.proc import LabError, pid_alive, wait_until
from hypetunnel.lab.state import LabBareHost, LabState

API_PORT = 8650  # the roles' controller API port (INTERFACES.md §4)
CONTROLLERS = 2
FORWARDER_MODULE = "hypetunnel.lab.forward"


def _controller_hosts(state: LabState) -> list[LabBareHost]:
    return sorted(state.bare_hosts.values(), key=lambda h: h.index)[:CONTROLLERS]


def default_api_urls(state: LabState) -> list[str]:
    """The controllers of the inventory's `controllers` group (the first two hosts)."""
    return [f"https://{h.mgmt_ip}:{API_PORT}" for h in _controller_hosts(state)]


def default_ca(state: LabState) -> Path:
    """The CA the controller role installs on the first controller host."""
    return Path(_first_host(state).root) / "etc/hypetunnel/pki/ca.crt"


def default_token_file(state: LabState) -> Path:
    """The admin token the controller role keeps on the first controller host."""
    return Path(_first_host(state).root) / "var/lib/hypetunnel/admin.token"


def _first_host(state: LabState) -> LabBareHost:
    hosts = _controller_hosts(state)
    if not hosts:
        raise LabError(f"lab {state.name} has no bare hosts to attach to")
    return hosts[0]


def parse_api_urls(urls: list[str]) -> list[tuple[str, int]]:
    """(host, port) of each https URL; LabError naming --api and the reason."""
    if not urls:
        raise LabError("--api: no URL given")
    out = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise LabError(f"--api: {url!r} is not an https://HOST:PORT URL (the API runs TLS)")
        try:
            port = parts.port or 443
        except ValueError as e:
            raise LabError(f"--api: {url!r}: {e}") from e
        out.append((parts.hostname, port))
    return out


def attach_api(state: LabState, urls: list[str], ca: Path, token_file: Path) -> str:
    """Start the forwarders and record the API; returns the lab's new api_url."""
    targets = parse_api_urls(urls)
    if not ca.is_file():
        raise LabError(f"--ca: {ca} is not a file (has the controller role run?)")
    if not state.bare_hosts:
        raise LabError(f"lab {state.name} has no bare hosts to attach to")
    stop_forwarders(state)
    sock_dir = Path(state.directory) / "api"
    sock_dir.mkdir(parents=True, exist_ok=True)
    local = []
    for i, (host, port) in enumerate(targets, start=1):
        sock = sock_dir / f"ctl{i}.sock"
        ns = _netns_for(state, host)
        state.api_forwarders[str(sock)] = _start_forwarder(sock, host, port, ns)
        state.save()
        local.append(f"unix:{sock}")
    state.api_url = ",".join(local)
    state.api_targets = list(urls)
    state.api_ca = str(ca)
    state.api_token_file = str(token_file)
    state.save()
    return state.api_url


def _netns_for(state: LabState, address: str) -> str:
    for h in state.bare_hosts.values():
        if address == h.mgmt_ip:
            return h.netns
    return _first_host(state).netns


def _start_forwarder(sock: Path, host: str, port: int, netns: str) -> int:
    sock.unlink(missing_ok=True)
    log = open(sock.with_suffix(".log"), "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m",
                             FORWARDER_MODULE, str(sock), host, str(port)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    wait_until(lambda: sock.exists() or proc.poll() is not None, 10,
               f"the API forwarder on {sock}")
    if proc.poll() is not None:
        tail = sock.with_suffix(".log").read_text()[-1000:]
        raise LabError(f"the API forwarder to {host}:{port} exited with {proc.returncode}:"
                       f"\n{tail}")
    return proc.pid


def stop_forwarders(state: LabState) -> None:
    """Kill the forwarders a previous attach started (down() kills them with the namespaces
    too). A pid is only killed while it still runs the forwarder: pids get reused."""
    pids = [p for p in state.api_forwarders.values() if _is_forwarder(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(p) for p in pids), 5, "API forwarders to die")
    state.api_forwarders.clear()
    state.save()


def _is_forwarder(pid: int) -> bool:
    try:
        return FORWARDER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
    return pid_alive(pid)
