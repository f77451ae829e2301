"""`hypetunnel trace` answers from the compiled tables: delivered where, over which tunnels."""

from __future__ import annotations

import pytest

from hypetunnel.controller.tracing import trace
from hypetunnel.errors import NotFound
from hypetunnel.model.intent import Intent
from tests.unit.fabric_fixture import Fabric
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
    assert out["verdict"] == "dropped"
    # Unknown unicast is flooded within acme's network only: never towards globex's hv3.
    assert all(t["to"] == "hv2" and t["vni"] == 5001 for t in out["tunnels"])


def test_trace_arp_is_answered_on_the_source_hypervisor(fabric: Fabric) -> None:
    out = trace(fabric.topology, fabric.compiler, "acme/web1", "10.1.0.11", kind="arp")
    [d] = out["deliveries"]
    assert d["vm"] == "acme/web1" and d["hops"] == ["hv1"]
    assert d["frame"]["arp_sha"] == "02:00:00:00:01:11"


def test_trace_unknown_vm_is_not_found(fabric: Fabric) -> None:
    with pytest.raises(NotFound):
        trace(fabric.topology, fabric.compiler, "acme/nope", "acme/web2")
