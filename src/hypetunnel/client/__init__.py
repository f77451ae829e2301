"""Client of the HypeTunnel REST API, shared by the CLI, the lab and the benchmarks.

`ApiClient` talks to one controller; `ClientPool` finds the active member of a pair.
"""

from hypetunnel.client.cache import ActiveCache, default_cache_path
from hypetunnel.client.errors import ApiError, ApiUnreachable, ClientError, errors_from_body
from hypetunnel.client.http import ApiClient
from hypetunnel.client.pool import ClientPool, Probe

__all__ = ["ActiveCache", "ApiClient", "ApiError", "ApiUnreachable", "ClientError",
           "ClientPool", "Probe", "default_cache_path", "errors_from_body"]
