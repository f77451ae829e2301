"""Tenant A's tokens against tenant B: nothing of B can be read, listed, created, moved or
deleted (also not through apply or trace), B answers exactly as a tenant that does not exist,
and no answer to A names a hypervisor or an underlay address."""

from __future__ import annotations

import re

import pytest

from tests.unit.policy_world import HYPERVISORS, World

P = "/api/v1"
TENANT_ROLES = ("tenant-admin", "tenant-reader")
# Anything that gives a hypervisor or the underlay away.
PROVIDER_FACT = re.compile(r"\bhv[0-9]\b|172\.31\.|\"(hypervisor|bound|hops|tunnels)\"")


@pytest.fixture
def w() -> World:
    return World()


def same_as_missing(w: World, who: str, method: str, url: str, **kw: object) -> None:
    other = w.request(who, method, url, **kw)
    missing = w.request(who, method, url.replace("globex", "nosuch"), **kw)
    assert other.status_code == 404, other.text
    assert other.text.replace("globex", "X") == missing.text.replace("nosuch", "X")


@pytest.mark.parametrize("who", TENANT_ROLES)
def test_another_tenant_reads_as_missing_and_lists_are_filtered(w: World, who: str) -> None:
    for url in (f"{P}/tenants/globex", f"{P}/tenants/globex/vms", f"{P}/tenants/globex/vms/web1",
                f"{P}/tenants/globex/networks", f"{P}/tenants/globex/networks/front"):
        same_as_missing(w, who, "GET", url)
    tenants = w.request(who, "GET", f"{P}/tenants").json()
    assert [t["name"] for t in tenants] == ["acme"]
    moves = w.request(who, "GET", f"{P}/moves").json()
    assert [m["vm"] for m in moves] == ["acme/web2"]
    assert w.request(who, "GET", f"{P}/moves", params={"vm": "globex/db1"}).json() == []
    for data in (tenants, moves):
        assert not PROVIDER_FACT.search(str(data).replace("'", '"')), data


@pytest.mark.parametrize("who", TENANT_ROLES)
def test_nothing_of_another_tenant_can_be_changed(w: World, who: str) -> None:
    before = w.store.load()
    same_as_missing(w, who, "POST", f"{P}/tenants/globex/vms",
                    json={"name": "evil", "network": "front"})
    same_as_missing(w, who, "POST", f"{P}/tenants/globex/networks",
                    json={"name": "evil", "cidr": "10.7.0.0/24"})
    same_as_missing(w, who, "DELETE", f"{P}/tenants/globex/vms/web1")
    same_as_missing(w, who, "DELETE", f"{P}/tenants/globex/networks/front")
    same_as_missing(w, who, "DELETE", f"{P}/tenants/globex")
    same_as_missing(w, who, "POST", f"{P}/tenants/globex/vms/web1/move", json={"to": "hv3"})
    # The whole fabric is the provider's: an apply that would drop globex is refused.
    assert w.request(who, "POST", f"{P}/apply", json={"intent": {}}).status_code == 403
    assert w.store.load() == before
    assert w.runtime.moved == []


@pytest.mark.parametrize("who", TENANT_ROLES)
def test_provider_only_routes_are_refused(w: World, who: str) -> None:
    for method, url in (("GET", f"{P}/hypervisors"), ("GET", f"{P}/hypervisors/hv1"),
                        ("GET", f"{P}/status"), ("GET", f"{P}/overlay"),
                        ("GET", f"{P}/controller"), ("GET", f"{P}/intent"),
                        ("POST", f"{P}/controller/failover"),
                        ("POST", f"{P}/hypervisors/hv1/drain"),
                        ("POST", f"{P}/tenants/acme/vms/web1/move")):
        assert w.request(who, method, url, json={"to": "hv3"} if "move" in url else None
                         ).status_code == 403, (method, url)


@pytest.mark.parametrize("who", TENANT_ROLES)
def test_own_objects_are_shown_without_placement(w: World, who: str) -> None:
    vms = w.request(who, "GET", f"{P}/tenants/acme/vms").json()
    assert {v["name"] for v in vms} == {"web1", "web2", "app1"}
    one = w.request(who, "GET", f"{P}/tenants/acme/vms/web1").json()
    tenant = w.request(who, "GET", f"{P}/tenants/acme").json()
    for data in (vms, one, tenant):
        assert not PROVIDER_FACT.search(str(data).replace("'", '"')), data
    # The provider sees where they are.
    assert w.request("operator", "GET", f"{P}/tenants/acme/vms/web1").json()["bound"] == "hv1"


