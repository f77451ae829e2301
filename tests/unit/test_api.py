"""The REST API through FastAPI's TestClient: routes, JSON shapes, error shapes, atomicity."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from hypetunnel.api.app import RuntimeView, create_app
from hypetunnel.controller.service import FabricService
from hypetunnel.model.intent import Intent
from hypetunnel.store.memory import MemoryStore
from tests.unit.auth_helpers import authorized, separate_tokens

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-hypervisors.yaml"
API = "/api/v1"


class FakeRuntime:
    def status(self) -> dict[str, Any]:
        return {"controller": {"running": True}, "switches": [{"hypervisor": "hv1"}],
                "converged": True}

    def overlay(self) -> dict[str, Any]:
        return {"hv1": {"tunnels": 2}}

    def bindings(self) -> dict[str, str]:
        return {"acme/web1": "hv1"}

    def moves(self) -> list[dict[str, Any]]:
        """The move log is read from the store: never on the event loop's thread."""
        with pytest.raises(RuntimeError):
            asyncio.get_running_loop()
        return [{"vm": "acme/web1", "seq": 1}, {"vm": "acme/db1", "seq": 1}]


class Ctx:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.changes: list[tuple[Intent, Intent]] = []
        self.service = FabricService(self.store, on_change=lambda o, n: self.changes.append((o, n)))
        self.client = authorized(TestClient(create_app(self.service, FakeRuntime(),
                                                       tokens=separate_tokens())))

    def unchanged(self, before: Any) -> bool:
        return bool(self.store.load() == before)


@pytest.fixture
def ctx() -> Iterator[Ctx]:
    c = Ctx()
    with c.client:
        yield c


@pytest.fixture
def loaded(ctx: Ctx) -> Ctx:
    r = ctx.client.post(f"{API}/apply", json={"intent": example()})
    assert r.status_code == 200, r.text
    return ctx


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def errors(r: Any) -> dict[str, str]:
    body = r.json()
    assert set(body) == {"detail"} and set(body["detail"]) == {"errors"}, body
    return {e["path"]: e["reason"] for e in body["detail"]["errors"]}


def test_runtime_protocol() -> None:
    assert isinstance(FakeRuntime(), RuntimeView)


def test_healthz_and_openapi(ctx: Ctx) -> None:
    assert ctx.client.get(f"{API}/healthz").json() == {"ok": True}
    spec = ctx.client.get("/openapi.json").json()
    assert f"{API}/apply" in spec["paths"] and f"{API}/tenants/{{tenant}}/vms" in spec["paths"]
    assert ctx.client.get("/docs").status_code == 200


def test_apply_dry_run_then_real(ctx: Ctx) -> None:
    before = ctx.store.load()
    r = ctx.client.post(f"{API}/apply", json={"intent": example(), "dry_run": True})
    assert r.status_code == 200
    plan = r.json()
    assert set(plan) == {"added", "changed", "removed", "revision", "applied"}
    assert plan["applied"] is False and plan["revision"] == 0
    assert {"kind": "tenant", "key": "globex", "detail": "encapsulation gre"} in plan["added"]
    assert ctx.unchanged(before) and ctx.changes == []

    r = ctx.client.post(f"{API}/apply", json={"intent": example()})
    assert r.json()["applied"] is True and r.json()["revision"] == 1
    assert len(ctx.changes) == 1
    again = ctx.client.post(f"{API}/apply", json={"intent": example()}).json()
    assert (again["added"], again["changed"], again["removed"]) == ([], [], [])
    assert again["revision"] == 1

    intent = ctx.client.get(f"{API}/intent").json()
    assert Intent.model_validate(intent) == ctx.service.intent
    globex = next(t for t in intent["tenants"] if t["name"] == "globex")
    assert all(n["vni"] for n in globex["networks"])
    assert all(v["ip"] and v["mac"] and v["hypervisor"] for v in globex["vms"])


