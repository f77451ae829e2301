"""Strict types in the intent: nothing is silently converted (true -> 1, "5001" -> 5001, an
integer -> an IP); unusable MACs and malformed OVSDB endpoints are refused with the field."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient
from hypetunnel.errors import IntentInvalid
from hypetunnel.model.intent import VM, Hypervisor, Network
from hypetunnel.model.loader import load_intent_text

BASE = """\
hypervisors:
  - name: hv1
    {hv}
tenants:
  - name: acme
    networks:
      - name: front
        cidr: 10.1.0.0/24
        {net}
    vms:
      - name: web1
        network: front
        {vm}
"""


def refusal(hv: str = "", net: str = "", vm: str = "") -> tuple[str, str]:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text(BASE.format(hv=hv, net=net, vm=vm), "bad.yaml")
    [e] = info.value.errors
    return e.path, e.reason


@pytest.mark.parametrize(("field", "where", "path", "shown"), [
    ("vni: true", "net", "tenants[0].networks[0].vni", "not true"),
    ('vni: "5001"', "net", "tenants[0].networks[0].vni", "not '5001'"),
    ("vni: 5001.0", "net", "tenants[0].networks[0].vni", "not 5001.0"),
    ("vcpus: true", "vm", "tenants[0].vms[0].vcpus", "not true"),
    ('memory_mb: "512"', "vm", "tenants[0].vms[0].memory_mb", "not '512'"),
    ("capacity: {vcpus: '4', memory_mb: 1024}", "hv", "hypervisors[0].capacity.vcpus", "'4'"),
])
def test_numbers_must_be_written_as_numbers(field: str, where: str, path: str,
                                            shown: str) -> None:
    got_path, reason = refusal(**{where: field})
    assert got_path == path
    assert "must be a whole number" in reason and shown in reason


def test_booleans_must_be_true_or_false() -> None:
    path, reason = refusal(hv="schedulable: 'yes'")
    assert path == "hypervisors[0].schedulable" and "must be true or false" in reason


@pytest.mark.parametrize(("field", "where", "path"), [
    ("ip: 167837706", "vm", "tenants[0].vms[0].ip"),
    ("underlay_ip: 1", "hv", "hypervisors[0].underlay_ip"),
])
def test_addresses_given_as_integers_are_refused(field: str, where: str, path: str) -> None:
    got_path, reason = refusal(**{where: field})
    assert got_path == path and "written as text" in reason


def test_cidr_given_as_integer_is_refused() -> None:
    with pytest.raises(ValueError, match="written as text"):
        Network(name="n", cidr=167772160)  # type: ignore[arg-type]


def test_valid_yaml_values_still_load() -> None:
    intent = load_intent_text(BASE.format(
        hv="capacity: {vcpus: 4, memory_mb: 1024}\n    schedulable: false",
        net="vni: 5001", vm="ip: 10.1.0.10\n        vcpus: 2\n        mac: 02:00:00:00:00:10"))
    net, vm, hv = intent.tenants[0].networks[0], intent.tenants[0].vms[0], intent.hypervisors[0]
    assert (net.vni, str(vm.ip), vm.vcpus, vm.mac) == (5001, "10.1.0.10", 2, "02:00:00:00:00:10")
    assert hv.capacity is not None and hv.capacity.vcpus == 4 and hv.schedulable is False


@pytest.mark.parametrize("mac", ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01",
                                 "33:33:00:00:00:01"])
def test_unusable_macs_are_refused(mac: str) -> None:
    path, reason = refusal(vm=f'mac: "{mac}"')
    assert path == "tenants[0].vms[0].mac"
    assert "not a usable MAC" in reason or "unicast" in reason


def test_unquoted_mac_read_as_a_number_says_to_quote_it() -> None:
    # YAML 1.1 reads 10:00:00:00:00:10 as a base-60 integer.
    path, reason = refusal(vm="mac: 10:00:00:00:00:10")
    assert path == "tenants[0].vms[0].mac" and "quote it" in reason


@pytest.mark.parametrize("endpoint", ["tcp:10.0.0.1:6640", "ssl:hv1.example.net:6640",
                                      "tcp:[fd00::1]:6640", "unix:/run/openvswitch/db.sock"])
def test_ovsdb_endpoints_that_are_accepted(endpoint: str) -> None:
    assert Hypervisor(name="hv1", ovsdb=endpoint).ovsdb == endpoint


@pytest.mark.parametrize("endpoint", ["garbage", "tcp:10.0.0.1", "tcp:10.0.0.1:0",
                                      "tcp:10.0.0.1:99999", "ssl::6640", "unix:", "http://x:1",
                                      "tcp:bad_host:6640"])
def test_malformed_ovsdb_endpoints_are_refused(endpoint: str) -> None:
    path, reason = refusal(hv=f'ovsdb: "{endpoint}"')
    assert path == "hypervisors[0].ovsdb"
    assert "tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH" in reason and repr(endpoint) in reason


def test_code_built_models_keep_working() -> None:
    from ipaddress import IPv4Address

    vm = VM(name="web1", network="front", ip=IPv4Address("10.1.0.10"), mac="02:00:00:00:00:01")
    assert vm.ip == IPv4Address("10.1.0.10")


def test_cli_hypervisor_create_refuses_a_garbage_ovsdb_before_calling_the_api() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    state = CliState(client_factory=lambda url: ApiClient(url,
                                                          transport=httpx.MockTransport(handler)))
    r = CliRunner().invoke(app, ["--api", "http://api.test", "hypervisor", "create", "hv9",
                                 "--ovsdb", "garbage"], obj=state, env={"COLUMNS": "200"})
    assert r.exit_code != 0
    assert "ovsdb" in r.output and "tcp:HOST:PORT" in r.output
    assert seen == []
