"""HTTP mapping of the exception tree: every error body is {"detail": {"errors": [{path, reason}]}}.

400: the body is not JSON; 404: NotFound (or no such route); 405: method not allowed (with
the Allow header of the path); 409: Conflict (already exists, still in use, stale revision);
415: the body is not declared as JSON; 422: invalid input (IntentInvalid, request validation);
503: the store failed or did not answer in time. Errors that carry FieldErrors (`.errors`) keep
their paths; others get one error with an empty path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from hypetunnel.api.bodies import UnsupportedMediaType
from hypetunnel.api.schemas import ApplyRequest, ErrorOut
from hypetunnel.errors import (
    Conflict,
    FieldError,
    HypeTunnelError,
    IntentInvalid,
    NotFound,
    PreconditionFailed,
)
from hypetunnel.model.intent import Intent
from hypetunnel.model.loader import pydantic_field_errors
from hypetunnel.store.base import StoreUnavailable

# Documented on every route: any of them can meet these (a body route the first three).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not valid JSON"},
    404: {"model": ErrorOut, "description": "Unknown object"},
    409: {"model": ErrorOut, "description": "Conflict with existing objects or revision"},
    413: {"model": ErrorOut, "description": "The body is over its limit (api/limits.py)"},
    415: {"model": ErrorOut, "description": "The body is not sent as application/json"},
    422: {"model": ErrorOut, "description": "Invalid intent, request body or parameter"},
    429: {"model": ErrorOut, "description": "Over the caller's rate limit (see Retry-After)"},
    503: {"model": ErrorOut, "description": "The store failed or did not answer in time"},
}


ECHO_LIMIT = 300  # characters of one path or reason: an error never echoes a huge request back
MAX_ERRORS = 200  # errors listed in one answer (then one more says how many were left out)


def _clipped(text: str) -> str:
    if len(text) <= ECHO_LIMIT:
        return text
    return f"{text[:ECHO_LIMIT]}... ({len(text)} characters, clipped)"


def error_body(errors: Sequence[FieldError]) -> dict[str, object]:
    shown = [{"path": _clipped(e.path), "reason": _clipped(e.reason)}
             for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        shown.append({"path": "", "reason": f"... and {len(errors) - MAX_ERRORS} more errors"})
    return {"detail": {"errors": shown}}


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
    if isinstance(exc, PreconditionFailed):
        return 412
    if isinstance(exc, UnsupportedMediaType):
        return 415
    if isinstance(exc, StoreUnavailable):
        return 503
    return 500


async def _hypetunnel_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HypeTunnelError)
    default = "not found" if isinstance(exc, NotFound) else None
    return JSONResponse(error_body(_field_errors(exc, default)), status_code=status_of(exc))


def _body_model(request: Request) -> tuple[tuple[str, ...], type[BaseModel]]:
    """(loc prefix to strip, model of the body) for the route, to name paths and allowed keys."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    if model is ApplyRequest:
        # /apply wraps the intent document in {"intent": ...}: report paths inside the document
        # (`tenants[0].vms[2].ip`), as the CLI and the loader do.
        return ("body", "intent"), Intent
    if isinstance(model, type) and issubclass(model, BaseModel):
        return ("body",), model
    return ("body",), Intent  # a route without a body model: only its parameters can be wrong


def _not_json(errors: Sequence[Any]) -> JSONResponse | None:
    """400 for a body that does not parse as JSON at all (FastAPI reports it as json_invalid)."""
    for e in errors:
        if e.get("type") == "json_invalid":
            why = (e.get("ctx") or {}).get("error") or "malformed"
            loc = e.get("loc", ())
            at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            return JSONResponse(error_body([FieldError("", f"the body is not valid JSON: "
                                                           f"{why}{at}")]), status_code=400)
    return None


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    not_json = _not_json(raw)
    if not_json is not None:
        return not_json
    prefix, model = _body_model(request)
    body = [e for e in raw if tuple(e.get("loc", ()))[:1] == ("body",)]
    params = [e for e in raw if tuple(e.get("loc", ()))[:1] != ("body",)]
    errors = pydantic_field_errors(body, model, prefix=prefix)
    # An error on the wrapper itself (e.g. a missing "intent" key) keeps its "body" root out.
    errors = [FieldError(e.path.removeprefix("body.").removeprefix("body"), e.reason)
              for e in errors]
    for e in params:  # ("path", "tenant") / ("query", "kind"): named by the parameter
        errors += pydantic_field_errors([e], model, prefix=tuple(e["loc"][:1]))
    return JSONResponse(error_body(errors), status_code=422)


def _matches(template: str, path: str) -> bool:
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
        return False
    return all(w == g or (w.startswith("{") and bool(g)) for w, g in zip(want, got, strict=True))


def allowed_methods(app: FastAPI, path: str) -> list[str] | None:
    """The methods the OpenAPI document lists for the path template matching `path` (the
    Allow header of a 405), or None when no documented path matches."""
    for template, item in app.openapi().get("paths", {}).items():
        if _matches(template, path):
            return sorted(m.upper() for m in item if m in _HTTP_METHODS)
    return None


_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _http_error(app: FastAPI) -> Any:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            documented = allowed_methods(app, request.url.path)
            if documented is not None:  # routers only know their own route's methods
                headers["Allow"] = ", ".join(documented)
            reason = (f"{request.method} is not allowed here "
                      f"(allowed: {headers.get('Allow', 'none')})")
        elif exc.status_code == 404:
            reason = f"no such route: {request.url.path}"
        elif exc.status_code == 400:
            # FastAPI's "There was an error parsing the body": e.g. a body that is not UTF-8.
            reason = "the body is not valid JSON (it must be UTF-8 encoded JSON)"
        else:
            reason = str(exc.detail)
        return JSONResponse(error_body([FieldError("", reason)]), status_code=exc.status_code,
                            headers=headers)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HypeTunnelError, _hypetunnel_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error(app))
