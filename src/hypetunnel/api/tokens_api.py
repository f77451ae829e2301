"""REST routes of the tokens (admin only, see api/policy.py): create, list, revoke."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from hypetunnel.api.auth import Role
from hypetunnel.api.params import NAME_PATTERN
from hypetunnel.api.policy import PolicyRoute
from hypetunnel.api.tokens import MAX_EXPIRY, TokenRecord, TokenRegistry
from hypetunnel.model.intent import Name, StrictModel

Write = Callable[..., Awaitable[Any]]
TokenName = Annotated[str, Path(pattern=NAME_PATTERN, description="Token name")]


class TokenBody(StrictModel):
    name: Name
    role: Role
    tenant: Name | None = Field(None, description="Required for the tenant roles, refused for "
                                                  "the provider roles")
    expires_in: int | None = Field(None, ge=1, le=MAX_EXPIRY,
                                   description="Seconds until the token expires; none: never")


def tokens_router(tokens: TokenRegistry, write: Write) -> APIRouter:
    api = APIRouter(route_class=PolicyRoute, tags=["tokens"])

    @api.post("/tokens", status_code=201)
    async def create_token(body: TokenBody) -> dict[str, Any]:
        """A new token; `token` in the answer is its only copy (the store keeps a hash)."""
        record, token = await write(tokens.create, body.name, body.role.value, body.tenant,
                                    body.expires_in)
        return {**record.public(tokens.clock()), "token": token}

    @api.get("/tokens")
    async def list_tokens() -> list[dict[str, Any]]:
        """Every token, valid, expired or revoked, without its secret or hash."""
        now = tokens.clock()
        return [r.public(now) for r in tokens.records()]

    @api.delete("/tokens/{name}")
    async def revoke_token(name: TokenName) -> dict[str, Any]:
        """Refused from now on, on every controller (the record stays, name taken)."""
        record: TokenRecord = await write(tokens.revoke, name)
        return record.public(tokens.clock())

    return api
