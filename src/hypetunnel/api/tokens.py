"""API tokens: created by an admin, kept in the store as a SHA-256 hash, checked per request.

A token reads `ht.<name>.<secret>`: the name finds the record, the secret (32 random bytes)
is hashed and compared in constant time with the stored hash. The secret itself is shown once
and stored nowhere. Records live under "token/<name>" in the same store as the intent (the
intent codec ignores other prefixes), so they survive a restart and are shared by both
controllers of a pair. A revoked token keeps its record (revoked_at set): its name stays taken
and `token list` shows it.

The registry's copy of the records follows the service's revision: whenever the store moved
(a write here, or the standby's service reloading after the active's commit), the next request
reloads them before it is checked, so a revocation holds on the other controller as soon as
that controller has seen the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypetunnel.api.auth import TENANT_ROLES, Principal, Role
from hypetunnel.controller.service import FabricService, ObjectConflict
from hypetunnel.errors import FieldError, IntentInvalid, NotFound
from hypetunnel.model.intent import Intent

log = logging.getLogger(__name__)

PREFIX = "token/"
TOKEN_SCHEME = "ht"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # the intent's names
_TOKEN_RE = re.compile(r"^ht\.([a-z][a-z0-9-]{0,30})\.([A-Za-z0-9_-]{43})$")
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EXPIRY = 10 * 365 * 86400  # seconds: ten years is the longest a token may be valid
BOOTSTRAP_NAME = "admin"

Clock = Callable[[], float]


def parse_duration(text: str, field: str = "expires") -> int:
    """'30d', '12h', '90m', '3600s' -> seconds; IntentInvalid naming `field` otherwise."""
    m = _DURATION_RE.match(text.strip())
    if m is None:
        raise IntentInvalid([FieldError(field, f"{text!r} is not a duration: a whole number "
                                               "and a unit s, m, h or d (e.g. 30d)")])
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds > MAX_EXPIRY:
        raise IntentInvalid([FieldError(field, f"{text!r} is longer than ten years")])
    return seconds


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    role: Role
    tenant: str | None
    sha256: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role.value, "tenant": self.tenant,
                "sha256": self.sha256, "created_at": self.created_at,
                "expires_at": self.expires_at, "revoked_at": self.revoked_at}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> TokenRecord:
        return cls(name=str(doc["name"]), role=Role(doc["role"]), tenant=doc.get("tenant"),
                   sha256=str(doc["sha256"]), created_at=float(doc["created_at"]),
                   expires_at=doc.get("expires_at"), revoked_at=doc.get("revoked_at"))

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "valid"

    def public(self, now: float) -> dict[str, Any]:
        """What `token list` shows: everything but the hash."""
        doc = self.to_doc()
        del doc["sha256"]
        return {**doc, "state": self.state(now)}


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a presented token opens nothing (the 401's reason)."""

    failure: str  # "missing" | "malformed" | "unknown" | "expired" | "revoked" | "orphaned"


def check_new_token(name: object, role: object, tenant: object,
                    expires_in: object) -> list[FieldError]:
    """Every problem of a token request, each naming its field."""
    errors = []
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.append(FieldError("name", f"{name!r} is not a valid name "
                                         "([a-z][a-z0-9-]{0,30})"))
    roles = ", ".join(r.value for r in Role)
    parsed = Role(role) if isinstance(role, str) and role in set(Role) else None
    if parsed is None:
        errors.append(FieldError("role", f"unknown role {role!r} (one of {roles})"))
    elif parsed in TENANT_ROLES and tenant is None:
        errors.append(FieldError("tenant", f"role {parsed.value} needs a tenant"))
    elif parsed not in TENANT_ROLES and tenant is not None:
        errors.append(FieldError("tenant", f"role {parsed.value} is a provider role: it takes "
                                           "no tenant"))
    if tenant is not None and not (isinstance(tenant, str) and NAME_RE.match(tenant)):
        errors.append(FieldError("tenant", f"{tenant!r} is not a valid tenant name"))
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int)
                                   or not 1 <= expires_in <= MAX_EXPIRY):
        errors.append(FieldError("expires_in", f"{expires_in!r} is not a number of seconds "
                                               f"between 1 and {MAX_EXPIRY}"))
    return errors


