"""One exception tree for the whole project; lower-level errors are translated at the boundary."""

from __future__ import annotations

from dataclasses import dataclass


class HypeTunnelError(Exception):
    """Base of every error HypeTunnel raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with the user's input: where it is and why it is wrong."""

    path: str  # e.g. "tenants[0].vms[2].ip"
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class IntentInvalid(HypeTunnelError):
    """The intent (file or API request) breaks a rule; nothing was stored."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(f"{prefix}{e}" for e in errors))


class NotFound(HypeTunnelError):
    """A named object does not exist."""


class Conflict(HypeTunnelError):
    """A conditional store write lost against a newer revision or term."""


class PreconditionFailed(HypeTunnelError):
    """The client's precondition (If-Match: the revision it read) no longer holds."""

    def __init__(self, expected: int, current: int) -> None:
        self.errors = [FieldError("if-match", f"the fabric is at revision {current}, not "
                                              f"{expected}: it changed since it was read; "
                                              "read it again and retry")]
        super().__init__(self.errors[0].reason)


class SouthboundError(HypeTunnelError):
    """A switch or its OVSDB did not do what was asked."""
