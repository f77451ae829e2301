"""`lab up` / `lab down`: a whole simulated datacenter driven by the real controller.

up = build hypervisors (what enlistment does on real hardware), start the controller, apply the
intent through the REST API exactly as an operator would, plug the VMs where the controller
placed them (what Nova would do), and wait until the controller reports convergence.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypetunnel.client import ApiClient
from hypetunnel.client.http import DEFAULT_TIMEOUT, Timeout
from hypetunnel.lab import diagnose, hapair
from hypetunnel.lab.announce import announce
from hypetunnel.lab.controller import TOKEN_WAIT, LabController
from hypetunnel.lab.netns import netns_exists
from hypetunnel.lab.pki import SINGLE_CONTROLLER, ensure_lab_pki
from hypetunnel.lab.proc import LabError
from hypetunnel.lab.state import STATE_FILE
from hypetunnel.lab.topology import Lab
from hypetunnel.model.intent import Intent, network_encapsulation, network_mtu, vm_id
from hypetunnel.model.loader import load_intent_file

Progress = Callable[[str], None]


def lab_controller(lab: Lab) -> LabController:
    """The lab's single controller: in its own namespace on the management overlay (OVS
    speaks TLS over TCP only), TLS-only unless the lab is `--insecure`. A lab built without
    that namespace (by hand, or an older lab) has it in the root namespace on unix sockets."""
    svc = lab.services.get(SINGLE_CONTROLLER)
    if svc is None:
        return LabController(lab.directory / "controller")
    scheme = "pssl" if lab.tls_dir else "tcp"
    return LabController(lab.directory / "controller", netns=svc.netns,
                         extra_args=tuple(hapair.tls_args(lab, SINGLE_CONTROLLER)),
                         openflow_listen=f"{scheme}:0.0.0.0:{hapair.OPENFLOW_PORT}",
                         ca=hapair.lab_ca(lab))


def api_for(lab: Lab) -> ApiClient:
    """The API of the lab's (active) controller."""
    urls = [u for u in (lab.api_url or "").split(",") if u]
    if len(urls) > 1:
        return hapair.active_api(lab)
    return client(lab, urls[0] if urls else lab_controller(lab).api_url)


def client(lab: Lab, url: str, timeout: Timeout = DEFAULT_TIMEOUT) -> ApiClient:
    """A client of one of the lab's controllers at `url`: it sends the lab's bootstrap admin
    token and verifies HTTPS against the lab's CA (none when the lab runs `--insecure`)."""
    return ApiClient(url, timeout=timeout, token=token_for(lab), ca=hapair.lab_ca(lab))


def token_for(lab: Lab) -> str | None:
    """The lab's admin token: the attached controllers' (`lab attach`), else the lab's
    bootstrap token, waiting for a controller just started to write it."""
    return hapair.api_token(lab, wait=TOKEN_WAIT)


def warm_underlay(lab: Lab) -> None:
    """The userspace datapath drops the first tunnel packet towards a peer whose underlay MAC
    it has not resolved yet. Real hypervisors' kernel datapath uses the host's neighbour table;
    in the lab, every hypervisor is told every other one's br-phy MAC up front."""
    hvs = list(lab.hypervisors.values())
    macs = {}
    for h in hvs:
        out = lab.exec(h.name, ["cat", "/sys/class/net/br-phy/address"]).stdout.strip()
        macs[h.name] = out
    for h in hvs:
        for o in hvs:
            if o is not h:
                h.ovs.appctl("tnl/neigh/set", "br-phy", o.underlay_ip, macs[o.name])


def ovsdb_endpoint(lab: Lab, name: str, ha: bool = False) -> str | None:
    """How the controller reaches a hypervisor's OVSDB: over the management overlay (TLS
    unless the lab is `--insecure`); a controller in the root namespace through the socket."""
    hv = lab.hypervisor(name)
    if lab.tls_dir is not None:
        return hv.ovsdb_ssl
    return hv.ovsdb_tcp if ha or SINGLE_CONTROLLER in lab.services else hv.ovsdb


def enlisted(intent: Intent, lab: Lab, ha: bool = False) -> Intent:
    """The intent with each hypervisor's management facts filled in from the lab."""
    hvs = [h.model_copy(update={"underlay_ip": lab.hypervisor(h.name).underlay_ip,
                                "ovsdb": ovsdb_endpoint(lab, h.name, ha),
                                "datapath_type": lab.hypervisor(h.name).datapath_type})
           for h in intent.hypervisors]
    return intent.model_copy(update={"hypervisors": hvs})


