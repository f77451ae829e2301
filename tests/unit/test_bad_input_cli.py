"""Bad command-line input is refused before anything happens, with one line naming the option;
trace errors through the API name what was not found."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hypetunnel.api.app import create_app
from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient
from hypetunnel.controller.service import FabricService
from hypetunnel.controller.tracing import trace
from hypetunnel.errors import NotFound
from hypetunnel.model.intent import Intent
from hypetunnel.southbound.openflow.server import parse_target
from hypetunnel.store.memory import MemoryStore
from tests.unit.auth_helpers import authorized
from tests.unit.fabric_fixture import Fabric
from tests.unit.test_compiler_forwarding import INTENT


class NoApi:
    """A client factory whose API must never be called."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, url: str) -> ApiClient:
        def handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(500, json={})

        return ApiClient(url, transport=httpx.MockTransport(handler))


def invoke(*args: str, factory: Any = None) -> Any:
    state = CliState(client_factory=factory or NoApi())
    return CliRunner().invoke(app, ["--api", "http://api.test", *args], obj=state,
                              env={"COLUMNS": "200"})


@pytest.mark.parametrize("timeout", ["-1", "0", "nan"])
def test_vm_move_refuses_a_non_positive_timeout_before_moving(timeout: str) -> None:
    api = NoApi()
    r = invoke("vm", "move", "acme/web1", "--to", "hv2", "--timeout", timeout, factory=api)
    assert r.exit_code == 1
    assert "timeout: must be a positive number of seconds" in r.output
    assert api.requests == []  # the move was not started


def test_drain_refuses_a_non_positive_timeout_before_draining() -> None:
    api = NoApi()
    r = invoke("hypervisor", "drain", "hv1", "--timeout", "-5", factory=api)
    assert r.exit_code == 1 and "timeout: must be a positive number" in r.output
    assert api.requests == []


@pytest.mark.parametrize(("target", "says"), [
    ("ssl:0.0.0.0:6653", "ssl: needs TLS (--tls-dir)"),
    ("tcp:0.0.0.0:99999", "expected tcp:HOST:PORT"),
    ("garbage", "expected tcp:HOST:PORT"),
    ("unix:", "expected tcp:HOST:PORT"),
])
def test_controller_run_refuses_a_bad_openflow_target_in_one_line(tmp_path: Any, target: str,
                                                                  says: str) -> None:
    r = CliRunner().invoke(app, ["controller", "run", "--state-dir", str(tmp_path / "state"),
                                 "--openflow", "tcp:127.0.0.1:0", "--openflow", target],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --openflow: ") and says in lines[0]
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not (tmp_path / "state").exists()  # nothing was started


def test_parse_target_accepts_what_the_help_promises() -> None:
    assert parse_target("tcp:0.0.0.0:6653") == ("tcp", "0.0.0.0", 6653)
    assert parse_target("tcp:[::1]:0") == ("tcp", "::1", 0)
    assert parse_target("unix:/run/of.sock") == ("unix", "/run/of.sock", 0)


# -- trace -------------------------------------------------------------------------------------
@pytest.fixture
def fabric() -> Fabric:
    return Fabric(Intent.model_validate(INTENT))


@pytest.mark.parametrize(("src", "dst", "param", "says"), [
    ("acme/nope", "acme/web2", "src", "unknown VM 'acme/nope'"),
    ("acme/web1", "acme/ghost", "dst", "'acme/ghost' is neither a VM"),
    ("acme/web1", "10.9.9.9", "dst", "'10.9.9.9' is neither a VM"),
])
def test_trace_names_what_was_not_found(fabric: Fabric, src: str, dst: str, param: str,
                                        says: str) -> None:
    with pytest.raises(NotFound) as info:
        trace(fabric.topology, fabric.compiler, src, dst)
    [e] = info.value.errors  # type: ignore[attr-defined]
    assert e.path == param and says in e.reason


def test_trace_through_the_api_answers_404_naming_the_vm(fabric: Fabric) -> None:
    class Runtime:
        def trace(self, src: str, dst: str, kind: str = "ip") -> dict[str, Any]:
            return trace(fabric.topology, fabric.compiler, src, dst, kind)

    service = FabricService(MemoryStore())
    with authorized(TestClient(create_app(service, Runtime()))) as c:  # type: ignore[arg-type]
        r = c.get("/api/v1/trace", params={"src": "acme/web1", "dst": "acme/ghost"})
    assert r.status_code == 404
    [e] = r.json()["detail"]["errors"]
    assert e["path"] == "dst" and "'acme/ghost' is neither a VM" in e["reason"]
