"""The lab's controller: the real `hypetunnel controller run` daemon, started in the background.

It runs in the root namespace with its SQLite store in the lab's directory; switches reach its
OpenFlow endpoint through a unix socket, which works from every hypervisor namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hypetunnel.client import ApiClient, ClientError
from hypetunnel.client.config import find_token
from hypetunnel.lab.proc import LabError, pid_alive, wait_until

TOKEN_WAIT = 30.0  # seconds: a fresh controller writes its bootstrap token right after start


def lab_token(lab_dir: Path, wait: float = 0.0) -> str | None:
    """The bootstrap admin token of the lab's controller(s): whichever of its controller
    directories holds one (in a pair, the controller that was active first wrote it).
    `wait`: seconds to wait for it to appear (a controller just started)."""
    def look() -> str | None:
        try:
            dirs = sorted(p for p in lab_dir.iterdir() if p.is_dir())
        except OSError:
            return None
        return find_token(dirs)

    found = look()
    if found is None and wait > 0:
        wait_until(lambda: look() is not None, wait, f"a bootstrap token under {lab_dir}")
        found = look()
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LabController:
    directory: Path  # <lab dir>/controller, or <lab dir>/<node> in an HA lab
    netns: str | None = None  # HA lab: the controller's own namespace on the management overlay
    extra_args: tuple[str, ...] = ()  # e.g. --etcd URL --node ctl1 --peer IP:PORT
    openflow_listen: str | None = None  # default: the unix socket (TLS: pssl:0.0.0.0:6653)
    ca: Path | None = None  # with --tls-dir: the CA its HTTPS API is verified against

    @property
    def _record(self) -> Path:
        return self.directory / "controller.json"

    def info(self) -> dict[str, object]:
        try:
            return dict(json.loads(self._record.read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def api_url(self) -> str:
        return str(self.info().get("api_url", ""))

    @property
    def openflow_target(self) -> str:
        return f"unix:{self.directory / 'of.sock'}"

    @property
    def pid(self) -> int | None:
        pid = self.info().get("pid")
        return int(pid) if isinstance(pid, int) else None

    def start(self, api_port: int | None = None, openflow: str | None = None) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.netns is not None:
            # In its own namespace the API is served on a unix socket: reachable from the
            # operator's namespace without putting any address in it.
            sock = self.directory / "api.sock"
            sock.unlink(missing_ok=True)
            url, listen = f"unix:{sock}", f"unix:{sock}"
        else:
            port = api_port or int(str(self.info().get("api_port") or 0)) or free_port()
            url, listen = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
        log = open(self.directory / "controller.log", "ab")  # noqa: SIM115 - child keeps it
        argv = [sys.executable, "-m", "hypetunnel", "controller", "run",
                "--state-dir", str(self.directory), "--api", listen,
                "--openflow", openflow or self.openflow_listen or self.openflow_target,
                *self.extra_args]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._record.write_text(json.dumps({"pid": proc.pid, "api_url": url,
                                            "api_port": None if self.netns else port}))
        wait_until(lambda: self._healthy(url, self.ca) or proc.poll() is not None, 30,
                   f"the controller API on {url}")
        if proc.poll() is not None:
            tail = (self.directory / "controller.log").read_text()[-2000:]
            raise LabError(f"the controller exited with {proc.returncode}:\n{tail}")
        return url

    @staticmethod
    def _healthy(url: str, ca: Path | None = None) -> bool:
        try:
            with ApiClient(url, timeout=0.5, ca=ca) as api:
                api.healthz()
                return True
        except ClientError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        try:
            wait_until(lambda: not _alive(pid), 10, f"controller pid {pid} to exit")
        except LabError:
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _alive(pid), 5, f"controller pid {pid} to die")

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def destroy(self) -> None:
        """kill -9 and remove everything in its state directory (store, token) but its log:
        a controller lost for good; start() then runs a new one in its place."""
        self.kill()
        for path in self.directory.iterdir() if self.directory.is_dir() else ():
            if path.name == "controller.log":
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    return pid_alive(pid)
