"""The file of `lab up --bare`: an intent file or a host list; bad input names the field and
creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.cli.main import app
from hypetunnel.errors import IntentInvalid
from hypetunnel.lab.attach import parse_api_urls
from hypetunnel.lab.barefile import load_bare_file
from hypetunnel.lab.proc import LabError
from hypetunnel.lab.state import DEFAULT_ROOT
from hypetunnel.model.loader import load_intent_file


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_host_list(tmp_path: Path) -> None:
    spec = load_bare_file(write(tmp_path, {"hosts": [
        {"name": "hv1"}, {"name": "hv-2", "underlay_ip": "172.31.0.50"}]}))
    assert [(h.name, h.underlay_ip) for h in spec.hosts] == [("hv1", None),
                                                              ("hv-2", "172.31.0.50")]


def test_an_intent_file_gives_its_hypervisors() -> None:
    intent = load_intent_file(bundled_example())
    spec = load_bare_file(bundled_example())
    assert [h.name for h in spec.hosts] == [h.name for h in intent.hypervisors]
    assert spec.underlay_mtu == intent.fabric.underlay_mtu


@pytest.mark.parametrize(("doc", "field", "reason"), [
    ({"hosts": []}, "hosts", "no hosts"),
    ({"hypervisors": []}, "hypervisors", "no hosts"),
    ({"tenants": []}, "hosts", "missing"),
    ([1, 2], "hosts", "missing"),
    ({"hosts": "hv1"}, "hosts", "must be a list"),
    ({"hosts": ["hv1"]}, "hosts[0]", "must be a mapping"),
    ({"hosts": [{"nom": "hv1"}]}, "hosts[0].nom", "unknown key"),
    ({"hosts": [{"name": 7}]}, "hosts[0].name", "not a string"),
    ({"hosts": [{"name": "hv1"}, {"name": "Bad_Name"}]}, "hosts[1].name", "must match"),
    ({"hosts": [{"name": "op"}]}, "hosts[0].name", "reserved"),
    ({"hosts": [{"name": "vm-1"}]}, "hosts[0].name", "vm-"),
    ({"hosts": [{"name": "hv1"}, {"name": "hv1"}]}, "hosts[1].name", "duplicate"),
    ({"hosts": [{"name": "hv1", "underlay_ip": "1.2.3"}]}, "hosts[0].underlay_ip",
     "not an IPv4 address"),
    ({"hosts": [{"name": "hv1"}], "extra": 1}, "extra", "unknown key"),
])
def test_bad_input_names_the_field(tmp_path: Path, doc: object, field: str,
                                   reason: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(IntentInvalid) as e:
        load_bare_file(path)
    assert f"{path}: {field}: " in str(e.value) and reason in str(e.value), str(e.value)


def test_the_cli_refuses_bad_input_before_building_anything(tmp_path: Path) -> None:
    name = "barebadinput"
    path = write(tmp_path, {"hosts": [{"name": "hv1"}, {"name": "HV2"}]})
    result = CliRunner().invoke(app, ["lab", "up", "--bare", str(path), "--name", name])
    assert result.exit_code == 1
    assert "hosts[1].name" in result.output and "HV2" in result.output, result.output
    assert not (DEFAULT_ROOT / name).exists()


@pytest.mark.parametrize(("urls", "reason"), [
    ([], "no URL"), (["http://100.64.0.11:8650"], "not an https"),
    (["https://100.64.0.11:99999"], "out of range"), (["unix:/tmp/x"], "not an https"),
])
def test_attach_refuses_bad_api_urls(urls: list[str], reason: str) -> None:
    with pytest.raises(LabError, match=f"--api: .*{reason}|--api: {reason}"):
        parse_api_urls(urls)
