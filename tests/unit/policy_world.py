"""Two tenants on three hypervisors behind the real app, with one token per role, and a runtime
that traces with the real compiler: what the policy tests ask."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from hypetunnel.api.app import create_app
from hypetunnel.api.tokens import TokenRegistry
from hypetunnel.controller.service import FabricService
from hypetunnel.controller.tracing import trace
from hypetunnel.model.intent import Intent
from hypetunnel.store.memory import MemoryStore
from tests.unit.fabric_fixture import Fabric
from tests.unit.test_compiler_forwarding import INTENT

HYPERVISORS = ("hv1", "hv2", "hv3")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Runtime:
    """The runtime's API-facing methods; trace is the real one over the compiled fabric."""

    def __init__(self, intent: Intent) -> None:
        self.fabric = Fabric(intent)
        self.moved: list[tuple[str, str, bool]] = []

    def status(self) -> dict[str, Any]:
        return {"controller": {"running": True}, "switches": [{"hypervisor": "hv1"}],
                "converged": True}

    def overlay(self) -> dict[str, Any]:
        return {"hv1": {"tunnels": 2}}

    def bindings(self) -> dict[str, str]:
        return {"acme/web1": "hv1", "globex/web1": "hv1"}

    def trace(self, src: str, dst: str, kind: str = "ip") -> dict[str, Any]:
        return trace(self.fabric.topology, self.fabric.compiler, src, dst, kind)

    async def move(self, vm: str, to: str, cold: bool) -> dict[str, Any]:
        self.moved.append((vm, to, cold))
        return {"vm": vm, "to": to}

    async def drain(self, name: str) -> list[dict[str, Any]]:
        return []

    async def undrain(self, name: str) -> dict[str, Any]:
        return {"hypervisor": name}

    def moves(self) -> list[dict[str, Any]]:
        return [{"vm": "acme/web2", "seq": 1, "from": "hv1", "to": "hv2", "kind": "hot",
                 "start": 1.0, "end": 2.0, "interruption_ms": 0.0, "result": "done"},
                {"vm": "globex/db1", "seq": 1, "from": "hv2", "to": "hv3", "kind": "cold",
                 "start": 1.0, "end": 2.0, "interruption_ms": 5.0, "result": "done"}]

    async def failover(self) -> dict[str, Any]:
        return {"node": "ctl1", "term": 1}


class World:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.service = FabricService(self.store)
        self.service.apply(Intent.model_validate(INTENT))
        self.clock = Clock()
        self.tokens = TokenRegistry(self.service, clock=self.clock)
        self.runtime = Runtime(self.service.intent)
        self.app: FastAPI = create_app(self.service, self.runtime, tokens=self.tokens)
        self.http = TestClient(self.app)
        self.token = {
            "admin": self.mint("t-admin", "admin"),
            "operator": self.mint("t-operator", "operator"),
            "tenant-admin": self.mint("t-acme-admin", "tenant-admin", "acme"),
            "tenant-reader": self.mint("t-acme-reader", "tenant-reader", "acme"),
            "expired": self.mint("t-expired", "admin", expires_in=60),
            "revoked": self.mint("t-revoked", "admin"),
            "malformed": "not-a-token",
            "unknown": "ht.t-admin.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        }
        self.tokens.revoke("t-revoked")
        self.clock.now += 61  # t-expired is now past its time

    def mint(self, name: str, role: str, tenant: str | None = None,
             expires_in: int | None = None) -> str:
        return self.tokens.create(name, role, tenant, expires_in)[1]

    def headers(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.token[who]}"}

    def request(self, who: str | None, method: str, url: str, **kwargs: Any) -> Any:
        return self.http.request(method, url, headers=self.headers(who), **kwargs)
