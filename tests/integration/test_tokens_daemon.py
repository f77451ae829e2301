"""Tokens on the real daemon with its SQLite store: the bootstrap admin token, tokens made
through the API, and a revocation all survive a restart of the controller."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypetunnel.client import ApiClient, ApiError
from hypetunnel.lab.controller import free_port
from hypetunnel.lab.proc import wait_until

SRC = Path(__file__).resolve().parents[2] / "src"


@contextmanager
def daemon(state: Path, port: int) -> Iterator[str]:
    """`hypetunnel controller run` on `state`; yields its API URL; stopped with SIGTERM."""
    sock = Path(tempfile.mkdtemp(prefix=f"htk-{os.getpid()}-")) / "of.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log = state.parent / f"controller-{port}.log"
    state.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypetunnel", "controller", "run", "--state-dir", str(state),
             "--api", f"127.0.0.1:{port}", "--openflow", f"unix:{sock}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            assert proc.poll() is None, f"controller exited: {log.read_text()[-2000:]}"
            try:
                return ApiClient(url, timeout=0.5).healthz() == {"ok": True}
            except Exception:
                return False

        wait_until(up, 30, "the controller API", interval=0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        sock.unlink(missing_ok=True)
        sock.parent.rmdir()


def status_of(url: str, token: str) -> int:
    try:
        ApiClient(url, token=token).status()
    except ApiError as e:
        return e.status
    return 200


def test_tokens_and_revocations_survive_a_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    token_file = state / "admin.token"
    with daemon(state, port) as url:
        wait_until(token_file.exists, 10, "the bootstrap admin token", interval=0.05)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        bootstrap = token_file.read_text().strip()
        with ApiClient(url, token=bootstrap) as admin:
            operator = admin.create_token("ops", "operator")["token"]
            gone = admin.create_token("gone", "operator")["token"]
            admin.revoke_token("gone")
        assert status_of(url, operator) == 200
        assert status_of(url, gone) == 401
    with daemon(state, port) as url:
        assert token_file.read_text().strip() == bootstrap  # not made again
        assert status_of(url, bootstrap) == 200
        assert status_of(url, operator) == 200
        assert status_of(url, gone) == 401
        with ApiClient(url, token=bootstrap) as admin:
            tokens = {t["name"]: t for t in admin.list_tokens()}
        assert set(tokens) == {"admin", "ops", "gone"}  # one admin token: no second bootstrap
        assert tokens["gone"]["state"] == "revoked"
        assert all("sha256" not in t and "token" not in t for t in tokens.values())
    # The store holds hashes only: no secret is anywhere in it.
    db = (state / "store.db").read_bytes()
    for token in (bootstrap, operator, gone):
        assert token.split(".")[2].encode() not in db


def test_a_controller_whose_admin_tokens_are_all_revoked_makes_a_new_one_at_restart(
        tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    token_file = state / "admin.token"
    with daemon(state, port) as url:
        wait_until(token_file.exists, 10, "the bootstrap admin token", interval=0.05)
        first = token_file.read_text().strip()
        with ApiClient(url, token=first) as admin:
            admin.revoke_token("admin")
        assert status_of(url, first) == 401
    with daemon(state, port) as url:
        wait_until(lambda: token_file.read_text().strip() != first, 10, "a new bootstrap token",
                   interval=0.05)
        second = token_file.read_text().strip()
        assert second.startswith("ht.admin-2.")  # the revoked one keeps its name
        assert status_of(url, second) == 200 and status_of(url, first) == 401
