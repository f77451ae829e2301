"""The controller's configuration file (`controller run --config FILE`): one key per flag.

A YAML mapping; each key is a `controller run` flag without its `--`, `-` written `_`
(`--state-dir` is `state_dir`). Flags given on the command line win over the file. The model is
strict (a string is not a number, a single string is not a list) and refuses unknown keys: a
typo must not silently fall back to a default on a production host. Every problem names its key.

This is the configuration as the operator writes it; `to_daemon()` turns it into the runtime
`DaemonConfig`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hypetunnel.errors import FieldError, HypeTunnelError

if TYPE_CHECKING:
    from hypetunnel.daemon import DaemonConfig

# Paths come from YAML as strings: the one place a conversion is wanted.
LaxPath = Annotated[Path, Field(strict=False)]
LogLevel = Literal["debug", "info", "warning"]
LogFormat = Literal["text", "json"]


class ControllerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    state_dir: LaxPath = Path("/var/lib/hypetunnel")
    api: str = "127.0.0.1:8650"
    openflow: list[str] = Field(default_factory=lambda: ["tcp:0.0.0.0:6653"], min_length=1)
    switch_target: list[str] | None = None
    etcd: list[str] | None = None
    node: str | None = None
    peer: str | None = None
    api_rate: float = Field(default=200.0, ge=0)
    api_burst: float = Field(default=400.0, ge=1)
    tls_dir: LaxPath | None = None
    tls_name: str | None = None
    peer_name: list[str] = Field(default_factory=list)
    log_level: LogLevel = "info"
    log_format: LogFormat = "json"
    webhook: list[str] = Field(default_factory=list)
    flow_audit_interval: float = Field(default=5.0, gt=0)
    usage_interval: float = Field(default=10.0, gt=0)

    def problems(self) -> list[FieldError]:
        """What is wrong across keys (each value alone was valid); path = the key. Other keys
        a reason names are "{key}" placeholders: written as keys or flags by the caller."""
        from hypetunnel.southbound.openflow.server import parse_target
        from hypetunnel.store.etcd import check_schemes

        found: list[FieldError] = []
        for target in self.openflow:
            try:
                parse_target(target, tls=self.tls_dir is not None)
            except HypeTunnelError as e:
                found.append(FieldError("openflow", str(e)))
        if not self.api.startswith("unix:"):
            _, sep, port = self.api.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                found.append(FieldError("api", f"{self.api!r}: expected HOST:PORT or "
                                               "unix:/path"))
        if self.tls_name is not None and self.tls_dir is None:
            found.append(FieldError("tls_name", "needs {tls_dir}"))
        if self.etcd:
            try:
                check_schemes(self.etcd, tls=self.tls_dir is not None)
            except ValueError as e:
                found.append(FieldError("etcd", str(e)))
            for key in ("node", "peer"):
                if getattr(self, key) is None:
                    found.append(FieldError(key, "needed with {etcd} (the HA pair)"))
            if self.tls_dir is not None and not self.peer_name:
                found.append(FieldError("peer_name", "needed with {etcd} and {tls_dir}: every "
                                                     "controller of the pair (its certificate's "
                                                     "CN)"))
        return found

    def tls_identity_name(self) -> str:
        return self.tls_name or self.node or "controller"

    def to_daemon(self) -> DaemonConfig:
        from hypetunnel.daemon import DaemonConfig
        from hypetunnel.pki import TlsConfig

        tls = (TlsConfig(self.tls_dir, self.tls_identity_name()) if self.tls_dir is not None
               else None)
        return DaemonConfig(state_dir=self.state_dir, api=self.api, openflow=list(self.openflow),
                            switch_targets=list(self.switch_target) if self.switch_target
                            else None,
                            etcd=list(self.etcd) if self.etcd else None, node=self.node,
                            peer=self.peer, api_rate=self.api_rate, api_burst=self.api_burst,
                            tls=tls, peer_names=list(self.peer_name),
                            webhooks=list(self.webhook),
                            flow_audit_interval=self.flow_audit_interval,
                            usage_interval=self.usage_interval)


KEYS: tuple[str, ...] = tuple(ControllerSettings.model_fields)
DEFAULTS = ControllerSettings()


class ConfigInvalid(HypeTunnelError):
    """The configuration (file or flags) is wrong. Each error's path says where: "FILE: key
    'x'" for a file's key, "--x" for a flag."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def file_key(source: str, key: str) -> str:
    return f"{source}: key {key!r}"


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def read_file(path: Path) -> dict[str, Any]:
    """The file's mapping, unvalidated; an empty file is an empty mapping."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigInvalid([FieldError(str(path), f"cannot read: {e.strerror or e}")]) from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigInvalid([FieldError(str(path), f"{where}not valid YAML: {problem}")]) from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigInvalid([FieldError(str(path), "expected a mapping of keys (key: value), "
                                                   f"got {type(doc).__name__}")])
    return doc


def _errors(e: ValidationError, where: Callable[[str], str]) -> list[FieldError]:
    found = []
    for err in e.errors():
        key, *rest = err["loc"] or ("",)
        inside = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
        reason = err["msg"]
        value = err.get("input")
        if isinstance(value, str | int | float | bool | None) and err["type"] != "missing":
            reason += f", got {value!r}"[:120]
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            reason = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else
                                      f"; the keys are: {', '.join(KEYS)}")
        found.append(FieldError(where(str(key)) + inside, reason))
    return found


def settings(file_doc: Mapping[str, Any], overrides: Mapping[str, Any],
             source: str | None, *, checks: bool = True) -> ControllerSettings:
    """The file's keys, then the flags given on the command line over them; validated
    (`checks=False`: each value, not what running a controller needs across keys).
    A problem names the file's key or the flag, wherever its value came from."""
    def where(key: str) -> str:
        return file_key(source, key) if source is not None and key not in overrides \
            else flag_name(key)

    try:  # the file alone first: its mistakes are reported as its own, even if overridden
        ControllerSettings.model_validate(dict(file_doc))
    except ValidationError as e:
        raise ConfigInvalid(_errors(e, lambda key: file_key(source or "config", key))) from e
    try:
        merged = ControllerSettings.model_validate({**file_doc, **overrides})
    except ValidationError as e:
        raise ConfigInvalid(_errors(e, where)) from e
    problems = merged.problems() if checks else []
    if problems:
        def named(reason: str) -> str:  # not str.format: a value quoted in it may hold braces
            for k in KEYS:
                reason = reason.replace("{" + k + "}", k if source is not None
                                        and k not in overrides else flag_name(k))
            return reason

        raise ConfigInvalid([FieldError(where(p.path), named(p.reason)) for p in problems])
    return merged


def load(path: Path | None, overrides: Mapping[str, Any] | None = None, *,
         checks: bool = True) -> ControllerSettings:
    """The settings from `path` (if any) with `overrides` (flags given explicitly) over it."""
    doc = read_file(path) if path is not None else {}
    return settings(doc, overrides or {}, str(path) if path is not None else None,
                    checks=checks)
