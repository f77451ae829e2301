"""Request and response bodies of the REST API (beyond the intent models themselves)."""

from __future__ import annotations

from ipaddress import IPv4Address

from pydantic import BaseModel, ConfigDict, StrictBool

from hypetunnel.model.intent import (
    Capacity,
    DatapathType,
    Encapsulation,
    Intent,
    Name,
    StrictModel,
)


class ApplyRequest(StrictModel):
    intent: Intent
    # Strict: a flag that decides whether anything is written is true or false, never 0 or "no".
    dry_run: StrictBool = False


class HypervisorBody(StrictModel):
    """PUT /hypervisors/{name}: the name comes from the URL (a body name must match it).
    Omitted fields keep their stored value (so `{"schedulable": false}` alone drains)."""

    name: Name | None = None
    underlay_ip: IPv4Address | None = None
    ovsdb: str | None = None
    datapath_type: DatapathType | None = None
    capacity: Capacity | None = None
    schedulable: StrictBool | None = None


class PlanItemOut(BaseModel):
    kind: str
    key: str
    detail: str


class PlanOut(BaseModel):
    added: list[PlanItemOut]
    changed: list[PlanItemOut]
    removed: list[PlanItemOut]
    revision: int
    applied: bool


class NetworkOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    cidr: str
    vni: int
    encapsulation: Encapsulation
    mtu: int


class VmOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str  # "tenant/vm": the iface-id of its switch port
    name: str
    network: str
    hypervisor: str
    ip: str
    mac: str
    bound: str | None = None  # hypervisor where the controller sees the port, if known


class ErrorItem(BaseModel):
    path: str
    reason: str


class ErrorDetail(BaseModel):
    errors: list[ErrorItem]


class ErrorOut(BaseModel):
    detail: ErrorDetail
