"""The bootstrap admin token: the first token, written by the controller at its first start.

`<state-dir>/admin.token` (mode 0600) holds it; the store holds its hash like any other. It is
made only while no valid admin token exists in the store, so the second controller of a pair
(which shares the store) makes none, and neither does a restart. Only a controller that may
write makes it: a standby waits until the active one has (and then finds it in the store).
The file is written before the record is stored: a crash in between leaves a file whose token
the store does not know, replaced at the next start, never an admin token nobody holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from hypetunnel.api.auth import Role
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


def try_bootstrap(tokens: TokenRegistry, state_dir: Path) -> bool:
    """True once an admin token exists (made now, or found); False: try again later."""
    tokens.reload()
    if tokens.has_admin():
        return True
    path = state_dir / TOKEN_FILE
    try:
        tokens.create(tokens.bootstrap_name(), Role.ADMIN.value,
                      before_commit=lambda token: write_secret(path, token))
    except Exception as e:  # a standby's store refuses writes; the active will make it
        with contextlib.suppress(OSError):
            path.unlink()
        log.debug("bootstrap admin token not stored yet: %s", e)
        return False
    log.info("bootstrap admin token written to %s", path)
    return True


async def ensure_bootstrap_token(tokens: TokenRegistry, state_dir: Path,
                                 interval: float = RETRY_INTERVAL) -> None:
    while True:
        try:
            if await asyncio.to_thread(try_bootstrap, tokens, state_dir):
                return
        except Exception as e:  # the store is unreachable: keep trying, the API says 503
            log.warning("cannot check for an admin token: %s", e)
        await asyncio.sleep(interval)
