"""The `hypetunnel` CLI against a fake API (httpx.MockTransport): no server, no network."""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hypetunnel.cli import fabric
from hypetunnel.cli.context import DEFAULT_API_URL, CliState, resolve_api_url
from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient, errors_from_body
from hypetunnel.errors import FieldError, IntentInvalid

API = "http://api.test:8650"

GOOD_INTENT = """\
fabric:
  encapsulation: vxlan
hypervisors:
  - name: hv1
  - name: hv2
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

PLAN = {
    "added": [
        {"kind": "tenant", "key": "acme", "detail": ""},
        {"kind": "vm", "key": "acme/web1", "detail": "10.1.0.10 02:00:00:00:00:10 on hv1"},
    ],
    "changed": [{"kind": "network", "key": "acme/front", "detail": "vni 5001 -> 5002"}],
    "removed": [{"kind": "vm", "key": "acme/old", "detail": ""}],
    "revision": 7,
    "applied": True,
}


class FakeApi:
    """Answers requests from a route table and records every request it saw."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.urls: list[str] = []

    def on(self, method: str, path: str, status: int, body: Any) -> None:
        self.routes[(method, path)] = (status, body)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.routes.get(
            (request.method, request.url.path),
            (404, {"detail": {"errors": [{"path": request.url.path, "reason": "no route"}]}}),
        )
        return httpx.Response(status, json=body)

    def factory(self, url: str) -> ApiClient:
        self.urls.append(url)
        return ApiClient(url, transport=httpx.MockTransport(self.handler))

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def cli(api: FakeApi, tmp_path: Path) -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, factory: Callable[[str], ApiClient] | None = None) -> Any:
        state = CliState(client_factory=factory or api.factory, cache=None)
        # Empty lab dir: the default URL must not depend on labs running on this machine.
        env = {"COLUMNS": "200", "HYPETUNNEL_LAB_DIR": str(tmp_path / "labs"),
               "HYPETUNNEL_API": None, "HYPETUNNEL_LAB": None}
        return runner.invoke(app, list(args), obj=state, env=env)

    return invoke


@pytest.fixture
def intent_file(tmp_path: Path) -> Path:
    p = tmp_path / "fabric.yaml"
    p.write_text(GOOD_INTENT)
    return p


# --- apply --------------------------------------------------------------------------------------


def test_apply_posts_the_intent_and_prints_the_plan(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 200, PLAN)
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 0, r.output
    assert api.urls == [API]
    [req] = api.requests
    assert req.method == "POST" and req.url.path == "/api/v1/apply"
    body = api.bodies()[0]
    assert body["dry_run"] is False
    assert body["intent"]["tenants"][0]["vms"][0] == {
        "name": "web1", "network": "front", "ip": "10.1.0.10", "vcpus": 1, "memory_mb": 512
    }  # exclude_none: unset optional fields are left for the server to allocate
    lines = r.stdout.splitlines()
    assert any(ln.startswith("+ vm") and "acme/web1" in ln and "on hv1" in ln for ln in lines)
    assert any(ln.startswith("~ network") and "vni 5001 -> 5002" in ln for ln in lines)
    assert any(ln.startswith("- vm") and "acme/old" in ln for ln in lines)
    assert "2 to add, 1 to change, 1 to remove" in r.stdout
    assert "Applied (revision 7)" in r.stdout


def test_apply_dry_run_is_sent_and_reported(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 200, {**PLAN, "applied": False, "revision": 6})
    r = cli("--api", API, "apply", str(intent_file), "--dry-run")
    assert r.exit_code == 0, r.output
    assert api.bodies()[0]["dry_run"] is True
    assert "Dry run: nothing applied (revision 6)" in r.stdout


def test_apply_without_changes_says_so(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 200,
           {"added": [], "changed": [], "removed": [], "revision": 3, "applied": False})
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 0, r.output
    assert "No changes" in r.stdout


