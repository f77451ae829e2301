"""Which member of a controller pair answered as active last time, kept in a small JSON file.

Only a hint to answer faster (the pool still asks the members): a file that cannot be read or
written is ignored.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def default_cache_path() -> Path:
    """$HYPETUNNEL_CACHE_DIR, else $XDG_CACHE_HOME/hypetunnel, else ~/.cache/hypetunnel."""
    base = os.environ.get("HYPETUNNEL_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "hypetunnel")
    return Path(base) / "active-controller.json"


@dataclass(frozen=True, slots=True)
class LastActive:
    url: str
    term: int


class ActiveCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def _key(urls: list[str]) -> str:
        return ",".join(sorted(urls))  # one entry per pair, however its URLs are ordered

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, urls: list[str]) -> LastActive | None:
        entry = self._read().get(self._key(urls))
        if not isinstance(entry, dict):
            return None
        url, term = entry.get("url"), entry.get("term")
        if isinstance(url, str) and url in urls and isinstance(term, int):
            return LastActive(url, term)
        return None

    def put(self, urls: list[str], active: LastActive) -> None:
        data = self._read()
        if data.get(self._key(urls)) == {"url": active.url, "term": active.term}:
            return
        data[self._key(urls)] = {"url": active.url, "term": active.term}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: concurrent CLI runs never read half a file.
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".active-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError:
            pass