def test_apply_invalid_intent_is_422_with_paths_and_changes_nothing(loaded: Ctx) -> None:
    before = loaded.store.load()
    doc = example()
    doc["tenants"][0]["vms"][2]["ip"] = "10.9.9.9"
    doc["tenants"][1]["networks"][0]["vni"] = 5001
    r = loaded.client.post(f"{API}/apply", json={"intent": doc})
    assert r.status_code == 422
    errs = errors(r)
    assert "outside the network 10.1.0.0/24" in errs["tenants[0].vms[2].ip"]
    assert "VNI 5001 is already used by acme/front" in errs["tenants[1].networks[0].vni"]
    assert loaded.unchanged(before)


def test_apply_body_schema_errors_use_intent_paths(loaded: Ctx) -> None:
    before = loaded.store.load()
    doc = example()
    doc["tenants"][0]["vms"][1]["colour"] = "red"
    doc["tenants"][0]["vms"][0]["mac"] = "nope"
    r = loaded.client.post(f"{API}/apply", json={"intent": doc})
    assert r.status_code == 422
    errs = errors(r)
    assert errs["tenants[0].vms[1].colour"].startswith("unknown key (allowed: name, network")
    assert "MAC address" in errs["tenants[0].vms[0].mac"]
    r = loaded.client.post(f"{API}/apply", json={"intnet": doc})
    assert r.status_code == 422 and set(errors(r)) == {"intent", "intnet"}
    assert loaded.unchanged(before)


def test_hypervisors(loaded: Ctx) -> None:
    c = loaded.client
    assert [h["name"] for h in c.get(f"{API}/hypervisors").json()] == ["hv1", "hv2", "hv3"]
    r = c.put(f"{API}/hypervisors/hv4", json={"underlay_ip": "172.31.0.14"})
    assert r.status_code == 200 and r.json()["added"][0]["key"] == "hv4"
    assert c.get(f"{API}/hypervisors/hv4").json()["underlay_ip"] == "172.31.0.14"
    r = c.put(f"{API}/hypervisors/hv4", json={"name": "hv5"})
    assert r.status_code == 422 and "name" in errors(r)
    r = c.put(f"{API}/hypervisors/hv5", json={"underlay_ip": "172.31.0.14"})
    assert r.status_code == 422 and "underlay_ip" in errors(r)
    r = c.put(f"{API}/hypervisors/Bad_Name", json={})
    assert r.status_code == 422 and "name" in errors(r)
    assert c.delete(f"{API}/hypervisors/hv4").json()["removed"][0]["key"] == "hv4"
    before = loaded.store.load()
    r = c.delete(f"{API}/hypervisors/hv1")
    assert r.status_code == 409 and "still hosts VMs" in errors(r)["hypervisors/hv1"]
    r = c.delete(f"{API}/hypervisors/hv9")
    assert r.status_code == 404 and errors(r) == {"hypervisors/hv9": "not found"}
    assert loaded.unchanged(before)


def test_hypervisor_capacity_and_drain_through_put(loaded: Ctx) -> None:
    c = loaded.client
    r = c.put(f"{API}/hypervisors/hv4", json={"capacity": {"vcpus": 2, "memory_mb": 1024}})
    assert r.status_code == 200, r.text
    # A drain sends only schedulable: the capacity (like the underlay) is kept.
    r = c.put(f"{API}/hypervisors/hv3", json={"schedulable": False})
    assert r.status_code == 200 and r.json()["changed"][0]["key"] == "hv3"
    hv3 = c.get(f"{API}/hypervisors/hv3").json()
    assert hv3["schedulable"] is False
    assert hv3["capacity"] == {"vcpus": 16, "memory_mb": 16384}
    # hv3 keeps its VMs, new ones go elsewhere; writing one onto hv3 is refused.
    assert {v["name"] for v in c.get(f"{API}/tenants/acme/vms").json()
            if v["hypervisor"] == "hv3"} == {"web3", "db2"}
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web9", "network": "front"})
    # hv3 (2 VMs) would be the emptiest, hv4 would be half full: hv1 and hv2 tie (5/16), by name.
    assert r.status_code == 200 and " on hv1 " in r.json()["added"][0]["detail"]
    before = loaded.store.load()
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web8", "network": "front",
                                               "hypervisor": "hv3"})
    assert r.status_code == 422 and "drained" in errors(r)["hypervisor"]
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web8", "network": "front",
                                               "hypervisor": "hv4", "vcpus": 3})
    assert r.status_code == 422 and "no room for 3 vCPUs / 512 MB" in errors(r)["hypervisor"]
    assert loaded.unchanged(before)
    r = c.put(f"{API}/hypervisors/hv3", json={"schedulable": True})
    assert r.status_code == 200 and c.get(f"{API}/hypervisors/hv3").json()["schedulable"]


