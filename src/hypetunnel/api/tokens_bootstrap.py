"""The bootstrap admin token: the first token, written by the controller at its first start.

`<state-dir>/admin.token` (mode 0600) holds it; the store holds its hash like any other. It is
made only while no valid admin token exists in the store, so the second controller of a pair
(which shares the store) makes none, and neither does a restart. Only a controller that may
write makes it: a standby waits until the active one has (and then finds it in the store).
The token is kept on disk before its record is stored, but under a pending name
(`admin.token.pending`), and renamed to `admin.token` only once the record is committed: whoever
finds the file (an operator, Ansible, the lab) can use it at once. A crash before the commit
leaves a pending file whose token the store does not know, replaced at the next start; a crash
after it leaves a pending file with a valid token, renamed at the next start. Never an admin
token nobody holds, and never a file whose token is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from hypetunnel.api.auth import Principal, Role
from hypetunnel.api.tokens import TokenRegistry
from hypetunnel.client.config import TOKEN_FILE

log = logging.getLogger(__name__)

RETRY_INTERVAL = 0.2  # seconds between looks while this controller cannot write (standby)


def write_secret(path: Path, text: str) -> None:
    """`path` := text, atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT would keep an old file's wider mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (text + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def pending_file(path: Path) -> Path:
    return path.with_name(path.name + ".pending")


def try_bootstrap(tokens: TokenRegistry, state_dir: Path) -> bool:
    """True once an admin token exists (made now, or found); False: try again later."""
    tokens.reload()
    path = state_dir / TOKEN_FILE
    pending = pending_file(path)
    if tokens.has_admin():
        _finish_pending(tokens, pending, path)
        return True
    try:
        tokens.create(tokens.bootstrap_name(), Role.ADMIN.value,
                      before_commit=lambda token: write_secret(pending, token))
    except Exception as e:  # a standby's store refuses writes; the active will make it
        with contextlib.suppress(OSError):
            pending.unlink()
        log.debug("bootstrap admin token not stored yet: %s", e)
        return False
    os.replace(pending, path)
    log.info("bootstrap admin token written to %s", path)
    return True


def _finish_pending(tokens: TokenRegistry, pending: Path, path: Path) -> None:
    """A pending token left by a crash: renamed if the store has its record, else removed."""
    try:
        token = pending.read_text().strip()
    except FileNotFoundError:
        return
    if isinstance(tokens.verify(token), Principal):
        os.replace(pending, path)
        log.info("bootstrap admin token written to %s (stored before a restart)", path)
    else:
        pending.unlink(missing_ok=True)


async def ensure_bootstrap_token(tokens: TokenRegistry, state_dir: Path,
                                 interval: float = RETRY_INTERVAL) -> None:
    while True:
        try:
            if await asyncio.to_thread(try_bootstrap, tokens, state_dir):
                return
        except Exception as e:  # the store is unreachable: keep trying, the API says 503
            log.warning("cannot check for an admin token: %s", e)
        await asyncio.sleep(interval)