def up(file: Path, name: str, progress: Progress = lambda _: None,
       timeout: float = 60.0, ha: bool = False, agent: bool = False,
       insecure: bool = False) -> Lab:
    """Build the lab. With `agent`, a background compute agent keeps the VMs in line with the
    intent afterwards (plugs created VMs, carries out moves and restarts); without it, callers
    run sync_vms() themselves. Every control channel runs TLS with the lab's PKI unless
    `insecure` (a comparison run: the same layout over plain TCP)."""
    intent = load_intent_file(file)
    lab = Lab(name, underlay_mtu=intent.fabric.underlay_mtu)
    try:
        if not insecure:
            progress("pki: a CA and a certificate per hypervisor and controller")
            lab.use_tls(ensure_lab_pki(lab))
        lab.create_underlay()
        for h in intent.hypervisors:
            progress(f"hypervisor {h.name}: namespace, Open vSwitch, underlay, management")
            lab.add_hypervisor(h.name, str(h.underlay_ip) if h.underlay_ip else None)
        progress("underlay: every hypervisor resolves every other one")
        warm_underlay(lab)
        if ha:
            url = hapair.start(lab, progress)
            for h in intent.hypervisors:
                lab.set_controllers(h.name, hapair.switch_targets(lab))
        else:
            progress(f"controller: starting on the management overlay"
                     f"{'' if insecure else ' (TLS)'}")
            url = start_controller(lab, intent)
        lab.set_api_url(url)
        progress(f"controller: API on {url}; applying {file}")
        with api_for(lab) as api:
            api.apply(enlisted(intent, lab, ha).model_dump(mode="json", exclude_none=True))
            sync_vms(lab, api, progress)
            wait_converged(api, timeout, progress, lab=lab)
        if agent:
            start_agent(lab)
    except LabError as e:
        detail = diagnose.report(lab)  # before down() removes the logs it quotes
        down(name)
        raise LabError(f"{e}\n{detail}") from e
    except BaseException:
        down(name)
        raise
    return lab


def start_controller(lab: Lab, intent: Intent) -> str:
    """The single controller in a namespace beside the first hypervisor, on the management
    overlay; every switch is pointed at it (`ssl:`, or `tcp:` when the lab is insecure)."""
    svc = lab.add_service(SINGLE_CONTROLLER, intent.hypervisors[0].name)
    if lab.tls_dir is not None:
        ensure_lab_pki(lab)  # its certificate names its management address now
    url = lab_controller(lab).start()
    target = f"{'ssl' if lab.tls_dir else 'tcp'}:{svc.mgmt_ip}:{hapair.OPENFLOW_PORT}"
    for h in intent.hypervisors:
        lab.set_controllers(h.name, [target])
    return url


def sync_vms(lab: Lab, api: ApiClient, progress: Progress = lambda _: None,
             intent_doc: dict[str, Any] | None = None) -> bool:
    """Make the lab's VMs what the controller's intent says (the lab's stand-in for Nova):
    plug new VMs where they are placed, unplug deleted ones, and carry out moves: hot (the
    running VM's interface is re-homed, processes keep running, then it announces itself)
    or cold (stopped, moved, started again with the same identity). `intent_doc` is the
    intent as GET /intent answered, when the caller already has it. Returns False when some
    VM had to wait (its hypervisor is down), so a caller knows to try again."""
    intent = Intent.model_validate(intent_doc if intent_doc is not None else api.get_intent())
    with lab.exclusive():
        return _sync_vms(lab, api, intent, progress)


def _sync_vms(lab: Lab, api: ApiClient, intent: Intent, progress: Progress) -> bool:
    in_line = True
    wanted: dict[str, dict[str, Any]] = {}
    for t in intent.tenants:
        nets = {n.name: n for n in t.networks}
        mtu = network_mtu(intent.fabric, network_encapsulation(intent.fabric, t))
        for v in t.vms:
            net = nets[v.network]
            wanted[vm_id(t.name, v.name)] = {
                "hypervisor": v.hypervisor, "mac": v.mac, "ip": str(v.ip),
                "prefixlen": net.cidr.prefixlen, "mtu": mtu}
    for vid in [v for v in lab.vms if v not in wanted]:
        progress(f"vm {vid}: unplug")
        lab.remove_vm(vid)
    kinds: dict[str, str] | None = None
    restarts = _restarts_asked(lab, api, wanted)
    for vid, spec in wanted.items():
        have = lab.vms.get(vid)
        if vid in restarts:
            progress(f"vm {vid}: restart on {spec['hypervisor']} (the controller asked: "
                     f"move #{restarts[vid]})")
            lab.remove_vm(vid)
            lab.add_vm(vid, **spec)
            continue
        if have is not None and (have.hypervisor, have.mac, have.ip) == (
                spec["hypervisor"], spec["mac"], spec["ip"]):
            if not lab.vm_alive(vid) and lab.hypervisor_alive(have.hypervisor):
                in_line = False  # crashed: a restart may be asked for, look again
            continue
        if not lab.hypervisor_alive(spec["hypervisor"]):
            in_line = False
            continue  # nowhere to run it yet
        if have is not None and (have.mac, have.ip) == (spec["mac"], spec["ip"]):
            if kinds is None:  # the newest move of each VM says hot or cold
                kinds = {m["vm"]: m["kind"] for m in api.moves()}
            if kinds.get(vid, "hot") == "hot" and lab.hypervisor_alive(have.hypervisor):
                progress(f"vm {vid}: hot move {have.hypervisor} -> {spec['hypervisor']}")
                announce(lab.move_vm(vid, spec["hypervisor"]))
                continue
            progress(f"vm {vid}: cold move {have.hypervisor} -> {spec['hypervisor']}")
        if have is not None:
            lab.remove_vm(vid)
        progress(f"vm {vid}: plug into {spec['hypervisor']} ({spec['ip']}, mtu {spec['mtu']})")
        lab.add_vm(vid, **spec)
    return in_line


