"""HTTP mapping of the exception tree: every error body is {"detail": {"errors": [{path, reason}]}}.

422: invalid input (IntentInvalid, request-body validation); 404: NotFound; 409: Conflict
(already exists, still in use, stale revision); 503: the store failed. Errors that carry
FieldErrors (`.errors`) keep their paths; others get one error with an empty path.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hypetunnel.api.schemas import HypervisorBody
from hypetunnel.errors import Conflict, FieldError, HypeTunnelError, IntentInvalid, NotFound
from hypetunnel.model.intent import VM, Intent, Network, Tenant
from hypetunnel.model.loader import pydantic_field_errors
from hypetunnel.store.base import StoreUnavailable


def error_body(errors: Sequence[FieldError]) -> dict[str, object]:
    return {"detail": {"errors": [{"path": e.path, "reason": e.reason} for e in errors]}}


def _field_errors(exc: Exception, default_reason: str | None = None) -> list[FieldError]:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and all(isinstance(e, FieldError) for e in errors) and errors:
        return errors
    return [FieldError("", default_reason or str(exc))]


def status_of(exc: HypeTunnelError) -> int:
    if isinstance(exc, IntentInvalid):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, StoreUnavailable):
        return 503
    return 500


async def _hypetunnel_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HypeTunnelError)
    default = "not found" if isinstance(exc, NotFound) else None
    return JSONResponse(error_body(_field_errors(exc, default)), status_code=status_of(exc))


def _body_model(request: Request) -> tuple[tuple[str, ...], type[BaseModel]]:
    """(loc prefix to strip, model of the body) for the route, to name paths and allowed keys."""
    path = request.url.path.rstrip("/")
    if path.endswith("/apply"):
        # /apply wraps the intent document in {"intent": ...}: report paths inside the document
        # (`tenants[0].vms[2].ip`), as the CLI and the loader do.
        return ("body", "intent"), Intent
    if path.endswith("/networks"):
        return ("body",), Network
    if path.endswith("/vms"):
        return ("body",), VM
    if path.endswith("/tenants"):
        return ("body",), Tenant
    return ("body",), HypervisorBody


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    prefix, model = _body_model(request)
    errors = pydantic_field_errors(exc.errors(), model, prefix=prefix)
    # An error on the wrapper itself (e.g. a missing "intent" key) keeps its "body" root out.
    errors = [FieldError(e.path.removeprefix("body.").removeprefix("body"), e.reason)
              for e in errors]
    return JSONResponse(error_body(errors), status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HypeTunnelError, _hypetunnel_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
