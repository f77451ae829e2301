"""Per-caller rate limit: a token bucket per bearer token (by its hash) or, without a token,
per client address; an empty bucket answers 429 with Retry-After.

Defaults (RateLimit) are generous for people and scripts, and there to stop a flood: 200
requests/s sustained with bursts of 400 per caller. A caller that rotates made-up tokens
would get a fresh bucket per token, so 401 answers also drain a bucket of the client address
(10/s, bursts of 100); while that one is empty, every request from the address gets 429. The
table of buckets is bounded (least recently used callers are forgotten). Health probes are
never limited. The daemon sets rate and burst (`controller run --api-rate/--api-burst`).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hypetunnel.api.errors import error_body
from hypetunnel.errors import FieldError


def _exempt() -> frozenset[str]:
    return frozenset({"/api/v1/healthz", "/api/v1/readyz"})


@dataclass(frozen=True)
class RateLimit:
    rate: float = 200.0  # requests per second per caller, sustained
    burst: float = 400.0
    refused_rate: float = 10.0  # 401 answers per second per client address
    refused_burst: float = 100.0
    callers: int = 10_000  # buckets remembered (each ~100 bytes)
    exempt: frozenset[str] = field(default_factory=_exempt)
    clock: Callable[[], float] = time.monotonic


class TokenBuckets:
    def __init__(self, rate: float, burst: float, size: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.size, self._clock = rate, burst, size, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (level, at)

    def _level(self, key: str) -> float:
        now = self._clock()
        level, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, level + (now - at) * self.rate)

    def _set(self, key: str, level: float) -> None:
        self._buckets[key] = (level, self._clock())
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)

    def take(self, key: str) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is."""
        level = self._level(key)
        if level >= 1:
            self._set(key, level - 1)
            return 0.0
        return (1 - level) / self.rate

    def wait(self, key: str) -> float:
        """Seconds until the bucket holds a token (0.0 now), taking nothing."""
        level = self._level(key)
        return 0.0 if level >= 1 else (1 - level) / self.rate


def caller_key(scope: Scope) -> tuple[str, str]:
    """(bucket key, client address): the token's hash when one is sent, else the address."""
    client = scope.get("client")
    address = client[0] if client else "unknown"
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return "token:" + hashlib.sha256(token.strip()).hexdigest()[:32], address
    return "address:" + address, address


def too_many(wait: float, why: str) -> JSONResponse:
    seconds = max(1, math.ceil(wait))
    return JSONResponse(error_body([FieldError("", f"{why}; retry in {seconds} s")]),
                        status_code=429, headers={"Retry-After": str(seconds)})


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: RateLimit) -> None:
        self.app = app
        self.limit = limit
        self.callers = TokenBuckets(limit.rate, limit.burst, limit.callers, limit.clock)
        self.refused = TokenBuckets(limit.refused_rate, limit.refused_burst, limit.callers,
                                    limit.clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.limit.exempt:
            await self.app(scope, receive, send)
            return
        key, address = caller_key(scope)
        wait = self.refused.wait(address)
        if wait:
            await too_many(wait, "too many requests with invalid credentials from "
                                 "this address")(scope, receive, send)
            return
        wait = self.callers.take(key)
        if wait:
            await too_many(wait, f"over {self.limit.rate:g} requests/s (bursts of "
                                 f"{self.limit.burst:g})")(scope, receive, send)
            return
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, sending)
        if status == 401:
            self.refused.take(address)
