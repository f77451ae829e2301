"""Routes that call into the controller runtime: an app built on a bare FabricService (tests,
tools) has no runtime, and such a route answers 404 naming what is missing."""

from __future__ import annotations

from typing import Any

from hypetunnel.errors import NotFound


def runtime_method(runtime: Any, name: str) -> Any:
    """`runtime.name`, or NotFound when there is no runtime (or it lacks that operation)."""
    fn = getattr(runtime, name, None)
    if fn is None:
        raise NotFound(f"{name} needs the controller runtime")
    return fn
