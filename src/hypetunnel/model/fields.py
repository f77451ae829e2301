"""Field types of the intent that pydantic's defaults would get wrong: strict about what a
person wrote. A YAML `true` or "5001" is a mistake to report, not a value to convert; so is an
address written as an integer. Request bodies carrying these fields use them too."""

from __future__ import annotations

import functools
import re
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ValidationInfo

# OVSDB endpoints as ovsdb-server and the Python OVS client take them.
OVSDB_TCP_RE = re.compile(r"^(tcp|ssl):(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
                          r":(\d{1,5})$")


@functools.lru_cache(maxsize=65536)
def _parsed(kind: type[IPv4Address] | type[IPv4Network], text: str) -> IPv4Address | IPv4Network:
    # Parsing an address in Python costs ~10 us, and intents repeat them (tenants reuse the
    # same private ranges); both types are immutable, so sharing parsed values is safe.
    return kind(text)


def _written_as_text(kind: type[IPv4Address] | type[IPv4Network], what: str,
                     example: str) -> BeforeValidator:
    """Addresses must be written as text: pydantic would otherwise turn the integer 167772161
    into 10.0.0.1, which is never what a person meant. Parsed objects (from code) pass."""

    def check(v: object, info: ValidationInfo) -> object:
        if isinstance(v, str):
            if info.mode == "json":
                return v  # strict JSON validation wants the text; pydantic parses it
            try:
                return _parsed(kind, v.strip())  # type: ignore[arg-type]  # classes hash
            except ValueError:
                return v  # pydantic's own validator reports it, in its usual terms
        if isinstance(v, kind):
            return v
        raise ValueError(f"must be {what} written as text like {example}, not {v!r}")

    return BeforeValidator(check)


def _ovsdb_endpoint(v: str) -> str:
    # Checked here: a malformed endpoint used to be accepted and then polled forever.
    if v.startswith("unix:"):
        if len(v) > len("unix:") and "\0" not in v:
            return v
    else:
        m = OVSDB_TCP_RE.match(v)
        if m and 1 <= int(m.group(4)) <= 65535:
            return v
    raise ValueError(f"must be an OVSDB endpoint tcp:HOST:PORT, ssl:HOST:PORT or unix:PATH "
                     f"(port 1-65535), not {v!r}")


Address = Annotated[IPv4Address, _written_as_text(IPv4Address, "an IPv4 address", "10.0.0.1")]
Cidr = Annotated[IPv4Network, _written_as_text(IPv4Network, "an IPv4 network", "10.1.0.0/24")]
OvsdbEndpoint = Annotated[str, AfterValidator(_ovsdb_endpoint)]
