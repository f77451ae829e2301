"""What a client of the REST API can meet: an error answer, or no answer at all.

Both carry FieldErrors ({path, reason}), so the CLI prints them as it prints its own.
"""

from __future__ import annotations

from typing import Any

from hypetunnel.errors import FieldError, HypeTunnelError


class ClientError(HypeTunnelError):
    """A failure to report as "error: [source: ]path: reason" lines."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(str(e) for e in errors))


class ApiError(ClientError):
    """The API answered with an error status; `errors` comes from its body."""

    def __init__(self, status: int, errors: list[FieldError], url: str) -> None:
        self.status = status
        self.url = url
        super().__init__(errors)


class ApiUnreachable(ClientError):
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