class TokenRegistry:
    def __init__(self, service: FabricService, clock: Clock = time.time) -> None:
        self.service = service
        self.clock = clock
        self._records: dict[str, TokenRecord] = {}
        self._revision: int | None = None  # the store revision the records reflect
        self._write_lock = threading.Lock()
        # Guards the (records, revision) pair: a request's reload in one thread and a create in
        # another once interleaved so that the older read replaced the newer records, and the
        # API refused the bootstrap token it had just written for good.
        self._state_lock = threading.Lock()
        service.commit_hooks.append(self._revoke_removed_tenants)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        return self._revision is None or self._revision < self.service.revision

    def reload(self) -> None:
        """Read every token record (blocking: call it off the event loop). The records are
        tagged with the revision of the very snapshot they come from, and never replaced by
        an older read: the registry only moves forward."""
        snap = self.service.store.load()
        records = {}
        for key, doc in snap.items.items():
            if not key.startswith(PREFIX):
                continue
            try:
                record = TokenRecord.from_doc(doc)
            except (KeyError, TypeError, ValueError) as e:  # refused, not fatal to the rest
                log.warning("ignoring the unreadable token record %s: %s", key, e)
                continue
            records[record.name] = record
        with self._state_lock:
            if self._revision is None or snap.revision >= self._revision:
                self._records, self._revision = records, snap.revision

    def records(self) -> list[TokenRecord]:
        return sorted(self._records.values(), key=lambda r: r.name)

    def verify(self, token: str | None) -> Principal | Rejected:
        """The principal a bearer token stands for (records must be fresh: see `stale`)."""
        if not token:
            return Rejected("missing")
        m = _TOKEN_RE.match(token)
        if m is None:
            return Rejected("malformed")
        record = self._records.get(m.group(1))
        # Compared even when the name is unknown, so both answers take the same time.
        want = record.sha256 if record is not None else "0" * 64
        if not hmac.compare_digest(hash_secret(m.group(2)), want) or record is None:
            return Rejected("unknown")
        state = record.state(self.clock())
        if state != "valid":
            return Rejected(state)
        # A tenant's tokens are revoked with the tenant (_revoke_removed_tenants), so a tenant
        # created again under the same name (another customer, perhaps) inherits none. This
        # check covers a record left valid by a controller that predates that rule.
        if record.tenant is not None and self.service.intent.tenant(record.tenant) is None:
            return Rejected("orphaned")
        return Principal(record.name, record.role, record.tenant)

    def has_admin(self) -> bool:
        now = self.clock()
        return any(r.role is Role.ADMIN and r.state(now) == "valid"
                   for r in self._records.values())

    # -- writing (blocking: through the API's write runner) --------------------------------------
    def create(self, name: str, role: str, tenant: str | None = None,
               expires_in: int | None = None,
               before_commit: Callable[[str], None] | None = None) -> tuple[TokenRecord, str]:
        """Store a new token; return its record and the token string (shown once).
        `before_commit(token)` runs before the record is stored (to keep a copy first)."""
        errors = check_new_token(name, role, tenant, expires_in)
        if errors:
            raise IntentInvalid(errors)
        with self._write_lock:
            self.reload()
            if name in self._records:
                raise ObjectConflict("name", f"a token named {name!r} exists already "
                                             "(revoked tokens keep their name)")
            if tenant is not None and self.service.intent.tenant(tenant) is None:
                raise IntentInvalid([FieldError("tenant", f"no tenant named {tenant!r}")])
            secret = secrets.token_urlsafe(32)
            now = self.clock()
            record = TokenRecord(name, Role(role), tenant, hash_secret(secret), now,
                                 expires_at=None if expires_in is None else now + expires_in)
            token = f"{TOKEN_SCHEME}.{name}.{secret}"
            if before_commit is not None:
                before_commit(token)
            self._commit(record)
        return record, token

    def revoke(self, name: str) -> TokenRecord:
        with self._write_lock:
            self.reload()
            record = self._records.get(name)
            if record is None:
                raise TokenNotFound(name)
            if record.revoked_at is None:
                record = TokenRecord(record.name, record.role, record.tenant, record.sha256,
                                     record.created_at, record.expires_at, self.clock())
                self._commit(record)
        return record

    def _revoke_removed_tenants(self, old: Intent, new: Intent) -> dict[str, dict[str, Any]]:
        """The service's commit hook: the still valid tokens of every tenant that `new`
        removes, revoked in the same commit as the removal."""
        removed = {t.name for t in old.tenants} - {t.name for t in new.tenants}
        if not removed:
            return {}
        self.reload()  # blocking, but a commit hook already runs in the write thread
        now = self.clock()
        revoked = {}
        for r in self._records.values():
            if r.tenant in removed and r.revoked_at is None:
                revoked[PREFIX + r.name] = TokenRecord(
                    r.name, r.role, r.tenant, r.sha256, r.created_at, r.expires_at,
                    now).to_doc()
        if revoked:
            log.info("revoking the tokens of removed tenant(s) %s: %s", ", ".join(sorted(removed)),
                     ", ".join(sorted(k[len(PREFIX):] for k in revoked)))
        return revoked

    def _commit(self, record: TokenRecord) -> None:
        self.service.put_records({PREFIX + record.name: record.to_doc()})
        with self._state_lock:
            # Known at once, but the revision is left behind: another commit (a tenant removed
            # and its tokens revoked) may lie between our last read and this one, so the next
            # request still reads everything again.
            self._records = {**self._records, record.name: record}

    def bootstrap_name(self) -> str:
        """`admin`, or `admin-N` when that name is taken (by a revoked or expired token)."""
        n = 1
        name = BOOTSTRAP_NAME
        while name in self._records:
            n += 1
            name = f"{BOOTSTRAP_NAME}-{n}"
        return name


class TokenNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.errors = [FieldError(f"tokens/{name}", "not found")]
        super().__init__(f"tokens/{name}: not found")