def test_apply_json_output_is_the_plan(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 200, PLAN)
    r = cli("--api", API, "apply", str(intent_file), "--output", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == PLAN


def test_apply_422_prints_file_path_and_reason(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 422, {"detail": {"errors": [
        {"path": "tenants[0].vms[0].ip", "reason": "10.1.0.10 is already used by acme/web0"},
        {"path": "hypervisors[1].name", "reason": "duplicate name"},
    ]}})
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 1
    err_lines = r.stderr.splitlines()
    assert (f"error: {intent_file}: tenants[0].vms[0].ip: 10.1.0.10 is already used by "
            "acme/web0") in err_lines
    assert f"error: {intent_file}: hypervisors[1].name: duplicate name" in err_lines
    assert "Applied" not in r.stdout


def test_apply_fastapi_default_422_paths_are_relative_to_the_file(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 422, {"detail": [
        {"loc": ["body", "intent", "tenants", 0, "name"], "msg": "bad name", "type": "x"},
    ]})
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 1
    assert f"error: {intent_file}: tenants[0].name: bad name" in r.stderr.splitlines()


def test_apply_409_does_not_blame_the_file(cli, api, intent_file) -> None:
    api.on("POST", "/api/v1/apply", 409, {"detail": {"errors": [
        {"path": "", "reason": "revision 4 is stale"}]}})
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == ["error: revision 4 is stale"]


def test_apply_local_error_names_file_and_path_and_sends_nothing(cli, api, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD_INTENT.replace("ip: 10.1.0.10", "ip: 10.9.0.10"))
    r = cli("--api", API, "apply", str(bad))
    assert r.exit_code == 1
    assert api.requests == []
    [line] = r.stderr.splitlines()
    assert line.startswith(f"error: {bad}: tenants[0].vms[0].ip: ")


def test_apply_local_unknown_key_is_reported_before_any_request(cli, api, tmp_path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text(GOOD_INTENT.replace("  encapsulation: vxlan", "  encapsulaton: vxlan"))
    r = cli("--api", API, "apply", str(bad))
    assert r.exit_code == 1
    assert api.requests == []
    assert f"error: {bad}: fabric.encapsulaton: " in r.stderr


def test_apply_uses_the_loader_errors_verbatim(cli, api, intent_file, monkeypatch) -> None:
    # Independent of the real loader's rules: whatever IntentInvalid says is what the user sees.
    def fake_loader(path: Path) -> Any:
        raise IntentInvalid([FieldError("tenants[0].vms[2].ip", "not in 10.1.0.0/24")],
                            source=str(path))

    monkeypatch.setattr(fabric, "load_intent", fake_loader)
    r = cli("--api", API, "apply", str(intent_file))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"error: {intent_file}: tenants[0].vms[2].ip: not in 10.1.0.0/24"
    ]
    assert api.requests == []


def test_apply_missing_file_is_a_usage_error(cli, api, tmp_path) -> None:
    r = cli("--api", API, "apply", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert api.requests == []


# --- unreachable API ----------------------------------------------------------------------------


def test_unreachable_api_names_the_url(cli, intent_file) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def factory(url: str) -> ApiClient:
        return ApiClient(url, transport=httpx.MockTransport(refuse))

    r = cli("--api", API, "apply", str(intent_file), factory=factory)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"error: cannot reach the HypeTunnel API at {API} (is the controller running? "
        "try `hypetunnel lab up FILE`)"
    ]


def test_unreachable_real_socket(cli) -> None:
    # A real refused connection through httpx's own transport (nothing listens on the port).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    r = cli("--api", url, "tenant", "list", factory=ApiClient)
    assert r.exit_code == 1
    assert f"cannot reach the HypeTunnel API at {url}" in r.stderr


# --- object commands ----------------------------------------------------------------------------

TENANTS = [
    {"name": "acme", "encapsulation": "gre", "networks": [{"name": "front"}], "vms": []},
    {"name": "globex", "encapsulation": None, "networks": [], "vms": []},
]
NETWORKS = [{"name": "front", "cidr": "10.1.0.0/24", "vni": 5001, "encapsulation": "gre",
             "mtu": 1458}]
VMS = [{"id": "acme/web1", "name": "web1", "network": "front", "ip": "10.1.0.10",
        "mac": "02:00:00:00:00:10", "hypervisor": "hv1", "bound": "hv1"}]
HYPERVISORS = [{"name": "hv1", "underlay_ip": "172.31.0.11", "ovsdb": "unix:/x/db.sock"}]

LISTS = [
    (["tenant", "list"], "/api/v1/tenants", TENANTS, ["acme", "gre", "globex"]),
    (["network", "list", "acme"], "/api/v1/tenants/acme/networks", NETWORKS,
     ["front", "10.1.0.0/24", "5001", "1458"]),
    (["vm", "list", "acme"], "/api/v1/tenants/acme/vms", VMS,
     ["web1", "10.1.0.10", "02:00:00:00:00:10", "hv1"]),
    (["hypervisor", "list"], "/api/v1/hypervisors", HYPERVISORS, ["hv1", "172.31.0.11"]),
]


@pytest.mark.parametrize(("args", "path", "items", "cells"), LISTS)
def test_list_renders_rows(cli, api, args, path, items, cells) -> None:
    api.on("GET", path, 200, items)
    r = cli("--api", API, *args)
    assert r.exit_code == 0, r.output
    assert [q.url.path for q in api.requests] == [path]
    for c in cells:
        assert c in r.stdout


@pytest.mark.parametrize(("args", "path", "items", "cells"), LISTS)
def test_list_json_output_is_valid_json(cli, api, args, path, items, cells) -> None:
    api.on("GET", path, 200, items)
    r = cli("--api", API, *args, "--output", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == items


def test_list_accepts_wrapped_lists(cli, api) -> None:
    api.on("GET", "/api/v1/tenants", 200, {"items": TENANTS})
    r = cli("--api", API, "tenant", "list", "-o", "json")
    assert json.loads(r.stdout) == TENANTS


def test_create_sends_validated_body_and_prints_plan(cli, api) -> None:
    plan = {"added": [{"kind": "vm", "key": "acme/web2", "detail": "10.1.0.11 on hv2"}],
            "changed": [], "removed": [], "revision": 9, "applied": True}
    api.on("POST", "/api/v1/tenants/acme/vms", 201, plan)
    r = cli("--api", API, "vm", "create", "acme", "web2", "--network", "front",
            "--mac", "02:AA:00:00:00:01")
    assert r.exit_code == 0, r.output
    assert api.bodies() == [{"name": "web2", "network": "front", "mac": "02:aa:00:00:00:01",
                             "vcpus": 1, "memory_mb": 512}]  # the default size, stated
    assert "+ vm" in r.stdout and "acme/web2" in r.stdout


def test_create_tenant_and_network_and_hypervisor_bodies(cli, api) -> None:
    done = {"added": [], "changed": [], "removed": [], "revision": 1, "applied": True}
    api.on("POST", "/api/v1/tenants", 201, done)
    api.on("POST", "/api/v1/tenants/acme/networks", 201, done)
    api.on("PUT", "/api/v1/hypervisors/hv3", 200, done)
    assert cli("--api", API, "tenant", "create", "acme", "--encapsulation", "gre").exit_code == 0
    assert cli("--api", API, "network", "create", "acme", "back", "--cidr", "10.2.0.0/24",
               "--vni", "6000").exit_code == 0
    assert cli("--api", API, "hypervisor", "create", "hv3",
               "--underlay-ip", "172.31.0.13").exit_code == 0
    assert api.bodies() == [
        {"name": "acme", "encapsulation": "gre", "networks": [], "vms": []},
        {"name": "back", "cidr": "10.2.0.0/24", "vni": 6000},
        {"name": "hv3", "underlay_ip": "172.31.0.13"},
    ]


def test_create_sizes_and_capacities(cli, api) -> None:
    done = {"added": [], "changed": [], "removed": [], "revision": 1, "applied": True}
    api.on("POST", "/api/v1/tenants/acme/vms", 201, done)
    api.on("PUT", "/api/v1/hypervisors/hv3", 200, done)
    assert cli("--api", API, "vm", "create", "acme", "big", "--network", "front",
               "--vcpus", "4", "--memory-mb", "8192").exit_code == 0
    assert cli("--api", API, "hypervisor", "create", "hv3",
               "--vcpus", "32", "--memory-mb", "65536").exit_code == 0
    assert api.bodies() == [
        {"name": "big", "network": "front", "vcpus": 4, "memory_mb": 8192},
        {"name": "hv3", "capacity": {"vcpus": 32, "memory_mb": 65536}},
    ]
    r = cli("--api", API, "hypervisor", "create", "hv3", "--vcpus", "32")
    assert r.exit_code == 1 and "capacity.memory_mb" in r.output
    r = cli("--api", API, "vm", "create", "acme", "x", "--network", "front", "--vcpus", "0")
    assert r.exit_code == 1 and "vcpus" in r.output
    assert len(api.requests) == 2  # bad sizes never reach the API


def test_create_with_bad_argument_fails_locally(cli, api) -> None:
    r = cli("--api", API, "network", "create", "acme", "back", "--cidr", "10.2.0.1/24")
    assert r.exit_code == 1
    assert api.requests == []
    assert r.stderr.startswith("error: cidr: ")


def test_bad_choice_is_a_usage_error(cli, api) -> None:
    r = cli("--api", API, "tenant", "create", "acme", "--encapsulation", "ipip")
    assert r.exit_code == 2
    assert api.requests == []


def test_delete_unknown_prints_404_errors(cli, api) -> None:
    api.on("DELETE", "/api/v1/tenants/acme/vms/ghost", 404,
           {"detail": {"errors": [{"path": "tenants/acme/vms/ghost", "reason": "not found"}]}})
    r = cli("--api", API, "vm", "delete", "acme", "ghost")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == ["error: tenants/acme/vms/ghost: not found"]


def test_delete_conflict_prints_409_errors(cli, api) -> None:
    api.on("DELETE", "/api/v1/tenants/acme/networks/front", 409,
           {"detail": {"errors": [{"path": "tenants[0].networks[0]",
                                   "reason": "has VMs: acme/web1"}]}})
    r = cli("--api", API, "network", "delete", "acme", "front")
    assert r.exit_code == 1
    assert "error: tenants[0].networks[0]: has VMs: acme/web1" in r.stderr


def test_server_error_without_json_is_reported(cli) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="Internal Server Error")

    r = cli("--api", API, "tenant", "list",
            factory=lambda url: ApiClient(url, transport=httpx.MockTransport(boom)))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == ["error: Internal Server Error"]


# --- status -------------------------------------------------------------------------------------

STATUS = {
    "revision": 12,
    "controller": {"role": "active", "startup_done": True},
    "switches": [
        {"hypervisor": "hv1", "ovsdb_connected": True, "openflow_connected": True,
         "synced": True, "flows": 41, "tunnels": 2, "vms_bound": 3, "converged": True},
        {"hypervisor": "hv2", "ovsdb_connected": True, "openflow_connected": False,
         "synced": False, "flows": 17, "tunnels": 1, "vms_bound": 0, "converged": False,
         "last_error": "openflow: connection reset"},
    ],
    "vms": {"total": 3, "bound": 3},
    "converged": False,
}


def test_status_table(cli, api) -> None:
    api.on("GET", "/api/v1/status", 200, STATUS)
    r = cli("--api", API, "status")
    assert r.exit_code == 0, r.output
    rows = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("│ hv")}
    assert set(rows) == {"hv1", "hv2"}
    assert "41" in rows["hv1"] and "yes" in rows["hv1"]
    assert "ovsdb only" in rows["hv2"] and "17" in rows["hv2"]
    assert "hv2: last error: openflow: connection reset" in r.stdout
    assert "revision 12: not converged" in r.stdout


