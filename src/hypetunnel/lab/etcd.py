"""A real etcd cluster for the lab and the tests: one `etcd` process per member, each with its own
directory (data, log, pid record), optionally inside a hypervisor's network namespace.

Tuning (a lab on a loaded 2-core machine, all members on one host or one virtual underlay):
- heartbeat 50 ms / election timeout 500 ms: etcd's rule of thumb is election >= 10 x heartbeat
  and heartbeat ~ round-trip time; the RTT here is well under 1 ms, but the CPU is shared with OVS,
  controllers and iperf, and a member that misses 10 heartbeats in a row because it was not
  scheduled would start a needless election. 500 ms keeps leader loss detected (and a new leader
  elected) in well under a second without that risk; the defaults (100/1000) only slow recovery.
- --pre-vote: a member that was cut off and comes back cannot depose a healthy leader with its
  inflated term (the partition tests would otherwise see a spurious leader change on heal).
- --snapshot-count 1000: lab data is tiny; a small count keeps the in-memory raft log short.
- --max-txn-ops 10000: a store commit is ONE txn (all puts, deletes and the revision), and a whole
  intent is applied at once; etcd's default of 128 operations would refuse a larger fabric.
- --auto-compaction (revision, keep 1000): bounds history in long runs; the quota stays default.
- watch progress every 1 s: an idle watch stream then still proves the member is alive (the
  store's watcher moves to another member after 3.5 s of silence).

TLS (a member with `tls`, an Identity: CA, its certificate, its key): clients and peers alike
must present a certificate signed by the CA (--client-cert-auth, --peer-client-cert-auth), the
member serves both with its own certificate, and every URL is https, so plain HTTP gets nothing.
A member's certificate carries an IP SAN for its address: etcd members verify each other's
address against it, and it serves as both server and client certificate (peers dial each other).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hypetunnel.lab.netns import pid_alive
from hypetunnel.lab.proc import LabError, run, wait_until
from hypetunnel.pki import Identity, client_context, init_ca, issue, list_certificates

TUNING = [
    "--heartbeat-interval", "50", "--election-timeout", "500", "--pre-vote",
    "--snapshot-count", "1000", "--max-txn-ops", "10000",
    "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1000",
    "--experimental-watch-progress-notify-interval", "1s",
    "--logger", "zap", "--log-outputs", "stderr",
]


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all sockets held open until all are chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process, to tell our etcd from a later process reusing its
    pid (a pid record may be read by another process long after)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass
class EtcdMember:
    name: str
    directory: Path
    client_url: str
    peer_url: str
    netns: str | None = None
    tls: Identity | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "etcd.log"

    @property
    def record(self) -> Path:
        return self.directory / "etcd.json"

    def start(self, initial_cluster: str, token: str) -> None:
        """Start (or restart: an existing data dir wins over the --initial-* flags) the member."""
        if self.running():
            raise LabError(f"etcd member {self.name} is already running (pid {self.pid()})")
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = ["etcd", "--name", self.name, "--data-dir", str(self.data_dir),
               "--listen-client-urls", self.client_url,
               "--advertise-client-urls", self.client_url,
               "--listen-peer-urls", self.peer_url,
               "--initial-advertise-peer-urls", self.peer_url,
               "--initial-cluster", initial_cluster, "--initial-cluster-state", "new",
               "--initial-cluster-token", token, *TUNING, *self._tls_flags()]
        if self.netns:  # `ip netns exec` execs etcd, so the pid we get is etcd's
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        pid = self._proc.pid
        self.record.write_text(json.dumps({
            "pid": pid, "start_time": _start_time(pid), "name": self.name,
            "client_url": self.client_url, "peer_url": self.peer_url, "netns": self.netns}))

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        for url in (self.client_url, self.peer_url):
            if not url.startswith("https://"):
                raise LabError(f"etcd member {self.name}: {url} must be https:// with TLS")
        ca, cert, key = str(self.tls.ca), str(self.tls.cert), str(self.tls.key)
        return ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                "--client-cert-auth",
                "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
                "--peer-client-cert-auth"]

    def pid(self) -> int | None:
        """The recorded pid if that process is still our etcd (alive, same start time)."""
        try:
            rec = json.loads(self.record.read_text())
            pid = int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not pid_alive(pid) or _start_time(pid) != rec.get("start_time"):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def _request(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        """GET (or POST body to) the member's client URL, from inside its namespace if it has
        one; {} when it does not answer."""
        url = f"{self.client_url}{path}"
        if self.netns:
            cmd = ["curl", "-sf", "--max-time", "1", url]
            if self.tls is not None:  # the member's own certificate: it is the CA's too
                cmd += ["--cacert", str(self.tls.ca), "--cert", str(self.tls.cert),
                        "--key", str(self.tls.key)]
            if body is not None:
                cmd += ["-X", "POST", "-d", json.dumps(body)]
            cp = run(cmd, netns=self.netns, check=False)
            text = cp.stdout if cp.returncode == 0 else ""
        else:
            verify = client_context(self.tls) if self.tls is not None else True
            try:
                reply = (httpx.get(url, timeout=1.0, verify=verify) if body is None
                         else httpx.post(url, json=body, timeout=1.0, verify=verify))
                text = reply.text if reply.status_code == 200 else ""
            except httpx.HTTPError:
                return {}
        try:
            doc = json.loads(text)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def healthy(self) -> bool:
        """etcd's /health: true only when this member sees a leader and a quorum read works."""
        return self._request("/health").get("health") == "true"

    def status(self) -> dict[str, object]:
        """/v3/maintenance/status: this member's id (header.member_id), the raft leader's id
        (leader), raft term and index; {} if it does not answer."""
        return self._request("/v3/maintenance/status", {})

    def _signal_and_wait(self, sig: int, grace: float) -> bool:
        pid = self.pid()
        if pid is None:
            self._reap()
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            os.kill(pid, signal.SIGCONT)  # a paused member would never act on SIGTERM
        try:
            wait_until(lambda: not pid_alive(pid), grace, f"etcd {self.name} (pid {pid}) to exit")
        except LabError:
            return False
        self._reap()
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None

    def kill(self) -> None:
        """kill -9: an abrupt member failure (no leadership transfer, no clean close)."""
        if not self._signal_and_wait(signal.SIGKILL, 5):
            raise LabError(f"etcd {self.name} survived SIGKILL")

    def stop(self) -> None:
        """SIGTERM (etcd hands leadership over), SIGKILL after a short grace."""
        if not self._signal_and_wait(signal.SIGTERM, 5):
            self.kill()

    def pause(self) -> None:
        """SIGSTOP: the member keeps its sockets but answers nothing, as a partitioned or
        starved member looks to its peers and clients. resume() undoes it."""
        pid = self.pid()
        if pid is None:
            raise LabError(f"etcd {self.name} is not running")
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class EtcdCluster:
    def __init__(self, members: list[EtcdMember], token: str | None = None) -> None:
        if not members:
            raise LabError("an etcd cluster needs at least one member")
        self.members = members
        # Unique per cluster, so members of two runs can never join each other by mistake.
        self.token = token or f"hypetunnel-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @classmethod
    def local(cls, directory: Path, size: int = 3, name_prefix: str = "etcd",
              pki: Path | None = None) -> EtcdCluster:
        """A cluster on 127.0.0.1 with free ports, one subdirectory per member. With `pki` (a
        PKI directory; its CA is made if missing) the cluster runs TLS, each member with a
        certificate of its own name issued there."""
        ports = free_ports(2 * size)
        scheme = "https" if pki is not None else "http"
        members = []
        for i in range(size):
            name = f"{name_prefix}{i}"
            members.append(EtcdMember(
                name, directory / name, f"{scheme}://127.0.0.1:{ports[2 * i]}",
                f"{scheme}://127.0.0.1:{ports[2 * i + 1]}",
                tls=member_identity(pki, name, "127.0.0.1") if pki is not None else None))
        return cls(members)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def member(self, name: str) -> EtcdMember:
        for m in self.members:
            if m.name == name:
                return m
        raise LabError(f"no etcd member {name!r}")

    def leader(self) -> EtcdMember | None:
        """The member that is the raft leader, as the live members report it (None while they
        know none or disagree, e.g. mid-election)."""
        by_id: dict[str, EtcdMember] = {}
        leader_ids: set[str] = set()
        for m in self.members:
            if not m.running():
                continue
            status = m.status()
            header = status.get("header")
            if isinstance(header, dict) and "leader" in status:
                by_id[str(header.get("member_id"))] = m
                leader_ids.add(str(status["leader"]))
        known = [by_id[i] for i in leader_ids if i in by_id]
        return known[0] if len(leader_ids) == 1 and known else None

    def start(self, timeout: float = 30) -> None:
        """Start every member and wait until all are healthy; on failure nothing is left running
        (and the error carries the members' log tails)."""
        try:
            for m in self.members:
                m.start(self.initial_cluster, self.token)
            self.wait_healthy(timeout)
        except BaseException as e:
            logs = "\n".join(f"--- {m.name}:\n{m.log_tail(800)}" for m in self.members)
            self.destroy()
            if isinstance(e, LabError):
                raise LabError(f"{e}\n{logs}") from e
            raise

    def wait_healthy(self, timeout: float = 30, members: list[EtcdMember] | None = None) -> None:
        for m in members or self.members:
            wait_until(lambda m=m: self._check_alive(m) and m.healthy(), timeout,
                       f"etcd member {m.name} at {m.client_url} to be healthy", interval=0.05)

    @staticmethod
    def _check_alive(m: EtcdMember) -> bool:
        if not m.running():
            raise LabError(f"etcd member {m.name} exited:\n{m.log_tail()}")
        return True

    def kill(self, name: str) -> None:
        self.member(name).kill()

    def stop_member(self, name: str) -> None:
        self.member(name).stop()

    def restart(self, name: str, timeout: float = 30) -> None:
        m = self.member(name)
        m.stop()
        m.start(self.initial_cluster, self.token)
        self.wait_healthy(timeout, [m])

    def stop(self) -> None:
        """Stop every member, keeping the data (a later start resumes the same cluster)."""
        errors = []
        for m in self.members:
            try:
                m.stop()
            except LabError as e:
                errors.append(str(e))
        if errors:
            raise LabError("; ".join(errors))

    def recreate(self, timeout: float = 30) -> None:
        """Stop every member, wipe its data and start a fresh, empty cluster on the same
        addresses (a store lost for good; the members' logs are kept)."""
        self.stop()
        for m in self.members:
            shutil.rmtree(m.data_dir, ignore_errors=True)
        self.start(timeout)

    def destroy(self) -> None:
        """Stop every member and remove their directories."""
        try:
            self.stop()
        finally:
            for m in self.members:
                shutil.rmtree(m.directory, ignore_errors=True)

    @contextlib.contextmanager
    def running(self, timeout: float = 30) -> Iterator[EtcdCluster]:
        """Started on entry, destroyed on exit (even on failure)."""
        self.start(timeout)
        try:
            yield self
        finally:
            self.destroy()


def member_identity(pki: Path, name: str, ip: str) -> Identity:
    """The certificate of etcd member `name` at `ip` (CN=name, IP SAN ip), issued in the PKI
    directory unless it is there already with that address."""
    init_ca(pki)
    identity = Identity.in_directory(pki, name)
    if not (identity.cert.is_file() and _has_ip_san(pki, name, ip)):
        issue(pki, name, ips=[ip])
    return identity


def _has_ip_san(pki: Path, name: str, ip: str) -> bool:
    return any(c.name == name and f"IP:{ip}" in c.sans for c in list_certificates(pki))


def stop_recorded(directory: Path) -> int:
    """Stop every etcd recorded under directory (by a process that may be gone); returns how
    many were running. For lab teardown from a later CLI invocation."""
    stopped = 0
    for record in sorted(directory.rglob("etcd.json")):
        try:
            rec = json.loads(record.read_text())
            member = EtcdMember(str(rec["name"]), record.parent, str(rec["client_url"]),
                                str(rec["peer_url"]), rec.get("netns"))
        except (OSError, ValueError, KeyError):
            continue
        if member.running():
            member.stop()
            stopped += 1
    return stopped