def test_a_tenant_admin_writes_its_own_tenant_without_learning_placement(w: World) -> None:
    r = w.request("tenant-admin", "POST", f"{P}/tenants/acme/vms",
                  json={"name": "web9", "network": "front"})
    assert r.status_code == 200, r.text
    assert [i["key"] for i in r.json()["added"]] == ["acme/web9"]
    assert not PROVIDER_FACT.search(r.text), r.text
    placed = w.service.intent.tenant("acme").vms  # type: ignore[union-attr]
    assert any(v.name == "web9" and v.hypervisor in HYPERVISORS for v in placed)
    r = w.request("tenant-admin", "DELETE", f"{P}/tenants/acme/vms/web9")
    assert r.status_code == 200 and not PROVIDER_FACT.search(r.text), r.text
    assert w.request("tenant-reader", "POST", f"{P}/tenants/acme/vms",
                     json={"name": "web8", "network": "front"}).status_code == 403


def test_a_tenant_cannot_choose_a_hypervisor(w: World) -> None:
    before = w.store.load()
    for hv in ("hv1", "hv9"):  # an existing and a missing one: the same answer
        r = w.request("tenant-admin", "POST", f"{P}/tenants/acme/vms",
                      json={"name": "web9", "network": "front", "hypervisor": hv})
        assert r.status_code == 422
        assert r.json()["detail"]["errors"][0]["path"] == "hypervisor"
    assert w.store.load() == before


@pytest.mark.parametrize("who", TENANT_ROLES)
def test_trace_stays_inside_the_tenant(w: World, who: str) -> None:
    own = w.request(who, "GET", f"{P}/trace", params={"src": "acme/web1", "dst": "acme/web2"})
    assert own.status_code == 200, own.text
    assert own.json()["verdict"] == "delivered to acme/web2"
    assert not PROVIDER_FACT.search(own.text), own.text
    by_ip = w.request(who, "GET", f"{P}/trace", params={"src": "acme/web1", "dst": "10.1.0.11"})
    assert by_ip.json()["verdict"] == "delivered to acme/web2"  # its own 10.1.0.11, not B's
    for params in ({"src": "acme/web1", "dst": "globex/web1"},
                   {"src": "globex/web1", "dst": "globex/db1"},
                   {"src": "acme/web1", "dst": "globex/db1", "kind": "arp"}):
        other = w.request(who, "GET", f"{P}/trace", params=params)
        missing = w.request(who, "GET", f"{P}/trace", params={
            k: v.replace("globex", "nosuch") for k, v in params.items()})
        assert other.status_code == 404, other.text
        assert other.text.replace("globex", "X") == missing.text.replace("nosuch", "X")
    # The provider's trace names hypervisors and tunnels.
    full = w.request("operator", "GET", f"{P}/trace",
                     params={"src": "acme/web1", "dst": "acme/web2"})
    assert PROVIDER_FACT.search(full.text)


def test_a_tenant_cannot_choose_a_vni_nor_learn_whose_it_is(w: World) -> None:
    before = w.store.load()
    r = w.request("tenant-admin", "POST", f"{P}/tenants/acme/networks",
                  json={"name": "probe", "cidr": "10.8.0.0/24", "vni": 6001})  # globex's
    assert r.status_code == 422 and r.json()["detail"]["errors"][0]["path"] == "vni"
    assert "globex" not in r.text
    assert w.store.load() == before


def test_errors_to_a_tenant_name_no_hypervisor(w: World) -> None:
    intent = w.service.intent
    w.service.apply(intent.model_copy(update={"hypervisors": [
        h.model_copy(update={"schedulable": False}) for h in intent.hypervisors]}))
    r = w.request("tenant-admin", "POST", f"{P}/tenants/acme/vms",
                  json={"name": "web9", "network": "front"})
    assert r.status_code == 422, r.text
    assert not re.search(r"\bhv[0-9]\b|drained|free", r.text), r.text
    provider = w.request("admin", "POST", f"{P}/tenants/acme/vms",
                         json={"name": "web9", "network": "front"})
    assert provider.status_code == 422 and PROVIDER_FACT.search(provider.text), provider.text