def test_tenants(loaded: Ctx) -> None:
    c = loaded.client
    assert [t["name"] for t in c.get(f"{API}/tenants").json()] == ["acme", "globex"]
    r = c.post(f"{API}/tenants", json={"name": "initech", "encapsulation": "geneve"})
    assert r.status_code == 200 and r.json()["added"] == [
        {"kind": "tenant", "key": "initech", "detail": "encapsulation geneve"}]
    assert c.get(f"{API}/tenants/initech").json()["encapsulation"] == "geneve"
    r = c.post(f"{API}/tenants", json={"name": "initech"})
    assert r.status_code == 409 and errors(r) == {"tenants/initech": "already exists"}
    r = c.post(f"{API}/tenants", json={"name": "x", "flavour": 1})
    assert r.status_code == 422 and "flavour" in errors(r)
    assert c.delete(f"{API}/tenants/initech").status_code == 200
    assert c.get(f"{API}/tenants/initech").status_code == 404
    r = c.delete(f"{API}/tenants/initech")
    assert r.status_code == 404 and errors(r) == {"tenants/initech": "not found"}


def test_networks(loaded: Ctx) -> None:
    c = loaded.client
    nets = {n["name"]: n for n in c.get(f"{API}/tenants/globex/networks").json()}
    assert nets["front"]["encapsulation"] == "gre" and nets["front"]["mtu"] == 1458
    assert nets["front"]["vni"] >= 1000 and nets["front"]["cidr"] == "10.1.0.0/24"
    acme = {n["name"]: n for n in c.get(f"{API}/tenants/acme/networks").json()}
    assert (acme["front"]["vni"], acme["front"]["mtu"]) == (5001, 1450)

    r = c.post(f"{API}/tenants/acme/networks", json={"name": "mgmt", "cidr": "10.3.0.0/24"})
    assert r.status_code == 200 and r.json()["added"][0]["key"] == "acme/mgmt"
    before = loaded.store.load()
    r = c.post(f"{API}/tenants/acme/networks", json={"name": "x", "cidr": "10.3.0.0/16"})
    assert r.status_code == 422 and "overlaps network 'mgmt'" in errors(r)["cidr"]
    r = c.post(f"{API}/tenants/acme/networks", json={"name": "y", "cidr": "10.4.0.0/24",
                                                     "vni": 5001})
    assert r.status_code == 422 and "already used by acme/front" in errors(r)["vni"]
    r = c.post(f"{API}/tenants/acme/networks", json={"name": "z", "cidr": "10.4.0.1/24"})
    assert r.status_code == 422 and "not an IPv4 network" in errors(r)["cidr"]
    r = c.delete(f"{API}/tenants/acme/networks/front")
    assert r.status_code == 409 and "still has VMs" in errors(r)["tenants/acme/networks/front"]
    assert c.get(f"{API}/tenants/nope/networks").status_code == 404
    assert loaded.unchanged(before)
    assert c.delete(f"{API}/tenants/acme/networks/mgmt").json()["removed"][0]["key"] == "acme/mgmt"


def test_vms(loaded: Ctx) -> None:
    c = loaded.client
    vms = {v["name"]: v for v in c.get(f"{API}/tenants/acme/vms").json()}
    assert vms["web1"] == {"id": "acme/web1", "tenant": "acme", "name": "web1",
                           "network": "front", "hypervisor": "hv1", "ip": "10.1.0.10",
                           "mac": "02:00:00:01:00:10", "vcpus": 1, "memory_mb": 512,
                           "fault_policy": None, "bound": "hv1"}
    assert vms["web2"]["bound"] is None
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web4", "network": "front"})
    assert r.status_code == 200
    [item] = r.json()["added"]
    assert item["key"] == "acme/web4" and item["detail"].startswith("10.1.0.2 02:")
    assert c.get(f"{API}/tenants/acme/vms/web4").json()["ip"] == "10.1.0.2"

    before = loaded.store.load()
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web5", "network": "front",
                                                "ip": "10.1.0.10"})
    assert r.status_code == 422 and "already used by VM 'web1'" in errors(r)["ip"]
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web5", "network": "nope"})
    assert r.status_code == 422 and errors(r) == {
        "network": "unknown network 'nope' in tenant 'acme'"}
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web5"})
    assert r.status_code == 422 and errors(r)["network"] == "required"
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "web1", "network": "front"})
    assert r.status_code == 409
    r = c.delete(f"{API}/tenants/acme/vms/ghost")
    assert r.status_code == 404 and errors(r) == {"tenants/acme/vms/ghost": "not found"}
    assert loaded.unchanged(before)
    assert c.delete(f"{API}/tenants/acme/vms/web4").status_code == 200


