# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Changing the fabric the way the controller does: the whole would-be intent, planned first.

Every object module edits a copy of the controller's resolved intent (GET /intent) and asks
POST /apply with dry_run=true for the plan. An empty plan is "not changed"; check mode stops
there, so what it reports is exactly what the controller would do; otherwise the same intent
is applied. Both carry If-Match with the revision the intent was read at: should another
writer commit in between, the controller refuses (412) and the run starts again from a fresh
read, so a module never undoes a change it did not see. The resolved intent keeps every allocation (VNI, IP, MAC, placement), so only
what the task names can change.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_api import (
    ApiError,
    HypeTunnelApi,
    fail,
)

SIGNS = (("added", "+"), ("changed", "~"), ("removed", "-"))
# Reads and applies again this often when other writers keep committing in between (412).
PRECONDITION_ATTEMPTS = 5


def plan_empty(plan):
    return not any(plan.get(key) for key, sign in SIGNS)


def render_plan(plan):
    """The plan as `hypetunnel apply` prints it: one line per object."""
    lines = []
    for key, sign in SIGNS:
        for item in plan.get(key) or []:
            detail = item.get("detail")
            lines.append("%s %s %s%s" % (sign, item.get("kind"), item.get("key"),
                                         ": %s" % detail if detail else ""))
    return "\n".join(lines) + "\n" if lines else "No changes.\n"


def by_name(items, name):
    return next((i for i in items or [] if i.get("name") == name), None)


def replace_named(items, name, new):
    """`items` with the one named `name` replaced by `new` (appended if absent; None: removed)."""
    out, found = [], False
    for i in items:
        if i.get("name") == name:
            found = True
            if new is not None:
                out.append(new)
        else:
            out.append(i)
    if not found and new is not None:
        out.append(new)
    return out


def merged(current, given):
    """`current` with every option the task gave (not None) set; None: a new object."""
    obj = copy.deepcopy(current) if current is not None else {}
    for key, value in given.items():
        if value is not None:
            obj[key] = value
    return obj


class Change:
    """One module run: plan the would-be intent, apply it unless in check mode, report.

    `build(before)` returns the wanted whole intent from the controller's resolved one (it may
    call `self.fail`); `view(intent)` picks the module's object out of an intent (None: absent)
    for the diff's before/after and the returned object. `preview(before, wanted)`, if given,
    is the intent shown as "after" in check mode (default: `wanted`).
    """

    def __init__(self, module):
        self.module = module
        self.api = HypeTunnelApi(module)

    def fail(self, path, reason, **result):
        self.module.fail_json(msg="%s: %s" % (path, reason) if path else reason,
                              errors=[{"path": path, "reason": reason}], **result)

    def run(self, build, view, key, preview=None):
        attempt = 0
        while True:
            attempt += 1
            try:
                before = self.api.intent()
                wanted = build(copy.deepcopy(before))
                result = self.converge(before, wanted, view, preview, self.api.etag)
                break
            except ApiError as e:
                # 412: another writer committed between our read and our apply; the wanted
                # intent is built again from what is there now, never applied over it.
                if e.status != 412 or attempt >= PRECONDITION_ATTEMPTS:
                    fail(self.module, e)
        result[key] = result.pop("object")
        self.module.exit_json(**result)

    def converge(self, before, wanted, view, preview=None, revision=None):
        """The result dict: changed, plan, diff, object (after). `revision`: the ETag `before`
        was read at; both the plan and the apply hold only while it is current."""
        plan = self.api.apply(wanted, dry_run=True, if_match=revision)
        changed = not plan_empty(plan)
        after = before
        if changed and not self.module.check_mode:
            plan = self.api.apply(wanted, dry_run=False, if_match=revision)
            after = self.api.intent()  # resolved: with the VNIs, IPs and MACs it allocated
        elif changed:
            # What was asked; the controller allocates the rest when it applies.
            after = preview(before, wanted) if preview else wanted
        result = dict(changed=changed, plan=plan, object=view(after))
        if self.module._diff:
            result["diff"] = dict(before=view(before) or {}, after=view(after) or {},
                                  before_header="controller (revision %s)" % plan.get("revision"),
                                  after_header="after the plan (check mode)"
                                  if self.module.check_mode else "applied",
                                  prepared=render_plan(plan))
        return result


def tenant_of(change, intent, name):
    """The tenant `name` of `intent` (a dict to edit in place); fails naming the option."""
    tenant = by_name(intent.get("tenants"), name)
    if tenant is None:
        change.fail("tenant", "no tenant %r on the controller (create it first with "
                    "hypetunnel.fabric.hypetunnel_tenant)" % name)
    return tenant


def fill_from(current, given):
    """`given` objects with what the controller already allocated for them (by name).

    For the check mode's "after" view only: an apply sends `given` as it is, and the
    controller keeps its allocations by name the same way.
    """
    return [merged(by_name(current, g.get("name")), g) for g in given or []]
