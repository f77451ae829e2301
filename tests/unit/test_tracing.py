"""`hypetunnel trace` answers from the compiled tables: delivered where, over which tunnels."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.compiler.pipeline import T_ARP, T_L2
from hypetunnel.controller.tracing import trace
from hypetunnel.errors import NotFound
from hypetunnel.model.intent import Intent
from tests.unit.fabric_fixture import Fabric
from tests.unit.test_cli import FakeApi
from tests.unit.test_compiler_forwarding import INTENT


@pytest.fixture
def fabric() -> Fabric:
    return Fabric(Intent.model_validate(INTENT))


def test_trace_same_network_crosses_one_tunnel(fabric: Fabric) -> None:
    out = trace(fabric.topology, fabric.compiler, "acme/web1", "acme/web2")
    assert out["verdict"] == "delivered to acme/web2 on hv2"
    assert out["tunnels"] == [{"from": "hv1", "to": "hv2", "vni": 5001}]


def test_trace_by_ip_stays_in_the_tenant(fabric: Fabric) -> None:
    # 10.1.0.11 is acme/web2 in acme and globex/db1 in globex: each tenant finds its own.
    assert trace(fabric.topology, fabric.compiler, "acme/web1", "10.1.0.11")["verdict"] == \
        "delivered to acme/web2 on hv2"
    assert trace(fabric.topology, fabric.compiler, "globex/web1", "10.1.0.11")["verdict"] == \
        "delivered to globex/db1 on hv3"


def test_trace_cross_tenant_is_dropped(fabric: Fabric) -> None:
    out = trace(fabric.topology, fabric.compiler, "acme/web1", "globex/db1")
    # globex/db1's MAC is unknown in acme's network: dropped before any tunnel, and the answer
    # names the drop flow, whose packet counter an operator can read on hv1.
    assert out["verdict"] == "dropped at source: unknown destination MAC"
    assert out["tunnels"] == [] and out["deliveries"] == []
    [drop] = out["drops"]
    assert drop["hypervisor"] == "hv1" and drop["at_source"] and drop["table"] == T_L2
    assert int(drop["cookie"], 16) in {f.cookie for f in fabric.compiler.flows("hv1")}


def test_trace_arp_for_an_unowned_address_is_dropped_at_source(fabric: Fabric) -> None:
    out = trace(fabric.topology, fabric.compiler, "acme/web1", "10.1.0.99", kind="arp")
    assert out["verdict"] == \
        "dropped at source: ARP request for an address no VM of the network owns"
    assert out["tunnels"] == []
    assert [(d["hypervisor"], d["table"]) for d in out["drops"]] == [("hv1", T_ARP)]


def test_trace_arp_is_answered_on_the_source_hypervisor(fabric: Fabric) -> None:
    out = trace(fabric.topology, fabric.compiler, "acme/web1", "10.1.0.11", kind="arp")
    [d] = out["deliveries"]
    assert d["vm"] == "acme/web1" and d["hops"] == ["hv1"]
    assert d["frame"]["arp_sha"] == "02:00:00:00:01:11"


def test_trace_unknown_vm_is_not_found(fabric: Fabric) -> None:
    with pytest.raises(NotFound):
        trace(fabric.topology, fabric.compiler, "acme/nope", "acme/web2")


def test_cli_prints_where_and_why_a_frame_was_dropped(fabric: Fabric, tmp_path: Path) -> None:
    api = FakeApi()
    api.on("GET", "/api/v1/trace", 200,
           trace(fabric.topology, fabric.compiler, "acme/web1", "globex/db1"))
    env = {"COLUMNS": "200", "HYPETUNNEL_LAB_DIR": str(tmp_path), "HYPETUNNEL_API": None,
           "HYPETUNNEL_LAB": None}
    r = CliRunner().invoke(app, ["--api", "http://api.test:8650", "trace", "acme/web1",
                                 "globex/db1"],
                           obj=CliState(client_factory=api.factory, cache=None), env=env)
    assert r.exit_code == 0, r.output
    assert "dropped at source: unknown destination MAC" in r.stdout
    assert "tunnel" not in r.stdout
