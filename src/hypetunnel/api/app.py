"""The REST API (prefix /api/v1): a thin JSON layer over FabricService and the runtime's view.

Endpoints are `async def` and run on the controller's event loop. Reads only look at the
service's in-memory intent. Writes (store commits) run in a worker thread within a bound
(api/writes.py), so a slow store never stalls the loop that carries OpenFlow and heartbeats.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from fastapi import APIRouter, Depends, FastAPI, Header, Response

from hypetunnel import __version__
from hypetunnel.api import guards as request_guards
from hypetunnel.api.alarms import alarms_router
from hypetunnel.api.auth import install_auth_handlers
from hypetunnel.api.bodies import strict_json_body
from hypetunnel.api.errors import ERROR_RESPONSES, install_error_handlers
from hypetunnel.api.health import health_router
from hypetunnel.api.metrics_route import install_request_metrics, metrics_router
from hypetunnel.api.mobility import mobility_router
from hypetunnel.api.openapi import DocumentedApp
from hypetunnel.api.params import HypervisorName, NetworkName, TenantName, VmName
from hypetunnel.api.policy import PolicyRoute, authorize, check_routes, document_security
from hypetunnel.api.revisions import etag, revision_of
from hypetunnel.api.schemas import (
    ApplyRequest,
    HypervisorBody,
    NetworkOut,
    PlanOut,
    VmOut,
)
from hypetunnel.api.tokens import TokenRegistry
from hypetunnel.api.tokens_api import tokens_router
from hypetunnel.api.usage import usage_router
from hypetunnel.api.writes import DEFAULT_WRITE_TIMEOUT, WriteRunner
from hypetunnel.controller.service import FabricService, ObjectNotFound
from hypetunnel.errors import FieldError, IntentInvalid, NotFound
from hypetunnel.model.intent import (
    VM,
    Hypervisor,
    Network,
    Tenant,
    network_encapsulation,
    network_mtu,
    vm_id,
)
from hypetunnel.store.audit import AuditStore

API_PREFIX = "/api/v1"


@runtime_checkable
class RuntimeView(Protocol):
    def status(self) -> dict[str, Any]:
        """Controller and switch status, JSON-able."""
        ...

    def overlay(self) -> dict[str, Any]:
        """Per hypervisor: tunnels, VNIs, flow counts, JSON-able."""
        ...


def _bindings(runtime: RuntimeView | None) -> dict[str, str]:
    # Optional extension of RuntimeView: bindings() -> {vm id: hypervisor where it is bound}.
    fn = getattr(runtime, "bindings", None)
    return dict(fn()) if callable(fn) else {}


def create_app(service: FabricService, runtime: RuntimeView | None = None, *,
               write_timeout: float = DEFAULT_WRITE_TIMEOUT,
               guards: request_guards.Guards | None = None,
               audit_store: AuditStore | None = None,
               tokens: TokenRegistry | None = None) -> FastAPI:
    """`write_timeout`: the bound of one write (then 503), see api/writes.py. `guards`: body
    and rate limits, audit (api/guards.py); `audit_store`: where the audit log is (default
    the service's store; the daemon passes its unfenced store). `tokens`: who may call
    (api/policy.py); by default the tokens stored beside the service's intent."""
    app = DocumentedApp(
        title="HypeTunnel",
        version=__version__,
        description="Per-tenant overlay networks on Open vSwitch hypervisors.",
        responses=ERROR_RESPONSES,
        # Authorization first: without a token, nothing about the request is looked at.
        dependencies=[Depends(authorize), Depends(strict_json_body)],
    )
    install_error_handlers(app)
    install_auth_handlers(app)
    tokens = tokens or TokenRegistry(service)
    write = WriteRunner(write_timeout).run
    api = APIRouter(prefix=API_PREFIX, route_class=PolicyRoute)

    def tenant_of(name: str) -> Tenant:
        t = service.intent.tenant(name)
        if t is None:
            raise ObjectNotFound(f"tenants/{name}")
        return t

    def network_out(t: Tenant, n: Network) -> dict[str, Any]:
        encap = network_encapsulation(service.intent.fabric, t)
        return {**n.model_dump(mode="json"), "tenant": t.name, "encapsulation": encap,
                "mtu": network_mtu(service.intent.fabric, encap)}

    def vm_out(t: Tenant, v: VM, bound: dict[str, str]) -> dict[str, Any]:
        vid = vm_id(t.name, v.name)
        return {"id": vid, "tenant": t.name, **v.model_dump(mode="json"),
                "bound": bound.get(vid)}

    # -- whole intent ---------------------------------------------------------------------------
    @api.get("/intent")
    async def get_intent(response: Response) -> dict[str, Any]:
        """The resolved intent: every VNI, IP, MAC and hypervisor filled in. Its ETag is the
        store revision it was read at: send it back as If-Match with POST /apply."""
        intent, revision = service.published
        response.headers["ETag"] = etag(revision)
        return intent.model_dump(mode="json")

    @api.post("/apply", response_model=PlanOut,
              responses={412: {"description": "If-Match names a revision that is not the "
                                               "current one"}})
    async def apply(req: ApplyRequest,
                    if_match: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Make the fabric exactly `intent` (absent objects are removed); `dry_run` only plans.
        With If-Match (the ETag of GET /intent) only while nothing was committed since."""
        return (await write(service.apply, req.intent, dry_run=req.dry_run,
                            expect_revision=revision_of(if_match))).to_dict()

    # -- hypervisors ----------------------------------------------------------------------------
    @api.get("/hypervisors")
    async def list_hypervisors() -> list[dict[str, Any]]:
        return [h.model_dump(mode="json") for h in service.intent.hypervisors]

    @api.get("/hypervisors/{name}")
    async def get_hypervisor(name: HypervisorName) -> dict[str, Any]:
        h = service.intent.hypervisor(name)
        if h is None:
            raise ObjectNotFound(f"hypervisors/{name}")
        return h.model_dump(mode="json")

    @api.put("/hypervisors/{name}", response_model=PlanOut)
    async def put_hypervisor(name: HypervisorName, body: HypervisorBody) -> dict[str, Any]:
        if body.name is not None and body.name != name:
            raise IntentInvalid([FieldError("name", f"{body.name!r} does not match the URL's "
                                                    f"{name!r}")])
        try:
            hv = Hypervisor(name=name, underlay_ip=body.underlay_ip, ovsdb=body.ovsdb,
                            datapath_type=body.datapath_type, capacity=body.capacity,
                            schedulable=body.schedulable)
        except ValueError as exc:  # the URL's name is not a valid name
            raise IntentInvalid([FieldError("name", f"invalid hypervisor name {name!r}")]) from exc
        return (await write(service.upsert_hypervisor, hv)).to_dict()

    @api.delete("/hypervisors/{name}", response_model=PlanOut)
    async def delete_hypervisor(name: HypervisorName) -> dict[str, Any]:
        return (await write(service.delete_hypervisor, name)).to_dict()

    # -- tenants --------------------------------------------------------------------------------
    @api.get("/tenants")
    async def list_tenants() -> list[dict[str, Any]]:
        return [t.model_dump(mode="json") for t in service.intent.tenants]

    @api.post("/tenants", response_model=PlanOut)
    async def create_tenant(body: Tenant) -> dict[str, Any]:
        return (await write(service.create_tenant, body)).to_dict()

    @api.get("/tenants/{tenant}")
    async def get_tenant(tenant: TenantName) -> dict[str, Any]:
        return tenant_of(tenant).model_dump(mode="json")

    @api.delete("/tenants/{tenant}", response_model=PlanOut)
    async def delete_tenant(tenant: TenantName) -> dict[str, Any]:
        """Removes the tenant with all its networks and VMs."""
        return (await write(service.delete_tenant, tenant)).to_dict()

    # -- networks -------------------------------------------------------------------------------
    @api.get("/tenants/{tenant}/networks", response_model=list[NetworkOut])
    async def list_networks(tenant: TenantName) -> list[dict[str, Any]]:
        t = tenant_of(tenant)
        return [network_out(t, n) for n in t.networks]

    @api.post("/tenants/{tenant}/networks", response_model=PlanOut)
    async def create_network(tenant: TenantName, body: Network) -> dict[str, Any]:
        return (await write(service.create_network, tenant, body)).to_dict()

    @api.get("/tenants/{tenant}/networks/{network}", response_model=NetworkOut)
    async def get_network(tenant: TenantName, network: NetworkName) -> dict[str, Any]:
        t = tenant_of(tenant)
        for n in t.networks:
            if n.name == network:
                return network_out(t, n)
        raise ObjectNotFound(f"tenants/{tenant}/networks/{network}")

    @api.delete("/tenants/{tenant}/networks/{network}", response_model=PlanOut)
    async def delete_network(tenant: TenantName, network: NetworkName) -> dict[str, Any]:
        """409 while VMs are still attached to the network."""
        return (await write(service.delete_network, tenant, network)).to_dict()

    # -- VMs ------------------------------------------------------------------------------------
    @api.get("/tenants/{tenant}/vms", response_model=list[VmOut])
    async def list_vms(tenant: TenantName) -> list[dict[str, Any]]:
        t = tenant_of(tenant)
        bound = _bindings(runtime)
        return [vm_out(t, v, bound) for v in t.vms]

    @api.post("/tenants/{tenant}/vms", response_model=PlanOut)
    async def create_vm(tenant: TenantName, body: VM) -> dict[str, Any]:
        return (await write(service.create_vm, tenant, body)).to_dict()

    @api.get("/tenants/{tenant}/vms/{vm}", response_model=VmOut)
    async def get_vm(tenant: TenantName, vm: VmName) -> dict[str, Any]:
        t = tenant_of(tenant)
        for v in t.vms:
            if v.name == vm:
                return vm_out(t, v, _bindings(runtime))
        raise ObjectNotFound(f"tenants/{tenant}/vms/{vm}")

    @api.delete("/tenants/{tenant}/vms/{vm}", response_model=PlanOut)
    async def delete_vm(tenant: TenantName, vm: VmName) -> dict[str, Any]:
        return (await write(service.delete_vm, tenant, vm)).to_dict()

    # -- runtime --------------------------------------------------------------------------------
    @api.get("/status")
    async def status() -> dict[str, Any]:
        """Store revision plus the runtime's view of the controller and switches."""
        base: dict[str, Any] = {"controller": {"running": False}, "switches": [],
                                "converged": False}
        if runtime is not None:
            base.update(runtime.status())
        base["revision"] = service.revision
        return base

    @api.get("/overlay")
    async def overlay() -> dict[str, Any]:
        return runtime.overlay() if runtime is not None else {}

    @api.get("/controller")
    async def controller() -> dict[str, Any]:
        """This controller's role, term and the current leader (HA pair)."""
        return dict(runtime.status().get("controller", {})) if runtime is not None else {}

    @api.post("/controller/failover")
    async def failover() -> dict[str, Any]:
        """Graceful hand-over to the standby (409 if this one is not active)."""
        fn = getattr(runtime, "failover", None)
        if fn is None:
            raise NotFound("failover needs the controller runtime")
        return dict(await fn())

    @api.get("/trace")
    async def trace(src: str, dst: str, kind: Literal["ip", "arp"] = "ip") -> dict[str, Any]:
        """Where a frame from VM `src` to `dst` (VM id or IP) goes: switches, tunnels, VNIs."""
        fn = getattr(runtime, "trace", None)
        if fn is None:
            raise NotFound("tracing needs the controller runtime")
        return dict(fn(src, dst, kind))

    app.include_router(api)
    app.include_router(mobility_router(runtime), prefix=API_PREFIX)
    app.include_router(alarms_router(runtime), prefix=API_PREFIX)
    app.include_router(usage_router(runtime), prefix=API_PREFIX)
    app.include_router(health_router(runtime), prefix=API_PREFIX)
    app.include_router(metrics_router(runtime), prefix=API_PREFIX)
    app.include_router(tokens_router(tokens, write), prefix=API_PREFIX)
    app.state.service = service
    app.state.runtime = runtime
    app.state.tokens = tokens
    # Last: the guards wrap everything added before them (see api/guards.py); the audit
    # route they add is ruled like every other one.
    request_guards.install(app, audit_store or service.store, guards, prefix=API_PREFIX)
    install_request_metrics(app, runtime)
    document_security(app)
    check_routes(app)  # a route without a policy rule would be open to every token
    return app
