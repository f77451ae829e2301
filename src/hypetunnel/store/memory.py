"""In-memory Store: same semantics as the SQLite one (documents are JSON-copied in and out)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from hypetunnel.store.base import StaleRevision, StoreSnapshot


class MemoryStore:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Any]] = {}
        self._revision = 0
        self._lock = threading.Lock()
        self.commits = 0  # number of non-empty commits, for tests

    def load(self) -> StoreSnapshot:
        with self._lock:
            return StoreSnapshot(self._revision, copy.deepcopy(self._items))

    def commit(
        self,
        puts: Mapping[str, dict[str, Any]],
        deletes: Iterable[str],
        *,
        expect_revision: int | None = None,
    ) -> int:
        deletes = list(deletes)
        # Encode before touching anything, like SQLite does: a bad document writes nothing.
        encoded = {key: json.dumps(value) for key, value in puts.items()}
        with self._lock:
            if expect_revision is not None and expect_revision != self._revision:
                raise StaleRevision(expect_revision, self._revision)
            if not puts and not deletes:
                return self._revision
            for key in deletes:
                self._items.pop(key, None)
            for key, text in encoded.items():
                self._items[key] = json.loads(text)
            self._revision += 1
            self.commits += 1
            return self._revision

    def revision(self) -> int:
        with self._lock:
            return self._revision

    def close(self) -> None:
        pass
