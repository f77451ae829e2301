"""The client's configuration file: named profiles, each an API URL, a token and a CA file.

~/.config/hypetunnel/config.yaml (HYPETUNNEL_CONFIG overrides the path):

    default: prod            # the profile used without --profile (optional)
    profiles:
      prod:
        api: https://ctl1.example.net:8650,https://ctl2.example.net:8650
        token: ht.ops.<secret>
        ca_file: /etc/hypetunnel/ca.crt
      acme:
        api: https://ctl1.example.net:8650
        token: ht.acme-admin.<secret>

The file holds secrets: it is refused when others may read it (like ssh's keys).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hypetunnel.client.errors import ClientError
from hypetunnel.errors import FieldError

ENV_CONFIG = "HYPETUNNEL_CONFIG"
PROFILE_KEYS = ("api", "token", "ca_file")
TOKEN_FILE = "admin.token"  # the controller's bootstrap admin token, in its state directory


def default_config_path() -> Path:
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hypetunnel" / "config.yaml"


@dataclass(frozen=True)
class Profile:
    name: str
    api: str | None = None
    token: str | None = None
    ca_file: str | None = None


def _problem(path: Path, field: str, reason: str) -> ClientError:
    return ClientError([FieldError(field, reason)], source=str(path))


def load_profiles(path: Path) -> tuple[dict[str, Profile], str | None]:
    """(profiles by name, the default profile's name); nothing when the file does not exist."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except OSError as e:
        raise _problem(path, "", f"cannot read: {e.strerror}") from e
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _problem(path, "", f"holds tokens but others may read it (mode "
                                 f"{stat.S_IMODE(mode):o}); chmod 600 {path}")
    try:
        doc: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise _problem(path, "", f"not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise _problem(path, "", "must be a mapping with `profiles`")
    unknown = sorted(set(doc) - {"default", "profiles"})
    if unknown:
        raise _problem(path, unknown[0], "unknown key (allowed: default, profiles)")
    raw = doc.get("profiles") or {}
    if not isinstance(raw, dict):
        raise _problem(path, "profiles", "must be a mapping of profile names")
    profiles = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise _problem(path, f"profiles.{name}", "must be a mapping")
        for key, value in body.items():
            if key not in PROFILE_KEYS:
                raise _problem(path, f"profiles.{name}.{key}",
                               f"unknown key (allowed: {', '.join(PROFILE_KEYS)})")
            if not isinstance(value, str) or not value:
                raise _problem(path, f"profiles.{name}.{key}", "must be a non-empty string")
        profiles[str(name)] = Profile(str(name), **{k: body.get(k) for k in PROFILE_KEYS})
    default = doc.get("default")
    if default is not None and default not in profiles:
        raise _problem(path, "default", f"no profile named {default!r}")
    return profiles, default


def select_profile(path: Path, name: str | None) -> Profile | None:
    """The profile `name` (an error if it does not exist), else the file's default one."""
    profiles, default = load_profiles(path)
    if name is not None:
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise _problem(path, "--profile", f"no profile named {name!r} (profiles: {known})")
        return profiles[name]
    return profiles.get(default) if default else None


def read_token_file(path: Path) -> str | None:
    """A token written to a file (the controller's bootstrap token), or None if unreadable."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def find_token(state_dirs: list[Path]) -> str | None:
    """The bootstrap admin token of the first of these controller state directories that has
    one (in a pair, whichever controller was active first wrote it)."""
    for d in state_dirs:
        token = read_token_file(d / TOKEN_FILE)
        if token:
            return token
    return None