def test_status_json(cli, api) -> None:
    api.on("GET", "/api/v1/status", 200, STATUS)
    r = cli("--api", API, "status", "--output", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == STATUS


# --- API URL resolution -------------------------------------------------------------------------


def _lab(root: Path, name: str, url: str | None) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "state.json").write_text(json.dumps({"name": name, "api_url": url}))


def test_resolve_api_url(tmp_path: Path) -> None:
    root = tmp_path / "labs"
    assert resolve_api_url(None, None, root) == DEFAULT_API_URL  # no labs dir at all
    _lab(root, "one", "http://10.0.0.1:8650/")
    assert resolve_api_url(None, None, root) == "http://10.0.0.1:8650"
    assert resolve_api_url("http://x:1", None, root) == "http://x:1"
    _lab(root, "two", "http://10.0.0.2:8650")
    assert resolve_api_url(None, None, root) == DEFAULT_API_URL  # ambiguous
    assert resolve_api_url(None, "two", root) == "http://10.0.0.2:8650"


def test_default_url_comes_from_the_only_lab(api, tmp_path: Path) -> None:
    root = tmp_path / "labs"
    _lab(root, "demo", "http://10.9.9.9:8650")
    api.on("GET", "/api/v1/hypervisors", 200, [])
    r = CliRunner().invoke(app, ["hypervisor", "list"],
                           obj=CliState(client_factory=api.factory, cache=None),
                           env={"HYPETUNNEL_LAB_DIR": str(root), "HYPETUNNEL_API": None,
                                "HYPETUNNEL_LAB": None})
    assert r.exit_code == 0, r.output
    assert api.urls == ["http://10.9.9.9:8650"]