def _restarts_asked(lab: Lab, api: ApiClient, wanted: dict[str, dict[str, Any]]
                    ) -> dict[str, int]:
    """Crashed VMs whose newest move record is a restart in place still running (what the
    controller's fault policy asks for): VM id -> the record's seq. Asks the controller only
    when some VM is dead."""
    dead = [vid for vid, have in lab.vms.items()
            if vid in wanted and have.hypervisor == wanted[vid]["hypervisor"]
            and not lab.vm_alive(vid) and lab.hypervisor_alive(have.hypervisor)]
    if not dead:
        return {}
    newest = {m["vm"]: m for m in sorted(api.moves(), key=lambda m: int(m["seq"]))}
    out = {}
    for vid in dead:
        m = newest.get(vid)
        if (m is not None and m["kind"] == "restart" and m["result"] == "running"
                and m["from"] == m["to"] == lab.vms[vid].hypervisor):
            out[vid] = int(m["seq"])
    return out


def agent_record(lab: Lab) -> Path:
    return lab.directory / "agent.json"


def start_agent(lab: Lab) -> None:
    """The lab's compute agent: keeps VMs in line with the intent in the background."""
    log = open(lab.directory / "agent.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen([sys.executable, "-m", "hypetunnel", "lab", "agent", "--name",
                             lab.name], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    agent_record(lab).write_text(json.dumps({"pid": proc.pid}))


def stop_agent(lab: Lab) -> None:
    try:
        pid = int(json.loads(agent_record(lab).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    agent_record(lab).unlink(missing_ok=True)


def run_agent(name: str, interval: float = 0.2, recheck: float = 10.0) -> None:
    """The agent's loop: poll the intent cheaply, act only when something changed.

    Each poll is one GET /intent on a kept-open connection and a stat() of the lab's state
    file. A sync (reload the lab, compare every VM) runs only when the intent or the lab state
    changed, when the last sync left a VM waiting for its hypervisor, and every `recheck`
    seconds as a safety net. (A new HTTP client per poll cost ~60 ms of CPU for its TLS
    context alone: the agent used a third of a core while idle.)
    """
    state_file = Lab.load(name).directory / STATE_FILE
    api: ApiClient | None = None
    connected_at = 0.0
    pair = False
    synced: tuple[Any, int] | None = None  # (intent, state file stamp) after the last sync
    synced_at = 0.0
    namespaces: list[str] = []  # the VMs' namespaces at the last sync
    while True:
        try:
            now = time.monotonic()
            if api is not None and pair and now - connected_at > recheck:
                api.close()  # a pair's active controller may have changed: look it up again
                api = None
            if api is None:
                lab = Lab.load(name)
                pair = len([u for u in (lab.api_url or "").split(",") if u]) > 1
                api, connected_at = api_for(lab), now
            doc = api.get_intent()
            seen = (doc, _stamp(state_file))
            crashed = not all(map(netns_exists, namespaces))  # a VM died: a restart may come
            if synced != seen or crashed or now - synced_at > recheck:
                lab = Lab.load(name)
                namespaces = [v.netns for v in lab.vms.values() if v.owns_netns]
                in_line = sync_vms(lab, api, lambda m: print(m, flush=True), doc)
                # The stamp from before the sync: the sync's own writes to the lab state cause
                # one more (idle) sync, but a change made meanwhile by someone else is not lost.
                synced = seen if in_line else None
                synced_at = now
        except Exception as e:  # keep going: the controller may be failing over
            print(f"agent: {e}", flush=True)
            if api is not None:
                api.close()
            api, synced = None, None
        time.sleep(interval)


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def wait_converged(api: ApiClient, timeout: float, progress: Progress = lambda _: None,
                   lab: Lab | None = None) -> dict:
    """Until the controller says every switch holds its desired state. With `lab` (a pair),
    follow a hand-over: a standby never converges anything, ask the active instead."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    followed: list[ApiClient] = []
    try:
        while time.monotonic() < deadline:
            status = api.status()
            if lab is not None and status.get("controller", {}).get("role") == "standby":
                api = api_for(lab)
                followed.append(api)
                progress(f"the pair handed over: asking {status['controller'].get('leader')}")
                continue
            vms = status.get("vms", {})
            if status.get("converged") and vms.get("bound") == vms.get("total"):
                progress("converged: every switch has exactly its desired flows and tunnels")
                return status
            time.sleep(0.1)
    finally:
        for client in followed:
            client.close()
    raise LabError(f"not converged after {timeout}s: {status}")


def down(name: str) -> None:
    try:
        lab = Lab.load(name)
    except LabError:
        Lab.destroy(name)  # state file lost: clean up by the lab's name prefix
        return
    stop_agent(lab)
    lab_controller(lab).stop()
    lab.down()
