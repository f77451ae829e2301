"""The OpenAPI document, completed with the constraints pydantic cannot infer from the models.

The intent's models check some strings with validators (an IPv4 network with room for hosts,
a unicast MAC); JSON Schema only sees "a string". Declared here as patterns, so that a client
generating requests from /openapi.json produces what the API accepts, and nothing else.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

# Network._room_for_hosts: a gateway and VMs need at least a /29.
MAX_NETWORK_PREFIX = 29
# Two hex digits, six times; the first octet's least significant bit 0 (unicast).
# Unicast (even first octet) and not all zeros, as the model requires.
MAC_PATTERN = r"^(?!00:00:00:00:00:00$)[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$"


def _octet(bits: int) -> str:
    """Regex of the octet values whose low (8 - bits) bits are zero."""
    if bits >= 8:
        return r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    step = 1 << (8 - bits)
    return "(" + "|".join(str(v) for v in range(255 - 255 % step, -1, -step)) + ")"


def cidr_pattern(max_prefix: int = MAX_NETWORK_PREFIX) -> str:
    """Regex of the IPv4 networks (host bits zero, as ipaddress.IPv4Network demands) whose
    prefix is at most `max_prefix`, written a.b.c.d/len without leading zeros."""
    alternatives = []
    for prefix in range(max_prefix + 1):
        octets = [_octet(max(0, min(8, prefix - 8 * i))) for i in range(4)]
        alternatives.append(r"\.".join(octets) + f"/{prefix}")
    return "^(" + "|".join(alternatives) + ")$"


def _declare_networks(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("format") == "ipv4network":
            node["pattern"] = cidr_pattern()
        for value in node.values():
            _declare_networks(value)
    elif isinstance(node, list):
        for value in node:
            _declare_networks(value)


def _declare_mac(schemas: dict[str, Any]) -> None:
    vm = schemas.get("VM", {}).get("properties", {})
    for variant in vm.get("mac", {}).get("anyOf", []):
        if variant.get("type") == "string":
            variant["pattern"] = MAC_PATTERN


# What model.fields' OVSDB endpoint check accepts (a port without leading zeros, 1-65535).
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
OVSDB_PATTERN = (r"^(unix:[^\u0000]+|(tcp|ssl):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]"
                 r"([A-Za-z0-9.-]*[A-Za-z0-9])?):" + _PORT + r")$")


def _declare_ovsdb(schemas: dict[str, Any]) -> None:
    for model in schemas.values():
        field = model.get("properties", {}).get("ovsdb", {})
        for variant in [field, *field.get("anyOf", [])]:
            if variant.get("type") == "string":
                variant["pattern"] = OVSDB_PATTERN


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the validators' constraints to a generated OpenAPI document (in place)."""
    _declare_networks(schema)
    schemas = schema.get("components", {}).get("schemas", {})
    _declare_mac(schemas)
    _declare_ovsdb(schemas)
    return schema


class DocumentedApp(FastAPI):
    """FastAPI whose /openapi.json carries the validators' constraints too."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = complete(super().openapi())
        return self.openapi_schema
