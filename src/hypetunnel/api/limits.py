"""Request body size limits, enforced while the body streams in: 413 with a JSON error.

A declared Content-Length over the limit is refused before a byte of the body is read; a
chunked body is counted as it arrives and refused the moment it passes the limit, so the
controller never holds more than the limit of one request in memory. The whole-fabric
`POST /api/v1/apply` carries every object of the fabric and gets a larger limit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypetunnel.api.errors import error_body
from hypetunnel.errors import FieldError

MIB = 1024 * 1024


def _default_large() -> dict[str, int]:
    return {"/api/v1/apply": 16 * MIB}


@dataclass(frozen=True)
class BodyLimits:
    default: int = 1 * MIB
    by_path: dict[str, int] = field(default_factory=_default_large)

    def limit(self, path: str) -> int:
        return self.by_path.get(path.rstrip("/") or "/", self.default)


class _TooLarge(Exception):
    pass


def _mib(n: int) -> str:
    return f"{n / MIB:g} MiB" if n % (MIB // 4) == 0 else f"{n} bytes"


def too_large(limits: BodyLimits, path: str) -> JSONResponse:
    limit = limits.limit(path)
    larger = ", ".join(f"{p} takes up to {_mib(n)}" for p, n in sorted(limits.by_path.items())
                       if n > limits.default)
    reason = f"the request body is over {_mib(limit)} ({limit} bytes)"
    if larger and limit == limits.default:
        reason += f"; {larger}"
    return JSONResponse(error_body([FieldError("", reason)]), status_code=413)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length itself
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.limit(scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await too_large(self.limits, scope["path"])(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def receiving() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app made of the interrupted read, the answer is 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, receiving, sending)
        if exceeded and not started:
            await too_large(self.limits, scope["path"])(scope, receive, send)
