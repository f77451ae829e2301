"""A controller daemon started from a config file, as its systemd unit starts it: the unit's
own ExecStart and Environment (rendered by `hypetunnel controller unit` for this venv)."""

from __future__ import annotations

import os
import shlex
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from hypetunnel.lab.proc import wait_until
from hypetunnel.service_unit import UnitPaths, render


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str  # https://127.0.0.1:PORT/api/v1
    ca: Path
    log: Path  # its stdout
    errors: Path  # its stderr

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=5,
                         verify=ssl.create_default_context(cafile=str(self.ca)))


def write_config(path: Path, **keys: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({k: str(v) if isinstance(v, Path) else v
                                    for k, v in keys.items()}))
    return path


def unit_command(config: Path, state_dir: Path) -> tuple[list[str], dict[str, str]]:
    """ExecStart's argv and the Environment= of the unit rendered for this venv and config."""
    text = render(UnitPaths(venv=Path(sys.prefix), config=config, state_dir=state_dir,
                            user="root"))
    argv: list[str] = []
    env: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = shlex.split(value)
        elif key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    assert argv, "the unit has no ExecStart"
    return argv, env


@contextmanager
def daemon(config: Path, state_dir: Path, port: int, ca: Path) -> Iterator[Running]:
    """The unit's command on `config` until the API answers (https with `ca`); SIGTERM after,
    and it must exit 0."""
    argv, env = unit_command(config, state_dir)
    log, errors = config.with_suffix(f".{port}.log"), config.with_suffix(f".{port}.err")
    with open(log, "ab") as out, open(errors, "ab") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env}, start_new_session=True)
    running = Running(proc, f"https://127.0.0.1:{port}/api/v1", ca, log, errors)
    try:
        def up() -> bool:
            assert proc.poll() is None, (f"controller exited: {log.read_text()[-3000:]}"
                                         f"{errors.read_text()[-3000:]}")
            try:
                return running.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "the controller API", interval=0.05)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
