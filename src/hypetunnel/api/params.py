"""Path parameters of the REST API, declared with the same constraints as the intent's names.

Every object name in a URL is an intent `Name`: the OpenAPI document says so (clients and
contract testers generate valid names from it), and a name that cannot exist is refused as 422
naming the parameter rather than looked up and reported missing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import TypeAdapter

from hypetunnel.model.intent import Name

# Taken from the model so the URL and the body can never disagree on what a name is.
NAME_PATTERN: str = TypeAdapter(Name).json_schema()["pattern"]

TenantName = Annotated[str, Path(pattern=NAME_PATTERN, description="Tenant name")]
NetworkName = Annotated[str, Path(pattern=NAME_PATTERN, description="Network name")]
VmName = Annotated[str, Path(pattern=NAME_PATTERN, description="VM name")]
HypervisorName = Annotated[str, Path(pattern=NAME_PATTERN, description="Hypervisor name")]