def test_status_and_overlay(loaded: Ctx) -> None:
    status = loaded.client.get(f"{API}/status").json()
    assert status == {"revision": 1, "controller": {"running": True},
                      "switches": [{"hypervisor": "hv1"}], "converged": True}
    assert loaded.client.get(f"{API}/overlay").json() == {"hv1": {"tunnels": 2}}


def test_without_runtime() -> None:
    service = FabricService(MemoryStore())
    with authorized(TestClient(create_app(service, tokens=separate_tokens()))) as c:
        status = c.get(f"{API}/status").json()
        assert status["revision"] == 0 and status["converged"] is False
        assert status["switches"] == []
        assert c.get(f"{API}/overlay").json() == {}
        assert c.get(f"{API}/tenants").json() == []


# -- the contract's edges: JSON types, media type, parse errors, methods, names -----------------


def test_bools_and_numbers_keep_their_json_types(loaded: Ctx) -> None:
    c = loaded.client
    before = loaded.store.load()
    r = c.post(f"{API}/apply", json={"intent": example(), "dry_run": 0})
    assert r.status_code == 422 and "true or false" in errors(r)["dry_run"]
    r = c.put(f"{API}/hypervisors/hv3", json={"schedulable": "no"})
    assert r.status_code == 422 and "true or false" in errors(r)["schedulable"]
    r = c.put(f"{API}/hypervisors/hv4", json={"underlay_ip": 2886729742})
    assert r.status_code == 422 and "text" in errors(r)["underlay_ip"]
    r = c.post(f"{API}/tenants/acme/networks", json={"name": "n9", "cidr": "10.9.0.0/24",
                                                     "vni": True})
    assert r.status_code == 422 and "whole number" in errors(r)["vni"]
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "w9", "network": "front",
                                                "vcpus": "2"})
    assert r.status_code == 422 and "whole number" in errors(r)["vcpus"]
    assert loaded.unchanged(before)
    # JSON has one number type: 2.0 is the integer 2, as JSON Schema counts it.
    r = c.post(f"{API}/tenants/acme/vms", json={"name": "w9", "network": "front",
                                                "vcpus": 2.0})
    assert r.status_code == 200, r.text
    assert c.get(f"{API}/tenants/acme/vms/w9").json()["vcpus"] == 2


