"""Unit tests never read the developer's own client configuration or token."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypetunnel.pki import init_ca, issue


@pytest.fixture(autouse=True)
def _no_user_client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPETUNNEL_CONFIG", str(tmp_path / "no-such-config.yaml"))
    for name in ("HYPETUNNEL_TOKEN", "HYPETUNNEL_PROFILE", "HYPETUNNEL_CA"):
        monkeypatch.delenv(name, raising=False)


# A CA with certificates for two hypervisors and the controller, and a second CA that also
# signed an "hv1" (an impostor's): shared by the PKI and the TLS tests.
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    init_ca(d)
    for name in ("hv1", "hv2", "controller"):
        issue(d, name)
    return d


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("other-pki")
    init_ca(d, common_name="Someone else's CA")
    issue(d, "hv1")
    return d
