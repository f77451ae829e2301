"""YAML -> Intent: the bundled example loads; bad files fail naming file, field path, line."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from hypetunnel.errors import IntentInvalid
from hypetunnel.model.intent import Intent
from hypetunnel.model.loader import format_path, load_intent_file, load_intent_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-hypervisors.yaml"

BASE = """\
fabric:
  encapsulation: vxlan
hypervisors:
  - name: hv1
tenants:
  - name: acme
    networks:
      - name: front
        cidr: 10.1.0.0/24
    vms:
      - name: web1
        network: front
        ip: 10.1.0.10
"""


def errors_of(text: str, source: str = "bad.yaml") -> IntentInvalid:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text(text, source)
    assert info.value.source == source
    assert str(info.value).startswith(f"{source}: ")
    return info.value


def test_example_loads_with_the_promised_shape() -> None:
    intent = load_intent_file(EXAMPLE)
    assert [h.name for h in intent.hypervisors] == ["hv1", "hv2", "hv3"]
    assert intent.fabric.encapsulation == "vxlan" and intent.fabric.underlay_mtu == 1500
    acme, globex = intent.tenant("acme"), intent.tenant("globex")
    assert acme is not None and globex is not None
    assert globex.encapsulation == "gre" and acme.encapsulation in (None, "vxlan")
    assert {(n.name, str(n.cidr)) for n in acme.networks} == {
        (n.name, str(n.cidr)) for n in globex.networks}
    # Every network spans at least two hypervisors.
    for t in intent.tenants:
        for n in t.networks:
            hosts = {v.hypervisor for v in t.vms if v.network == n.name}
            assert len(hosts) >= 2, f"{t.name}/{n.name} spans {hosts}"
    # Some hypervisor hosts only one tenant.
    tenants_on = {h.name: {t.name for t in intent.tenants for v in t.vms
                           if v.hypervisor == h.name} for h in intent.hypervisors}
    assert any(len(ts) == 1 for ts in tenants_on.values())
    # Identical IPs in different tenants.
    acme_ips = {v.ip for v in acme.vms if v.ip}
    assert acme_ips & {v.ip for v in globex.vms if v.ip}
    assert 8 <= sum(len(t.vms) for t in intent.tenants) <= 12


def test_packaged_example_is_the_same_file() -> None:
    packaged = resources.files("hypetunnel") / "examples" / "three-hypervisors.yaml"
    assert packaged.read_text() == EXAMPLE.read_text()


def test_minimal_text_loads() -> None:
    intent = load_intent_text(BASE)
    assert isinstance(intent, Intent)
    vm = intent.tenants[0].vms[0]
    assert (vm.name, vm.network, vm.hypervisor, vm.mac) == ("web1", "front", None, None)


def test_format_path() -> None:
    assert format_path(("tenants", 0, "vms", 2, "ip")) == "tenants[0].vms[2].ip"
    assert format_path(()) == ""


def test_malformed_yaml_names_file_and_line() -> None:
    text = BASE.replace("        cidr: 10.1.0.0/24\n", "        cidr: [10.1.0.0/24\n")
    err = errors_of(text)
    assert len(err.errors) == 1
    assert "malformed YAML at line" in err.errors[0].reason
    # The broken flow sequence is on line 9; the parser notices a little later.
    line = int(err.errors[0].reason.split("line ")[1].split(",")[0])
    assert 9 <= line <= 14


def test_tab_indentation_is_malformed() -> None:
    err = errors_of("fabric:\n\tencapsulation: vxlan\n")
    assert "malformed YAML at line 2" in err.errors[0].reason


def test_duplicate_yaml_key_is_an_error() -> None:
    text = BASE.replace("        ip: 10.1.0.10\n", "        ip: 10.1.0.10\n        ip: 10.1.0.11\n")
    err = errors_of(text)
    assert "duplicate key 'ip'" in err.errors[0].reason
    assert "line 14" in err.errors[0].reason


def test_unknown_key_names_path_line_and_allowed_keys() -> None:
    text = BASE.replace("        ip: 10.1.0.10\n", "        ip: 10.1.0.10\n        colour: red\n")
    err = errors_of(text)
    [e] = err.errors
    assert e.path == "tenants[0].vms[0].colour"
    assert "unknown key" in e.reason and "allowed: name, network, hypervisor, ip, mac" in e.reason
    assert "(line 14)" in e.reason


def test_bad_mac_and_bad_ip_are_reported_together() -> None:
    text = BASE.replace("        ip: 10.1.0.10\n", "        ip: 10.1.0.300\n        mac: zz\n")
    err = errors_of(text)
    by_path = {e.path: e.reason for e in err.errors}
    assert "not an IPv4 address" in by_path["tenants[0].vms[0].ip"]
    assert "(line 13)" in by_path["tenants[0].vms[0].ip"]
    assert "MAC address" in by_path["tenants[0].vms[0].mac"]


def test_multicast_mac_is_rejected() -> None:
    text = BASE.replace("        ip: 10.1.0.10\n", '        mac: "01:00:5e:00:00:01"\n')
    err = errors_of(text)
    assert err.errors[0].path == "tenants[0].vms[0].mac"
    assert "unicast" in err.errors[0].reason


def test_missing_required_field_points_at_the_object() -> None:
    text = BASE.replace("        network: front\n", "")
    err = errors_of(text)
    [e] = err.errors
    assert e.path == "tenants[0].vms[0].network"
    assert e.reason.startswith("required") and "(line 11)" in e.reason


def test_bad_name_and_bad_literal() -> None:
    text = BASE.replace("name: acme", "name: Acme").replace("encapsulation: vxlan",
                                                             "encapsulation: ipip")
    by_path = {e.path: e.reason for e in errors_of(text).errors}
    assert "lowercase" in by_path["tenants[0].name"]
    assert "must be one of" in by_path["fabric.encapsulation"]


def test_semantic_errors_carry_lines_too() -> None:
    text = BASE.replace("ip: 10.1.0.10", "ip: 10.2.0.10")
    [e] = errors_of(text).errors
    assert e.path == "tenants[0].vms[0].ip"
    assert "outside the network 10.1.0.0/24" in e.reason and "(line 13)" in e.reason


def test_check_false_skips_semantic_rules() -> None:
    text = BASE.replace("ip: 10.1.0.10", "ip: 10.2.0.10")
    intent = load_intent_text(text, check=False)
    assert str(intent.tenants[0].vms[0].ip) == "10.2.0.10"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_document_must_be_a_mapping(text: str) -> None:
    [e] = errors_of(text).errors
    assert "must be a mapping" in e.reason


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(IntentInvalid) as info:
        load_intent_file(missing)
    assert info.value.source == str(missing)
    assert "cannot read the file" in str(info.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text(BASE.replace("hypervisors:", "hypervisorz:"))
    with pytest.raises(IntentInvalid) as info:
        load_intent_file(f)
    assert str(info.value).startswith(f"{f}: hypervisorz: unknown key")


def test_intent_load_benchmark_runs_at_its_smallest_size() -> None:
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "intent_load.py"
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_text() if doc.exists() else None
    r = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tenants[999].colour: unknown key" in r.stdout and "(line 4004)" in r.stdout
    assert "aliases expand to more than" in r.stdout
    assert (doc.read_text() if doc.exists() else None) == before  # smoke mode writes nothing
