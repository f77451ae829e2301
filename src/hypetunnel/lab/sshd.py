"""One OpenSSH server per bare lab host, as a freshly installed Debian host runs one.

Everything it reads and writes lives under the host's root directory (<lab dir>/hosts/<name>):
its sshd_config, host key, root's authorized_keys, pid file and log, so that hosts sharing
this machine's filesystem never share a key or a pid file. It listens on the host's
out-of-band address only and lets root in with the operator's key alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hypetunnel.lab.proc import LabError, pid_alive, run, wait_until

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself for every connection: an absolute path
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; checked at start-up
SSH_PORT = 22
KEY_TYPE = "ed25519"


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at path (kept if it exists); returns the public key line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", KEY_TYPE, "-N", "", "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


class HostSshd:
    """The sshd of the host whose root directory is `root`, listening on `address`."""

    def __init__(self, root: Path, address: str, netns: str) -> None:
        self.root = root
        self.address = address
        self.netns = netns

    @property
    def config(self) -> Path:
        return self.root / "etc/ssh/sshd_config"

    @property
    def host_key(self) -> Path:
        return self.root / f"etc/ssh/ssh_host_{KEY_TYPE}_key"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "root/.ssh/authorized_keys"

    @property
    def pidfile(self) -> Path:
        return self.root / "run/sshd.pid"

    @property
    def log(self) -> Path:
        return self.root / "var/log/sshd.log"

    def host_public_key(self) -> str:
        """"<type> <base64>" of the host key (a known_hosts entry without its host part)."""
        return " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])

    def configure(self, operator_key: str, host: str) -> None:
        """Host key, authorized_keys and sshd_config (idempotent)."""
        for d in ("etc/ssh", "run", "var/log"):
            (self.root / d).mkdir(mode=0o755, parents=True, exist_ok=True)
        ssh_dir = self.authorized_keys.parent
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_strict_modes(ssh_dir)
        keygen(self.host_key, f"root@{host}")
        self.authorized_keys.write_text(operator_key + "\n")
        self.authorized_keys.chmod(0o600)
        self.config.write_text(f"""\
# sshd of bare lab host {host} (hypetunnel lab up --bare): out-of-band address only,
# root by the operator's key only.
ListenAddress {self.address}:{SSH_PORT}
HostKey {self.host_key}
PidFile {self.pidfile}
AuthorizedKeysFile {self.authorized_keys}
PermitRootLogin prohibit-password
AllowUsers root
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# StrictModes stays on. Every host shares this machine's filesystem, so sshd checks each
# directory from authorized_keys up to "/" (it is not under root's home); that holds because
# the lab directory tree is root-owned and not group/world-writable (check_strict_modes
# refuses a lab directory where it would not, e.g. under /tmp, instead of switching it off).
StrictModes yes
X11Forwarding no
PrintMotd no
# Ansible copies files with sftp; the built-in server needs no helper binary.
Subsystem sftp internal-sftp
""")

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid()
        return pid is not None and pid_alive(pid)

    def start(self) -> None:
        """Start the daemon (it forks into the background) and wait until it listens."""
        if self.running():
            return
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        run([SSHD, "-t", "-f", str(self.config)], netns=self.netns)  # config errors, readably
        self.pidfile.unlink(missing_ok=True)
        run([SSHD, "-f", str(self.config), "-E", str(self.log)], netns=self.netns)
        wait_until(lambda: self.running() and self.listening(), 10,
                   f"sshd on {self.address}:{SSH_PORT} in {self.netns}")

    def listening(self) -> bool:
        cp = run(["ss", "-Hltn", "src", f"{self.address}:{SSH_PORT}"], netns=self.netns,
                 check=False)
        return cp.returncode == 0 and bool(cp.stdout.strip())


def check_strict_modes(path: Path) -> None:
    """sshd's StrictModes refuses authorized_keys when any directory above it is writable by
    group or others or owned by someone else than root: say so now, naming the directory,
    rather than as a bare "Permission denied (publickey)" at the first login."""
    for d in [path, *path.parents]:
        st = os.stat(d)
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise LabError(f"{d} is writable by others or not owned by root: sshd "
                           "(StrictModes) would refuse the operator's key; put the lab "
                           "directory elsewhere (default /run/hypetunnel/labs)")
