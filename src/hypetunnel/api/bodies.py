"""Request bodies are JSON, and JSON types are kept: true is not 1, "5001" is not a number.

FastAPI validates a body in pydantic's lax Python mode, which turns `0` into False, `true`
into 1 and an integer into an IPv4 address. Every route that takes a body is checked here
first (an app-wide dependency, so each route gets it, also those of other routers): the media
type must be JSON (else 415), then the body is validated in pydantic's strict JSON mode, where
only the JSON type the schema names is accepted. A number with a zero fraction (876.0) is still
an integer, as JSON Schema counts it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from hypetunnel.errors import FieldError, HypeTunnelError


class UnsupportedMediaType(HypeTunnelError):
    """A request body that is not declared as JSON."""

    def __init__(self, content_type: str | None) -> None:
        shown = repr(content_type) if content_type else "none"
        self.errors = [FieldError("", f"the body must be sent as application/json "
                                      f"(Content-Type is {shown})")]
        super().__init__(self.errors[0].reason)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


class _IntegralJsonRequest(Request):
    """A request whose JSON body reads integral floats as integers: JSON has one number type
    and JSON Schema counts 2.0 as the integer 2, so the published schema allows it, while
    the model's strict integers (which refuse true and "2") would refuse the float."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=_number)
        return self._json


class IntegralJsonRoute(APIRoute):
    """Route class for every router with a JSON body (see _IntegralJsonRequest)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_integral_json(request: Request) -> Response:
            return await handler(_IntegralJsonRequest(request.scope, request.receive))

        return with_integral_json


async def strict_json_body(request: Request) -> None:
    """App-wide dependency; a no-op on routes without a body."""
    field = getattr(request.scope.get("route"), "body_field", None)
    if field is None:
        return
    raw = await request.body()
    if not raw:
        return  # no body at all: the route's own validation says it is required
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType(request.headers.get("content-type"))
    # FastAPI has parsed this body already (a malformed one never gets here); parse it again
    # with integral floats as ints, then validate the JSON text strictly.
    data = json.loads(raw, parse_float=_number)
    adapter = _adapter(field.field_info.annotation)
    try:
        adapter.validate_json(json.dumps(data), strict=True)
    except ValidationError as strict:
        # Report what lax validation finds with its usual messages, plus what only strict
        # validation refuses (a JSON value of the wrong type that lax mode would convert).
        errors = _errors(adapter, data)
        seen = {tuple(e["loc"]) for e in errors}
        errors += [e for e in strict.errors() if tuple(e["loc"]) not in seen]
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in errors]) from strict


def _errors(adapter: TypeAdapter[Any], data: Any) -> list[Any]:
    try:
        adapter.validate_python(data)
    except ValidationError as e:
        return list(e.errors())
    return []
