"""Who is asking: roles, the principal a bearer token stands for, and the 401/403 answers.

Roles follow Neutron/Keystone: two provider roles (admin, operator) see the whole fabric; two
tenant roles (tenant-admin, tenant-reader) are bound to one tenant and see only it. What each
role may do on each route is decided in api/policy.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hypetunnel.api.errors import error_body
from hypetunnel.errors import FieldError, HypeTunnelError


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    TENANT_ADMIN = "tenant-admin"
    TENANT_READER = "tenant-reader"


PROVIDER_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
TENANT_ROLES = frozenset({Role.TENANT_ADMIN, Role.TENANT_READER})


@dataclass(frozen=True)
class Principal:
    name: str  # the token's name
    role: Role
    tenant: str | None  # set exactly for the tenant roles

    @property
    def is_provider(self) -> bool:
        return self.role in PROVIDER_ROLES


_REASONS = {
    "missing": "this route needs an Authorization: Bearer <token> header",
    "malformed": "the Authorization header is not 'Bearer ht.<name>.<secret>'",
    "unknown": "unknown token",
    "expired": "the token has expired",
    "revoked": "the token has been revoked",
    "orphaned": "the token's tenant no longer exists",
}


class Unauthenticated(HypeTunnelError):
    """401: no usable token (missing, malformed, unknown, expired, revoked or orphaned)."""

    def __init__(self, failure: str) -> None:
        self.failure = failure
        super().__init__(_REASONS.get(failure, failure))


class Forbidden(HypeTunnelError):
    """403: a valid token whose role may not do this."""


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; "" when the header is there
    but not of that form (malformed), None when there is none (missing)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


async def _unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unauthenticated)
    request.state.auth_failure = exc.failure
    return JSONResponse(error_body([FieldError("authorization", str(exc))]), status_code=401,
                        headers={"WWW-Authenticate": 'Bearer realm="hypetunnel"'})


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body([FieldError("", str(exc))]), status_code=403)


def install_auth_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Unauthenticated, _unauthenticated)
    app.add_exception_handler(Forbidden, _forbidden)
