"""The bootstrap admin token's file appears only once its record is committed, so whoever
finds the file can use it at once; a crash on either side of the commit leaves no admin token
that nobody holds and no file whose token is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypetunnel.api.auth import Principal
from hypetunnel.api.tokens import TokenRegistry
from hypetunnel.api.tokens_bootstrap import pending_file, try_bootstrap
from hypetunnel.controller.service import FabricService
from hypetunnel.store.memory import MemoryStore


class WatchedStore(MemoryStore):
    """Records, at every commit, whether the token file was already there."""

    def __init__(self, token_file: Path) -> None:
        super().__init__()
        self.token_file = token_file
        self.file_at_commit: list[bool] = []

    def commit(self, puts: Any, deletes: Any, **kw: Any) -> int:
        self.file_at_commit.append(self.token_file.exists())
        return super().commit(puts, deletes, **kw)


def test_the_file_appears_after_the_commit_and_its_token_works(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    store = WatchedStore(path)
    tokens = TokenRegistry(FabricService(store))
    assert try_bootstrap(tokens, tmp_path)
    assert store.file_at_commit == [False]
    assert path.stat().st_mode & 0o777 == 0o600 and not pending_file(path).exists()
    tokens.reload()
    assert isinstance(tokens.verify(path.read_text().strip()), Principal)
    assert try_bootstrap(tokens, tmp_path) and store.file_at_commit == [False]  # none again


def test_a_crash_after_the_commit_finishes_the_rename_at_the_next_start(tmp_path: Path) -> None:
    store = MemoryStore()
    tokens = TokenRegistry(FabricService(store))
    _, token = tokens.create("admin", "admin")
    pending_file(tmp_path / "admin.token").write_text(token + "\n")  # the rename never ran
    assert try_bootstrap(TokenRegistry(FabricService(store)), tmp_path)
    assert (tmp_path / "admin.token").read_text().strip() == token
    assert not pending_file(tmp_path / "admin.token").exists()


def test_a_crash_before_the_commit_makes_a_new_token(tmp_path: Path) -> None:
    pending_file(tmp_path / "admin.token").write_text("ht.admin." + "A" * 43 + "\n")
    store = MemoryStore()
    tokens = TokenRegistry(FabricService(store))
    assert try_bootstrap(tokens, tmp_path)
    token = (tmp_path / "admin.token").read_text().strip()
    assert token != "ht.admin." + "A" * 43
    tokens.reload()
    assert isinstance(tokens.verify(token), Principal)
    assert not pending_file(tmp_path / "admin.token").exists()
