"""Unit tests never read the developer's own client configuration or token."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_user_client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPETUNNEL_CONFIG", str(tmp_path / "no-such-config.yaml"))
    for name in ("HYPETUNNEL_TOKEN", "HYPETUNNEL_PROFILE", "HYPETUNNEL_CA"):
        monkeypatch.delenv(name, raising=False)