def test_a_body_that_is_not_json_is_refused_in_the_error_shape(loaded: Ctx) -> None:
    c = loaded.client
    before = loaded.store.load()
    body = b'{"name": "initech"}'
    r = c.post(f"{API}/tenants", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in errors(r)[""]
    r = c.post(f"{API}/tenants", content=body, headers={"content-type": ""})
    assert r.status_code == 415
    r = c.post(f"{API}/tenants", content=b'{"name": ', headers={"content-type":
                                                               "application/json"})
    assert r.status_code == 400 and "not valid JSON" in errors(r)[""]
    r = c.post(f"{API}/tenants", content=b'\xff\xfe{"name"', headers={"content-type":
                                                                      "application/json"})
    assert r.status_code == 400 and "not valid JSON" in errors(r)[""]
    assert loaded.unchanged(before)
    r = c.post(f"{API}/tenants", content=body,
               headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_405_lists_every_method_of_the_path(ctx: Ctx) -> None:
    r = ctx.client.put(f"{API}/tenants/acme", json={})
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"
    assert "PUT is not allowed" in errors(r)[""]
    r = ctx.client.patch(f"{API}/hypervisors/hv1", json={})
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET, PUT"
    r = ctx.client.get(f"{API}/no-such-thing")
    assert r.status_code == 404 and "no such route" in errors(r)[""]


def test_names_in_urls_follow_the_intent_name_pattern(loaded: Ctx) -> None:
    c = loaded.client
    r = c.get(f"{API}/tenants/Acme/vms")
    assert r.status_code == 422 and "lowercase" in errors(r)["tenant"]
    r = c.delete(f"{API}/tenants/acme/vms/web_1")
    assert r.status_code == 422 and set(errors(r)) == {"vm"}
    spec = c.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    assert p["schema"]["pattern"] == "^[a-z][a-z0-9-]{0,30}$", (path, p)


def test_openapi_declares_what_the_validators_check(ctx: Ctx) -> None:
    import re

    schemas = ctx.client.get("/openapi.json").json()["components"]["schemas"]
    cidr = re.compile(schemas["Network"]["properties"]["cidr"]["pattern"])
    for ok in ("10.1.0.0/24", "0.0.0.0/0", "192.168.4.8/29", "172.16.0.0/12"):
        assert cidr.match(ok), ok
    for bad in ("10.1.0.1/24", "10.1.0.0/30", "10.1.0.0", "010.1.0.0/24", "10.1.0.0/33"):
        assert not cidr.match(bad), bad
    [mac] = [v for v in schemas["VM"]["properties"]["mac"]["anyOf"] if v["type"] == "string"]
    assert re.match(mac["pattern"], "02:00:00:00:00:10")
    assert not re.match(mac["pattern"], "01:00:5e:00:00:01")  # multicast
    for status in ("400", "404", "409", "415", "422", "503"):
        assert status in ctx.client.get("/openapi.json").json()["paths"][f"{API}/apply"][
            "post"]["responses"]


def test_unknown_keys_list_the_keys_of_the_route_body(loaded: Ctx) -> None:
    r = loaded.client.post(f"{API}/tenants/acme/vms/web1/move", json={"to": "hv2", "hot": True})
    assert r.status_code == 422 and errors(r)["hot"].startswith("unknown key (allowed: to, cold")
    r = loaded.client.put(f"{API}/hypervisors/hv1", json={"ip": "10.0.0.1"})
    assert r.status_code == 422 and errors(r)["ip"].startswith("unknown key (allowed: name, ")


def test_the_move_log_is_read_off_the_event_loop(ctx: Ctx) -> None:
    r = ctx.client.get(f"{API}/moves", params={"vm": "acme/db1"})
    assert r.status_code == 200, r.text
    assert r.json() == [{"vm": "acme/db1", "seq": 1}]


def test_apply_with_if_match_never_undoes_a_change_it_did_not_see(loaded: Ctx) -> None:
    r = loaded.client.get(f"{API}/intent")
    tag = r.headers["etag"]
    assert tag == f'"{loaded.store.load().revision}"'
    doc = r.json()
    # Someone else commits between our read and our write.
    assert loaded.client.post(f"{API}/tenants/acme/networks",
                              json={"name": "extra", "cidr": "10.9.0.0/24"}).status_code == 200
    before = loaded.store.load()
    for dry_run in (True, False):
        r = loaded.client.post(f"{API}/apply", json={"intent": doc, "dry_run": dry_run},
                               headers={"If-Match": tag})
        assert r.status_code == 412, r.text
        assert errors(r)["if-match"].startswith(f"the fabric is at revision {before.revision}")
    assert loaded.unchanged(before)  # the extra network is still there
    fresh = loaded.client.get(f"{API}/intent")
    r = loaded.client.post(f"{API}/apply", json={"intent": fresh.json()},
                           headers={"If-Match": fresh.headers["etag"]})
    assert r.status_code == 200 and r.json()["revision"] == before.revision  # nothing to do


@pytest.mark.parametrize("header", ["42", '"x"', '"1" , "2"', "W/"])
def test_a_malformed_if_match_names_the_header(loaded: Ctx, header: str) -> None:
    before = loaded.store.load()
    r = loaded.client.post(f"{API}/apply", json={"intent": example()},
                           headers={"If-Match": header})
    assert r.status_code == 422 and "if-match" in errors(r), r.text
    assert loaded.unchanged(before)