def test_unknown_lab_is_an_error(cli, api) -> None:
    r = cli("--lab", "nosuch", "tenant", "list")
    assert r.exit_code == 1
    assert "no lab named 'nosuch'" in r.stderr
    assert api.requests == []


def test_errors_from_body_shapes() -> None:
    assert errors_from_body(404, "Not Found", {"detail": "Not Found"}) == [
        FieldError("", "Not Found")]
    assert errors_from_body(502, "Bad Gateway", None) == [FieldError("", "HTTP 502 Bad Gateway")]
    assert errors_from_body(422, "", {"detail": [
        {"loc": ["path", "name"], "msg": "too long", "type": "x"}]}) == [
        FieldError("name", "too long")]


def test_lab_url_falls_back_to_the_controller_record(tmp_path: Path) -> None:
    root = tmp_path / "labs"
    _lab(root, "one", None)
    assert resolve_api_url(None, None, root) == DEFAULT_API_URL
    (root / "one" / "controller").mkdir()
    (root / "one" / "controller" / "controller.json").write_text(
        json.dumps({"pid": 1, "api_url": "http://127.0.0.1:40001"}))
    assert resolve_api_url(None, None, root) == "http://127.0.0.1:40001"


# --- against the real API app (in process, no socket) --------------------------------------------


