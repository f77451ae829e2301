"""The controller's systemd unit: shipped as package data, rendered for a host's paths.

The file in the package (data/hypetunnel-controller.service) is itself the production unit
(venv /opt/hypetunnel/venv, config /etc/hypetunnel/controller.yaml, state /var/lib/hypetunnel,
user hypetunnel); `render` rewrites just the lines that name those, so the file stays the one
source of the unit (the Ansible controller role writes what `hypetunnel controller unit` prints).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

UNIT_NAME = "hypetunnel-controller.service"


@dataclass(frozen=True)
class UnitPaths:
    venv: Path = Path("/opt/hypetunnel/venv")
    config: Path = Path("/etc/hypetunnel/controller.yaml")
    state_dir: Path = Path("/var/lib/hypetunnel")
    user: str = "hypetunnel"


def shipped() -> str:
    return files("hypetunnel").joinpath("data", UNIT_NAME).read_text()


def _check(paths: UnitPaths) -> None:
    for name in ("venv", "config", "state_dir"):
        path = getattr(paths, name)
        if not path.is_absolute():
            raise ValueError(f"{name}: {str(path)!r} must be an absolute path (systemd "
                             "resolves none)")
        if any(c.isspace() or c in "%\\\"'$;" for c in str(path)):
            raise ValueError(f"{name}: {str(path)!r}: whitespace, quotes, %, $, ; and \\ are "
                             "not supported in a unit's paths")
    if not paths.user or not all(c.isalnum() or c in "_-." for c in paths.user):
        raise ValueError(f"user: {paths.user!r} is not a user name")


def render(paths: UnitPaths | None = None) -> str:
    """The shipped unit with `paths` in its ExecStart, ReadWritePaths, User and Group."""
    paths = paths or UnitPaths()
    _check(paths)
    command = shlex.join([str(paths.venv / "bin" / "hypetunnel"), "controller", "run",
                          "--config", str(paths.config)])
    replace = {"ExecStart": command, "ReadWritePaths": str(paths.state_dir),
               "User": paths.user, "Group": paths.user}
    out, seen = [], set()
    for line in shipped().splitlines():
        key, sep, _ = line.partition("=")
        if sep and key in replace:
            line = f"{key}={replace[key]}"
            seen.add(key)
        out.append(line)
    missing = set(replace) - seen
    if missing:  # the shipped file lost a line render relies on: a packaging bug
        raise RuntimeError(f"{UNIT_NAME} has no {', '.join(sorted(missing))} line")
    return "\n".join(out) + "\n"
