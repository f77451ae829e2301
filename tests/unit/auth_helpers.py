"""Tokens for tests of the API: every route but the health probes needs one."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from hypetunnel.api.tokens import TokenRegistry
from hypetunnel.controller.service import FabricService
from hypetunnel.store.memory import MemoryStore


def mint(app: FastAPI, name: str = "test-admin", role: str = "admin",
         tenant: str | None = None, expires_in: int | None = None) -> str:
    """A new token of `role`, stored through the app's own registry."""
    _, token = app.state.tokens.create(name, role, tenant, expires_in)
    return str(token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_client(app: FastAPI, **kwargs: Any) -> TestClient:
    """A TestClient that sends an admin token with every request."""
    client = TestClient(app, **kwargs)
    client.headers.update(bearer(mint(app)))
    return client


def separate_tokens() -> TokenRegistry:
    """Tokens kept in a store of their own: the tested store's revisions stay as they were."""
    return TokenRegistry(FabricService(MemoryStore()))


def authorized(client: TestClient) -> TestClient:
    """`client` (of an app from create_app) sending an admin token with every request."""
    client.headers.update(bearer(mint(client.app)))  # type: ignore[arg-type]
    return client
