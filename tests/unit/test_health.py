"""/healthz and /readyz: alive always, ready only when the runtime has no reason not to be."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from hypetunnel.api.app import create_app
from hypetunnel.controller.health import LoopLag
from hypetunnel.controller.service import FabricService
from hypetunnel.store.memory import MemoryStore


class Runtime:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def status(self) -> dict[str, object]:
        return {}

    def overlay(self) -> dict[str, object]:
        return {}

    def readiness(self) -> list[str]:
        return list(self.reasons)


def test_readyz_answers_503_with_every_reason_until_ready() -> None:
    runtime = Runtime()
    client = TestClient(create_app(FabricService(MemoryStore()), runtime))
    runtime.reasons = ["store unreachable: timed out", "switches not synced: hv2"]
    r = client.get("/api/v1/readyz")
    assert r.status_code == 503
    assert r.json() == {"detail": {"errors": [
        {"path": "", "reason": "store unreachable: timed out"},
        {"path": "", "reason": "switches not synced: hv2"}]}}
    assert client.get("/api/v1/healthz").json() == {"ok": True}  # alive all the same
    runtime.reasons = []
    r = client.get("/api/v1/readyz")
    assert r.status_code == 200 and r.json() == {"ok": True}


def test_readyz_without_a_runtime_is_not_ready() -> None:
    client = TestClient(create_app(FabricService(MemoryStore())))
    r = client.get("/api/v1/readyz")
    assert r.status_code == 503
    assert r.json()["detail"]["errors"][0]["reason"] == "no controller runtime"


def test_health_routes_are_in_the_openapi_document_once() -> None:
    client = TestClient(create_app(FabricService(MemoryStore()), Runtime()))
    doc = client.get("/openapi.json").json()
    assert "503" in doc["paths"]["/api/v1/readyz"]["get"]["responses"]
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))


def test_loop_lag_keeps_the_worst_recent_sample_and_counts_an_overdue_one() -> None:
    lag = LoopLag(period=0.05, window=2.0)
    now = time.monotonic()
    lag.record(now - 3.0, 0.9)  # outside the window: forgotten
    lag.record(now, 0.2)
    assert 0.2 <= lag.recent() < 0.3
    # No sample for a second although one is due every 50 ms: the loop is blocked now.
    lag = LoopLag(period=0.05, window=2.0)
    lag.record(now - 1.0, 0.0)
    assert lag.recent() >= 0.9
