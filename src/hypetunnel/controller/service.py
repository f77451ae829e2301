"""FabricService: the one way the intent changes (API, CLI via API, tests).

Every change is declarative: build the whole new intent, validate it, resolve it against the
current one (stable allocations), diff, commit the changed documents in one conditional store
transaction, then tell the runtime (on_change(old, new)). Invalid input raises IntentInvalid and
the store is untouched; a lost race raises Conflict and the service reloads what won.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from hypetunnel.errors import Conflict, FieldError, IntentInvalid, NotFound, PreconditionFailed
from hypetunnel.model.allocate import resolve
from hypetunnel.model.intent import VM, Hypervisor, Intent, Network, Tenant
from hypetunnel.model.plan import Plan, diff
from hypetunnel.model.validate import validate_intent
from hypetunnel.store.base import Store
from hypetunnel.store.codec import canonical, intent_changes, items_to_intent

log = logging.getLogger(__name__)

OnChange = Callable[[Intent, Intent], None]
# Documents that must change in the same commit as an intent change (old, new): e.g. the tokens
# of a removed tenant are revoked with it, never a moment later. Runs under the service lock.
CommitHook = Callable[[Intent, Intent], Mapping[str, dict[str, Any]]]


def _untimed(operation: str) -> AbstractContextManager[object]:
    return nullcontext()


class ObjectNotFound(NotFound):
    def __init__(self, path: str) -> None:
        self.errors = [FieldError(path, "not found")]
        super().__init__(f"{path}: not found")


class ObjectConflict(Conflict):
    """The request contradicts existing objects (already exists, still in use)."""

    def __init__(self, path: str, reason: str) -> None:
        self.errors = [FieldError(path, reason)]
        super().__init__(f"{path}: {reason}")


def _relative(exc: IntentInvalid, prefix: str) -> IntentInvalid:
    """Errors about the object a request created, with paths relative to the request body."""
    errors = []
    for e in exc.errors:
        if e.path == prefix:
            errors.append(FieldError("", e.reason))
        elif e.path.startswith(prefix + "."):
            errors.append(FieldError(e.path[len(prefix) + 1 :], e.reason))
        else:
            errors.append(e)
    return IntentInvalid(errors, source=exc.source)


class FabricService:
    def __init__(self, store: Store, on_change: OnChange | None = None) -> None:
        self.store = store
        self.on_change = on_change
        self.commit_hooks: list[CommitHook] = []
        # Wraps every store call with its operation's name ("load", "commit"): the
        # controller's metrics time them (metrics/instruments.py).
        self.timed: Callable[[str], AbstractContextManager[object]] = _untimed
        self._lock = threading.RLock()
        self.intent: Intent = Intent()
        self.revision = 0
        # (intent, revision) replaced in one assignment, so a reader on another thread (the
        # API's GET /intent with its ETag) never pairs one commit's intent with another's revision.
        self.published: tuple[Intent, int] = (self.intent, self.revision)
        self._fabric_stored = False
        self.reload()

    def reload(self) -> None:
        """Take the store's current state as the truth (startup, or after losing a race)."""
        with self._lock:
            with self.timed("load"):
                snap = self.store.load()
            self.intent = items_to_intent(snap.items)
            self.revision = snap.revision
            self.published = (self.intent, self.revision)
            # Store the fabric document even when it equals the defaults, so a future change of
            # the code's defaults cannot silently change a running fabric.
            self._fabric_stored = "fabric" in snap.items

    # -- declarative -------------------------------------------------------------------------
    def _prepare(self, new: Intent) -> Intent:
        errors = validate_intent(new, previous=self.intent)
        if errors:
            raise IntentInvalid(errors)
        # The allocator only picks free values and keeps valid ones, so the result is valid
        # (tests check resolve() output with validate_intent; not repeated here for speed).
        return canonical(resolve(new, self.intent))

    def plan(self, new: Intent) -> Plan:
        """What apply(new) would change; raises IntentInvalid. Stores nothing."""
        with self._lock:
            resolved = self._prepare(new)
            return diff(self.intent, resolved, revision=self.revision, applied=False)

    def apply(self, new: Intent, dry_run: bool = False,
              records: Mapping[str, dict[str, Any]] | None = None,
              expect_revision: int | None = None) -> Plan:
        """Make the whole fabric `new` (objects absent from it are removed). `records` are
        written in the same commit (e.g. the move records of a move). `expect_revision`: the
        revision the caller built `new` from; any other commit since then refuses the apply
        (PreconditionFailed), so a read-modify-write never undoes a change it did not see."""
        with self._lock:
            if expect_revision is not None and expect_revision != self.revision:
                raise PreconditionFailed(expect_revision, self.revision)
            resolved = self._prepare(new)
            plan = diff(self.intent, resolved, revision=self.revision, applied=False)
            if dry_run:
                return plan
            puts, deletes = intent_changes(self.intent, resolved,
                                           put_fabric=not self._fabric_stored)
            puts = {**puts, **(records or {})}
            if puts or deletes:
                for hook in self.commit_hooks:
                    puts = {**puts, **hook(self.intent, resolved)}
                try:
                    with self.timed("commit"):
                        revision = self.store.commit(puts, deletes,
                                                     expect_revision=self.revision)
                except Conflict:
                    self.reload()
                    raise
                old = self.intent
                self.intent, self.revision, self._fabric_stored = resolved, revision, True
                self.published = (resolved, revision)
                self._notify(old, resolved)
            plan.revision = self.revision
            plan.applied = True
            return plan

    def put_records(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Store non-intent documents (move records) conditionally, like any write."""
        with self._lock:
            try:
                with self.timed("commit"):
                    self.revision = self.store.commit(records, [],
                                                      expect_revision=self.revision)
            except Conflict:
                self.reload()
                raise
            self.published = (self.intent, self.revision)

    def records(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Non-intent documents under a key prefix, read from the store."""
        return {k: v for k, v in self.store.load().items.items() if k.startswith(prefix)}

    def _notify(self, old: Intent, new: Intent) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(old, new)
        except Exception:
            # The change is committed: the runtime must catch up from the stored intent rather
            # than the client being told its write failed.
            log.exception("on_change failed after commit (revision %d)", self.revision)

    # -- object operations (each builds the whole new intent and applies it) --------------------
    def _tenant_index(self, name: str) -> int:
        for i, t in enumerate(self.intent.tenants):
            if t.name == name:
                return i
        raise ObjectNotFound(f"tenants/{name}")

    def _with_tenant(self, index: int, tenant: Tenant) -> Intent:
        tenants = list(self.intent.tenants)
        tenants[index] = tenant
        return self.intent.model_copy(update={"tenants": tenants})

    def create_tenant(self, tenant: Tenant, dry_run: bool = False) -> Plan:
        with self._lock:
            if self.intent.tenant(tenant.name) is not None:
                raise ObjectConflict(f"tenants/{tenant.name}", "already exists")
            prefix = f"tenants[{len(self.intent.tenants)}]"
            new = self.intent.model_copy(update={"tenants": [*self.intent.tenants, tenant]})
            try:
                return self.apply(new, dry_run)
            except IntentInvalid as exc:
                raise _relative(exc, prefix) from exc

    def delete_tenant(self, name: str, dry_run: bool = False) -> Plan:
        """Removes the tenant with all its networks and VMs."""
        with self._lock:
            i = self._tenant_index(name)
            tenants = self.intent.tenants[:i] + self.intent.tenants[i + 1 :]
            return self.apply(self.intent.model_copy(update={"tenants": tenants}), dry_run)

    def create_network(self, tenant: str, network: Network, dry_run: bool = False) -> Plan:
        with self._lock:
            ti = self._tenant_index(tenant)
            t = self.intent.tenants[ti]
            if any(n.name == network.name for n in t.networks):
                raise ObjectConflict(f"tenants/{tenant}/networks/{network.name}", "already exists")
            prefix = f"tenants[{ti}].networks[{len(t.networks)}]"
            new = self._with_tenant(ti, t.model_copy(update={"networks": [*t.networks, network]}))
            try:
                return self.apply(new, dry_run)
            except IntentInvalid as exc:
                raise _relative(exc, prefix) from exc

    def delete_network(self, tenant: str, name: str, dry_run: bool = False) -> Plan:
        with self._lock:
            ti = self._tenant_index(tenant)
            t = self.intent.tenants[ti]
            path = f"tenants/{tenant}/networks/{name}"
            if not any(n.name == name for n in t.networks):
                raise ObjectNotFound(path)
            users = [v.name for v in t.vms if v.network == name]
            if users:
                raise ObjectConflict(path, f"still has VMs: {', '.join(users)}")
            networks = [n for n in t.networks if n.name != name]
            return self.apply(self._with_tenant(ti, t.model_copy(update={"networks": networks})),
                              dry_run)

    def create_vm(self, tenant: str, vm: VM, dry_run: bool = False) -> Plan:
        with self._lock:
            ti = self._tenant_index(tenant)
            t = self.intent.tenants[ti]
            if any(v.name == vm.name for v in t.vms):
                raise ObjectConflict(f"tenants/{tenant}/vms/{vm.name}", "already exists")
            prefix = f"tenants[{ti}].vms[{len(t.vms)}]"
            new = self._with_tenant(ti, t.model_copy(update={"vms": [*t.vms, vm]}))
            try:
                return self.apply(new, dry_run)
            except IntentInvalid as exc:
                raise _relative(exc, prefix) from exc

    def delete_vm(self, tenant: str, name: str, dry_run: bool = False) -> Plan:
        with self._lock:
            ti = self._tenant_index(tenant)
            t = self.intent.tenants[ti]
            if not any(v.name == name for v in t.vms):
                raise ObjectNotFound(f"tenants/{tenant}/vms/{name}")
            vms = [v for v in t.vms if v.name != name]
            return self.apply(self._with_tenant(ti, t.model_copy(update={"vms": vms})), dry_run)

    def upsert_hypervisor(self, hv: Hypervisor, dry_run: bool = False) -> Plan:
        """Create or replace a hypervisor (omitted underlay_ip/ovsdb keep their stored value)."""
        with self._lock:
            hvs = list(self.intent.hypervisors)
            index = next((i for i, h in enumerate(hvs) if h.name == hv.name), len(hvs))
            hvs[index:index + 1] = [hv]
            new = self.intent.model_copy(update={"hypervisors": hvs})
            try:
                return self.apply(new, dry_run)
            except IntentInvalid as exc:
                raise _relative(exc, f"hypervisors[{index}]") from exc

    def delete_hypervisor(self, name: str, dry_run: bool = False) -> Plan:
        with self._lock:
            path = f"hypervisors/{name}"
            if self.intent.hypervisor(name) is None:
                raise ObjectNotFound(path)
            users = [f"{t.name}/{v.name}" for t in self.intent.tenants for v in t.vms
                     if v.hypervisor == name]
            if users:
                shown = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "")
                raise ObjectConflict(path, f"still hosts VMs: {shown}")
            hvs = [h for h in self.intent.hypervisors if h.name != name]
            return self.apply(self.intent.model_copy(update={"hypervisors": hvs}), dry_run)
