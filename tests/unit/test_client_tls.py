"""Which CA a client verifies the API against: --ca / HYPETUNNEL_CA, else the lab's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient, ClientError
from hypetunnel.pki import init_ca


def _lab(root: Path, name: str, tls: bool) -> Path:
    (root / name).mkdir(parents=True)
    pki = root / name / "pki"
    (root / name / "state.json").write_text(json.dumps(
        {"api_url": "unix:/nowhere", "tls_dir": str(pki) if tls else None}))
    if tls:
        init_ca(pki)
    return pki / "ca.crt"


def _ca_of(factory: object) -> object:
    return getattr(factory, "keywords", {}).get("ca")


def test_the_lab_ca_is_used_for_a_lab_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("HYPETUNNEL_LAB_DIR", str(tmp_path))
    ca = _lab(tmp_path, "one", tls=True)
    assert _ca_of(CliState()._factory()) == ca  # the only lab
    assert _ca_of(CliState(lab="one")._factory()) == ca
    explicit = tmp_path / "mine.crt"
    assert _ca_of(CliState(lab="one", ca=explicit)._factory()) == explicit
    # An explicit API is nobody's lab: no CA is guessed for it.
    assert _ca_of(CliState(api="https://10.0.0.1:8650")._factory()) is None


def test_an_insecure_lab_has_no_ca_and_injected_factories_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPETUNNEL_LAB_DIR", str(tmp_path))
    _lab(tmp_path, "plain", tls=False)
    assert _ca_of(CliState()._factory()) is None

    def injected(url: str) -> ApiClient:
        return ApiClient(url)

    assert CliState(ca=tmp_path / "x.crt", client_factory=injected)._factory() is injected


def test_a_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="ca: cannot load the CA file"):
        ApiClient("https://127.0.0.1:1", ca=tmp_path / "nope.crt")


def test_the_ca_option_and_variable_reach_the_cli_state(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path | None] = []
    state = CliState(client_factory=lambda url: ApiClient(url))
    original = CliState._factory

    def spy(self: CliState) -> object:
        seen.append(self.ca)
        return original(self)

    monkeypatch.setattr(CliState, "_factory", spy)
    monkeypatch.setenv("HYPETUNNEL_CA", str(tmp_path / "env.crt"))
    CliRunner().invoke(app, ["--api", "http://127.0.0.1:1", "status"], obj=state)
    CliRunner().invoke(app, ["--api", "http://127.0.0.1:1", "--ca", str(tmp_path / "opt.crt"),
                             "status"], obj=state)
    assert seen == [tmp_path / "env.crt", tmp_path / "opt.crt"]


def test_a_lab_client_gets_both_the_labs_token_and_its_ca(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYPETUNNEL_LAB_DIR", str(tmp_path))
    ca = _lab(tmp_path, "both", tls=True)
    (tmp_path / "both" / "controller").mkdir()
    (tmp_path / "both" / "controller" / "admin.token").write_text("ht.admin.z\n")
    keywords = getattr(CliState(lab="both")._factory(), "keywords", {})
    assert keywords == {"token": "ht.admin.z", "ca": ca}
