"""One Open vSwitch instance (its own ovsdb-server and ovs-vswitchd) for one lab hypervisor.

Every instance has its own run/log/db directory, so many can live on one machine; started
inside the hypervisor's network namespace, ovs-vswitchd learns that namespace's routes, which
the userspace datapath needs to send tunnel packets.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from hypetunnel.lab.proc import LabError, pid_alive, run, wait_until

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")

# ROUTES_NOTE. With the system routing table, ovs-vswitchd (3.1) flushes its copy of the
# kernel's routes on every link change in its namespace (lib/route-table.c name_table_change:
# any veth created, brought up or deleted, which every VM plug, unplug and hot move does) and
# dumps them again. Flushing a route also drops the tunnel endpoint's device from the
# tunnel-termination map until the dump puts it back (lib/ovs-router.c rt_entry_delete__ ->
# tnl_port_map_delete_ipdev), and the flush wakes the revalidators at once (tnl_conf_seq): a
# tunnel frame translated in that window goes to br-phy's LOCAL port, where the kernel answers
# "udp port 4789 unreachable". That was the probe a hot move lost when the prober sat on the
# destination hypervisor. Measured on a lab hypervisor under a 2 ms ping arriving there by
# tunnel, 20-30 veth pairs created, brought up or deleted per run: 3-14 of 2,000 probes lost
# in each of 8 runs, a port-unreachable in the capture for most; with --disable-system-route
# and the underlay route given by hand (routes added that way are never flushed), 0 of 2,000
# in each of 5 runs (load average 8 on 2 cores).

# The userspace datapath reads every port through an AF_PACKET socket whose receive buffer is
# net.core.rmem_default when ovs-vswitchd opens it. The default (208 KiB, ~90 full frames)
# overflowed whenever the daemon waited for a core on a loaded 2-core machine: under a 20 Mbit/s
# stream, 5 of 10,000 5 ms probes were lost with no move at all; with 4 MiB, 0 of 12,000. The
# kernel datapath of production hosts has no such socket.
SOCKET_BUFFER = 4 * 1024 * 1024
RMEM_DEFAULT = Path("/proc/sys/net/core/rmem_default")


def ensure_socket_buffers() -> None:
    """Raise net.core.rmem_default (host-wide, never lowered) before a daemon opens sockets."""
    with contextlib.suppress(OSError, ValueError):
        if int(RMEM_DEFAULT.read_text()) < SOCKET_BUFFER:
            RMEM_DEFAULT.write_text(str(SOCKET_BUFFER))


@dataclass
class OvsInstance:
    directory: Path
    netns: str | None = None
    # False: ovs-vswitchd ignores the kernel's routing table (--disable-system-route) and
    # routes tunnel packets only by the routes given with add_route(). See ROUTES_NOTE.
    system_routes: bool = True

    @property
    def db_sock(self) -> Path:
        return self.directory / "db.sock"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.db_sock}"

    def _env(self) -> dict[str, str]:
        d = str(self.directory)
        return {**os.environ, "OVS_RUNDIR": d, "OVS_LOGDIR": d, "OVS_DBDIR": d,
                "OVS_SYSCONFDIR": d, "OVS_PKGDATADIR": "/usr/share/openvswitch"}

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        d = self.directory
        db = d / "conf.db"
        if not db.exists():
            run(["ovsdb-tool", "create", str(db), str(SCHEMA)])
        # Key, certificate and CA come from the SSL table (`ovs-vsctl set-ssl`), as ovs-ctl
        # does: a `pssl:` remote works once it is set, and rotated files are read again.
        ssl_table = [f"--{opt}=db:Open_vSwitch,SSL,{col}" for opt, col in (
            ("private-key", "private_key"), ("certificate", "certificate"),
            ("ca-cert", "ca_cert"))]
        run(["ovsdb-server", str(db), f"--remote=punix:{self.db_sock}", *ssl_table,
             f"--pidfile={d}/ovsdb-server.pid", f"--unixctl={d}/ovsdb-server.ctl",
             f"--log-file={d}/ovsdb-server.log", "--detach", "--no-chdir"],
            netns=self.netns, env=self._env())
        self.vsctl("--no-wait", "init")
        self.start_vswitchd()

    def start_vswitchd(self) -> None:
        ensure_socket_buffers()
        d = self.directory
        (d / "ovs-vswitchd.ctl").unlink(missing_ok=True)  # a killed daemon leaves its socket
        run(["ovs-vswitchd", self.endpoint, f"--pidfile={d}/ovs-vswitchd.pid",
             f"--unixctl={d}/ovs-vswitchd.ctl", f"--log-file={d}/ovs-vswitchd.log",
             "--detach", "--no-chdir", "--disable-system",
             *([] if self.system_routes else ["--disable-system-route"])],
            netns=self.netns, env=self._env())
        wait_until(lambda: (d / "ovs-vswitchd.ctl").exists(), 20, f"ovs-vswitchd in {d}")

    def kill_vswitchd(self) -> None:
        """kill -9 ovs-vswitchd alone: its database (bridges, ports, tunnels) stays; its flows
        and, on the userspace datapath, its datapath die with it."""
        pid = self.pid("ovs-vswitchd")
        if pid is None:
            raise LabError(f"no ovs-vswitchd in {self.directory}")
        _signal(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5, "ovs-vswitchd to die")

    def vsctl(self, *args: str, check: bool = True) -> str:
        return run(["ovs-vsctl", f"--db={self.endpoint}", "--timeout=20", *args],
                   check=check, env=self._env()).stdout.strip()

    def wait_until(self, table: str, record: str, condition: str, timeout: float) -> bool:
        """Block in ovsdb-server (no polling) until the record meets the condition; False if it
        did not within timeout seconds."""
        cp = run(["ovs-vsctl", f"--db={self.endpoint}", f"--timeout={max(1, round(timeout))}",
                  "wait-until", table, record, condition], check=False, env=self._env())
        return cp.returncode == 0

    def add_route(self, prefix: str, bridge: str) -> None:
        """A route of ovs-vswitchd's own (tunnel packets to `prefix` leave by `bridge`, whose
        internal port must already hold an address in it); replaces an equal one.

        The daemon takes the route's source from the bridge's addresses as its netlink
        monitor last saw them, so just after `ip addr` it may refuse the route ("Error while
        inserting route") until it has read the change (seen on a busy machine): asked again
        until it takes it."""
        def added() -> bool:
            try:
                self.appctl("ovs/route/add", prefix, bridge)
            except LabError as e:
                if "Error while inserting route" not in str(e):
                    raise
                return False
            return True

        wait_until(added, 10, f"ovs-vswitchd to take the route {prefix} via {bridge}",
                   interval=0.05)

    def appctl(self, *args: str, check: bool = True) -> str:
        return run(["ovs-appctl", "-t", str(self.directory / "ovs-vswitchd.ctl"), *args],
                   check=check, env=self._env()).stdout.strip()

    def ofctl(self, *args: str, bridge_mgmt: str | None = None, check: bool = True) -> str:
        """ovs-ofctl against a bridge's management socket in this instance's run directory."""
        args_l = list(args)
        if bridge_mgmt is not None:
            args_l = [args_l[0], f"unix:{self.directory}/{bridge_mgmt}.mgmt", *args_l[1:]]
        return run(["ovs-ofctl", "-O", "OpenFlow13", *args_l], check=check,
                   env=self._env()).stdout

    def pid(self, daemon: str) -> int | None:
        try:
            return int((self.directory / f"{daemon}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return [p for d in ("ovs-vswitchd", "ovsdb-server") if (p := self.pid(d)) is not None]

    def stop(self) -> None:
        """Kill both daemons (SIGKILL after a short grace) and wait until they are gone."""
        pids = self.pids()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "OVS daemons to exit")
        except LabError:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "OVS daemons to die")

    def kill(self) -> None:
        """Abrupt death, as a crashed hypervisor would show."""
        pids = self.pids()
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "OVS daemons to die")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