@pytest.fixture
def real_api() -> Any:
    """The real FastAPI app over an in-memory store, reached through starlette's TestClient."""
    app_mod = pytest.importorskip("hypetunnel.api.app")
    with warnings.catch_warnings():  # starlette's own deprecation notice about httpx, not ours
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from hypetunnel.controller.service import FabricService
    from hypetunnel.store.memory import MemoryStore
    from tests.unit.auth_helpers import authorized

    service = FabricService(MemoryStore())
    with authorized(TestClient(app_mod.create_app(service), base_url=API)) as http:
        yield lambda url: ApiClient(url, http=http)


def test_against_real_api(cli, real_api, intent_file) -> None:
    r = cli("--api", API, "apply", str(intent_file), "--dry-run", factory=real_api)
    assert r.exit_code == 0, r.output
    assert "Dry run" in r.stdout
    r = cli("--api", API, "tenant", "list", "-o", "json", factory=real_api)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == []  # the dry run stored nothing

    r = cli("--api", API, "apply", str(intent_file), factory=real_api)
    assert r.exit_code == 0, r.output
    assert any(ln.startswith("+ vm") and "acme/web1" in ln for ln in r.stdout.splitlines())
    r = cli("--api", API, "vm", "list", "acme", "-o", "json", factory=real_api)
    [vm] = json.loads(r.stdout)
    assert vm["id"] == "acme/web1" and vm["ip"] == "10.1.0.10"
    assert vm["mac"].startswith("02:") and vm["hypervisor"] in ("hv1", "hv2")

    r = cli("--api", API, "vm", "create", "acme", "web2", "--network", "front", factory=real_api)
    assert r.exit_code == 0, r.output
    assert "acme/web2" in r.stdout
    r = cli("--api", API, "network", "list", "acme", factory=real_api)
    assert r.exit_code == 0 and "10.1.0.0/24" in r.stdout and "1450" in r.stdout  # vxlan MTU

    r = cli("--api", API, "network", "delete", "acme", "front", factory=real_api)
    assert r.exit_code == 1  # still has VMs
    assert r.stderr.startswith("error: ")
    r = cli("--api", API, "vm", "delete", "acme", "ghost", factory=real_api)
    assert r.exit_code == 1 and "not found" in r.stderr
    r = cli("--api", API, "vm", "create", "acme", "web3", "--network", "nosuch",
            factory=real_api)
    assert r.exit_code == 1 and r.stderr.startswith("error: ")

    r = cli("--api", API, "status", "-o", "json", factory=real_api)
    assert r.exit_code == 0 and json.loads(r.stdout)["revision"] >= 1


def test_empty_list_says_so(cli, api) -> None:
    api.on("GET", "/api/v1/tenants/acme/vms", 200, [])
    r = cli("--api", API, "vm", "list", "acme")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "no VMs in acme"
