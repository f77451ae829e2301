"""Running commands for the lab: in the root namespace or inside a named network namespace."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

from hypetunnel.errors import HypeTunnelError


class LabError(HypeTunnelError):
    """A lab step failed; the message carries the command and what it printed."""


def run(cmd: Sequence[str], netns: str | None = None, check: bool = True,
        env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    try:
        cp = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout}s: {' '.join(full)}") from e
    if check and cp.returncode != 0:
        raise LabError(f"{' '.join(full)} -> exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll a condition with a deadline; never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
