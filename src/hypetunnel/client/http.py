"""A small synchronous client for the HypeTunnel REST API (/api/v1), one method per route.

Every failure leaves as a ClientError: HTTP 4xx/5xx as ApiError carrying the {path, reason}
list of the response body, transport failures as ApiUnreachable naming the URL.

HTTPS: with `ca` the server's certificate must be signed by that CA (an https:// URL is also
checked against the host it names, as usual). Over a unix socket (`unix:/path`) a CA means HTTPS
through the socket, verified against the CA but not against a host name: there is none, the
socket's path (and its file permissions) is the address.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from hypetunnel.client.errors import ApiError, ApiUnreachable, ClientError, errors_from_body
from hypetunnel.errors import FieldError

API_PREFIX = "/api/v1"
JSON = dict[str, Any]
# A dead address fails fast; an answer may take a while (the API bounds its writes at 10 s and
# then answers 503, which the client should see rather than its own timeout).
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=2.0)
Timeout = float | httpx.Timeout


def ca_context(ca: Path, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A TLS client context that trusts exactly the CA in file `ca`."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise ClientError([FieldError("ca", f"cannot load the CA file {ca}: {e}")]) from e
    ctx.check_hostname = check_hostname
    return ctx


def _tls_failure(e: httpx.ConnectError) -> bool:
    """The connection was made but TLS failed (untrusted certificate, plain HTTP server...)."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "SSL" in str(e)


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
        token: str | None = None,
        ca: Path | None = None,
    ) -> None:
        """`transport` or a whole `http` client (e.g. starlette's TestClient) may be injected.
        `token`: sent as `Authorization: Bearer` with every request; `ca`: the CA file the
        API's certificate is verified against (see the module doc)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_http = http is None  # an injected client belongs to whoever made it
        http_base = self.base_url
        unix = self.base_url.startswith("unix:")
        verify = ca_context(ca, check_hostname=not unix) if ca is not None else True
        if unix:  # an API served on a unix socket (the HA lab's)
            transport = transport or httpx.HTTPTransport(
                uds=self.base_url.removeprefix("unix:"), verify=verify)
            http_base = "https://hypetunnel" if ca is not None else "http://hypetunnel"
        self._http = http or httpx.Client(
            base_url=http_base, transport=transport, timeout=timeout, verify=verify
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                 timeout: Timeout | None = None) -> Any:
        url = f"{API_PREFIX}{path}"
        try:
            if timeout is None:
                response = self._http.request(method, url, json=body, headers=self._headers)
            else:
                response = self._http.request(method, url, json=body, headers=self._headers,
                                              timeout=timeout)
        except httpx.ConnectError as e:
            if _tls_failure(e):
                raise ApiUnreachable(
                    self.base_url, f"TLS with the HypeTunnel API at {self.base_url} failed: "
                    f"{e} (is its CA given, with --ca or HYPETUNNEL_CA?)") from e
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

    def _object(self, method: str, path: str, body: Mapping[str, Any] | None = None, *,
                timeout: Timeout | None = None) -> JSON:
        """A route that answers one JSON object."""
        data = self._request(method, path, body, timeout=timeout)
        if not isinstance(data, dict):
            raise ClientError([FieldError("", f"{method} {self.base_url}{API_PREFIX}{path}: "
                                              f"expected a JSON object, got {data!r:.80}")])
        return data

    @staticmethod
    def _seg(name: str) -> str:
        return quote(name, safe="")

    # --- routes -------------------------------------------------------------------------------

    def healthz(self) -> JSON:
        return self._object("GET", "/healthz")

    def get_intent(self) -> JSON:
        return self._object("GET", "/intent")

    def apply(self, intent: Mapping[str, Any], dry_run: bool = False) -> JSON:
        return self._object("POST", "/apply", {"intent": dict(intent), "dry_run": dry_run})

    def status(self, timeout: Timeout | None = None) -> JSON:
        return self._object("GET", "/status", timeout=timeout)

    def metrics(self) -> str:
        """The Prometheus exposition text (GET /metrics: a provider token)."""
        response = self._http.get(f"{API_PREFIX}/metrics", headers=self._headers)
        if response.is_error:
            raise ApiError(response.status_code,
                           errors_from_body(response.status_code, response.reason_phrase,
                                            response.text[:200]), str(response.request.url))
        return response.text

    def overlay(self) -> JSON:
        return self._object("GET", "/overlay")

    def trace(self, src: str, dst: str, kind: str = "ip") -> JSON:
        return self._object("GET", "/trace?" + urlencode({"src": src, "dst": dst, "kind": kind}))

    def move_vm(self, tenant: str, name: str, to: str, cold: bool = False) -> JSON:
        return self._object("POST", f"/tenants/{self._seg(tenant)}/vms/{self._seg(name)}/move",
                             {"to": to, "cold": cold})

    def drain(self, name: str) -> Any:
        return self._request("POST", f"/hypervisors/{self._seg(name)}/drain")

    def undrain(self, name: str) -> JSON:
        return self._object("POST", f"/hypervisors/{self._seg(name)}/undrain")

    def moves(self, vm: str | None = None) -> Any:
        return self._request("GET", "/moves" + (f"?{urlencode({'vm': vm})}" if vm else ""))

    def controller(self, timeout: Timeout | None = None) -> JSON:
        """Role, term and node of this controller; `timeout` for a short probe."""
        return self._object("GET", "/controller", timeout=timeout)

    def failover(self) -> JSON:
        return self._object("POST", "/controller/failover")

    def audit(self, tenant: str | None = None, since: float | None = None,
              limit: int | None = None) -> Any:
        query = {k: v for k, v in (("tenant", tenant), ("since", since), ("limit", limit))
                 if v is not None}
        return self._request("GET", "/audit" + (f"?{urlencode(query)}" if query else ""))

    def alarms(self, include_cleared: bool = False) -> Any:
        return self._request("GET", "/alarms" + ("?all=true" if include_cleared else ""))

    def ack_alarm(self, alarm_id: str) -> JSON:
        return self._object("POST", f"/alarms/{self._seg(alarm_id)}/ack")

    def events(self, resource: str | None = None, since: float | None = None,
               limit: int | None = None) -> Any:
        query = {k: v for k, v in (("resource", resource), ("since", since), ("limit", limit))
                 if v is not None}
        return self._request("GET", "/events" + (f"?{urlencode(query)}" if query else ""))

    def usage(self, by: str = "tenant", tenant: str | None = None,
              since: float | None = None) -> Any:
        query = {k: v for k, v in (("by", by), ("tenant", tenant), ("since", since))
                 if v is not None}
        return self._request("GET", "/usage" + (f"?{urlencode(query)}" if query else ""))

    def list_hypervisors(self) -> Any:
        return self._request("GET", "/hypervisors")

    def put_hypervisor(self, name: str, body: Mapping[str, Any]) -> JSON:
        return self._object("PUT", f"/hypervisors/{self._seg(name)}", body)

    def delete_hypervisor(self, name: str) -> JSON:
        return self._object("DELETE", f"/hypervisors/{self._seg(name)}")

    def list_tenants(self) -> Any:
        return self._request("GET", "/tenants")

    def create_tenant(self, body: Mapping[str, Any]) -> JSON:
        return self._object("POST", "/tenants", body)

    def get_tenant(self, name: str) -> JSON:
        return self._object("GET", f"/tenants/{self._seg(name)}")

    def delete_tenant(self, name: str) -> JSON:
        return self._object("DELETE", f"/tenants/{self._seg(name)}")

    def list_networks(self, tenant: str) -> Any:
        return self._request("GET", f"/tenants/{self._seg(tenant)}/networks")

    def create_network(self, tenant: str, body: Mapping[str, Any]) -> JSON:
        return self._object("POST", f"/tenants/{self._seg(tenant)}/networks", body)

    def delete_network(self, tenant: str, name: str) -> JSON:
        return self._object(
            "DELETE", f"/tenants/{self._seg(tenant)}/networks/{self._seg(name)}"
        )

    def list_vms(self, tenant: str) -> Any:
        return self._request("GET", f"/tenants/{self._seg(tenant)}/vms")

    def create_vm(self, tenant: str, body: Mapping[str, Any]) -> JSON:
        return self._object("POST", f"/tenants/{self._seg(tenant)}/vms", body)

    def delete_vm(self, tenant: str, name: str) -> JSON:
        return self._object("DELETE", f"/tenants/{self._seg(tenant)}/vms/{self._seg(name)}")

    def create_token(self, name: str, role: str, tenant: str | None = None,
                     expires_in: int | None = None) -> JSON:
        """The answer's `token` is the only copy of the secret."""
        body: dict[str, Any] = {"name": name, "role": role}
        if tenant is not None:
            body["tenant"] = tenant
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._object("POST", "/tokens", body)

    def list_tokens(self) -> Any:
        return self._request("GET", "/tokens")

    def revoke_token(self, name: str) -> JSON:
        return self._object("DELETE", f"/tokens/{self._seg(name)}")
