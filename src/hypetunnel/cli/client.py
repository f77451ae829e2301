"""A small synchronous client for the HypeTunnel REST API (/api/v1), one method per route.

Every failure leaves as a CliError: HTTP 4xx/5xx as ApiError carrying the {path, reason} list
of the response body, transport failures as ApiUnreachable naming the URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from hypetunnel.errors import FieldError, HypeTunnelError

API_PREFIX = "/api/v1"
JSON = dict[str, Any]


class CliError(HypeTunnelError):
    """Something the CLI reports as "error: [source: ]path: reason" lines and exit code 1."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(str(e) for e in errors))


class ApiError(CliError):
    """The API answered with an error status; `errors` comes from its body."""

    def __init__(self, status: int, errors: list[FieldError], url: str) -> None:
        self.status = status
        self.url = url
        super().__init__(errors)


class ApiUnreachable(CliError):
    """No HTTP answer at all: nothing listening, timeout, broken connection."""

    def __init__(self, base_url: str, reason: str) -> None:
        self.base_url = base_url
        super().__init__([FieldError("", reason)])


def _loc_to_path(loc: list[Any]) -> str:
    """FastAPI's default ("body", "intent", "tenants", 0, "ip") -> "intent.tenants[0].ip"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "path", "query"):
        parts = parts[1:]
    path = ""
    for p in parts:
        path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
    return path


def errors_from_body(status: int, reason_phrase: str, body: Any) -> list[FieldError]:
    """Accept the contract's {"detail": {"errors": [...]}} and FastAPI's defaults."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, dict) and isinstance(detail.get("errors"), list):
        items = detail["errors"]
    elif isinstance(detail, list):
        items = detail
    elif isinstance(detail, str) and detail:
        return [FieldError("", detail)]
    else:
        return [FieldError("", f"HTTP {status} {reason_phrase}".strip())]
    errors = []
    for item in items:
        if isinstance(item, dict) and ("reason" in item or "path" in item):
            errors.append(FieldError(str(item.get("path", "")), str(item.get("reason", ""))))
        elif isinstance(item, dict) and "msg" in item:  # FastAPI RequestValidationError item
            errors.append(FieldError(_loc_to_path(item.get("loc", [])), str(item["msg"])))
        else:
            errors.append(FieldError("", str(item)))
    return errors or [FieldError("", f"HTTP {status} {reason_phrase}".strip())]


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        """`transport` or a whole `http` client (e.g. starlette's TestClient) may be injected."""
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None  # an injected client belongs to whoever made it
        http_base = self.base_url
        if self.base_url.startswith("unix:"):  # an API served on a unix socket (the HA lab's)
            transport = transport or httpx.HTTPTransport(uds=self.base_url.removeprefix("unix:"))
            http_base = "http://hypetunnel"
        self._http = http or httpx.Client(
            base_url=http_base, transport=transport, timeout=timeout
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{API_PREFIX}{path}"
        try:
            response = self._http.request(method, url, json=body)
        except httpx.ConnectError as e:
            raise ApiUnreachable(
                self.base_url,
                f"cannot reach the HypeTunnel API at {self.base_url} (is the controller "
                "running? try `hypetunnel lab up FILE`)",
            ) from e
        except httpx.TimeoutException as e:
            raise ApiUnreachable(
                self.base_url, f"the HypeTunnel API at {self.base_url} did not answer in time"
            ) from e
        except httpx.TransportError as e:
            raise ApiUnreachable(
                self.base_url, f"talking to the HypeTunnel API at {self.base_url} failed: {e}"
            ) from e
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = response.text.strip()[:200] or None
        if response.is_error:
            errors = errors_from_body(response.status_code, response.reason_phrase, data)
            raise ApiError(response.status_code, errors, str(response.request.url))
        return data

    @staticmethod
    def _seg(name: str) -> str:
        return quote(name, safe="")

    # --- routes -------------------------------------------------------------------------------

    def healthz(self) -> JSON:
        return self._request("GET", "/healthz")

    def get_intent(self) -> JSON:
        return self._request("GET", "/intent")

    def apply(self, intent: Mapping[str, Any], dry_run: bool = False) -> JSON:
        return self._request("POST", "/apply", {"intent": dict(intent), "dry_run": dry_run})

    def status(self) -> JSON:
        return self._request("GET", "/status")

    def overlay(self) -> JSON:
        return self._request("GET", "/overlay")

    def trace(self, src: str, dst: str, kind: str = "ip") -> JSON:
        return self._request("GET", "/trace?" + urlencode({"src": src, "dst": dst, "kind": kind}))

    def move_vm(self, tenant: str, name: str, to: str, cold: bool = False) -> JSON:
        return self._request("POST", f"/tenants/{self._seg(tenant)}/vms/{self._seg(name)}/move",
                             {"to": to, "cold": cold})

    def drain(self, name: str) -> Any:
        return self._request("POST", f"/hypervisors/{self._seg(name)}/drain")

    def undrain(self, name: str) -> JSON:
        return self._request("POST", f"/hypervisors/{self._seg(name)}/undrain")

    def moves(self, vm: str | None = None) -> Any:
        return self._request("GET", "/moves" + (f"?{urlencode({'vm': vm})}" if vm else ""))

    def controller(self) -> JSON:
        return self._request("GET", "/controller")

    def failover(self) -> JSON:
        return self._request("POST", "/controller/failover")

    def list_hypervisors(self) -> Any:
        return self._request("GET", "/hypervisors")

    def put_hypervisor(self, name: str, body: Mapping[str, Any]) -> JSON:
        return self._request("PUT", f"/hypervisors/{self._seg(name)}", body)

    def delete_hypervisor(self, name: str) -> JSON:
        return self._request("DELETE", f"/hypervisors/{self._seg(name)}")

    def list_tenants(self) -> Any:
        return self._request("GET", "/tenants")

    def create_tenant(self, body: Mapping[str, Any]) -> JSON:
        return self._request("POST", "/tenants", body)

    def get_tenant(self, name: str) -> JSON:
        return self._request("GET", f"/tenants/{self._seg(name)}")

    def delete_tenant(self, name: str) -> JSON:
        return self._request("DELETE", f"/tenants/{self._seg(name)}")

    def list_networks(self, tenant: str) -> Any:
        return self._request("GET", f"/tenants/{self._seg(tenant)}/networks")

    def create_network(self, tenant: str, body: Mapping[str, Any]) -> JSON:
        return self._request("POST", f"/tenants/{self._seg(tenant)}/networks", body)

    def delete_network(self, tenant: str, name: str) -> JSON:
        return self._request(
            "DELETE", f"/tenants/{self._seg(tenant)}/networks/{self._seg(name)}"
        )

    def list_vms(self, tenant: str) -> Any:
        return self._request("GET", f"/tenants/{self._seg(tenant)}/vms")

    def create_vm(self, tenant: str, body: Mapping[str, Any]) -> JSON:
        return self._request("POST", f"/tenants/{self._seg(tenant)}/vms", body)

    def delete_vm(self, tenant: str, name: str) -> JSON:
        return self._request("DELETE", f"/tenants/{self._seg(tenant)}/vms/{self._seg(name)}")
