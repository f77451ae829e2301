#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_move
short_description: Move a VM to another hypervisor and follow the move to its end
version_added: "0.1.0"
description:
  - Asks the active controller to move one VM (C(POST /api/v1/tenants/{tenant}/vms/{vm}/move));
    the intent places it on O(to) and the compute side moves it, V(hot) (plugged at the
    destination before the old port goes) or V(cold) (stopped, moved, started).
  - With O(wait), the module follows the controller's move record until the move has ended and
    fails unless its result is C(ok).
  - Not changed when the VM is already on O(to) (a move there still running is waited for).
options:
  tenant:
    description: The VM's tenant.
    type: str
    required: true
  name:
    description: The VM's name.
    type: str
    required: true
  to:
    description: The destination hypervisor (known, schedulable, with room for the VM).
    type: str
    required: true
  kind:
    description: V(hot) keeps the VM running; V(cold) stops it for the move.
    type: str
    choices: [hot, cold]
    default: hot
  wait:
    description: Wait for the move to end (and fail unless it ended well).
    type: bool
    default: true
  wait_timeout:
    description: The longest to wait, in seconds; the module fails when the move has not ended by then.
    type: float
    default: 150
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description:
      - The controller's dry run of the intent with the VM on O(to) (it checks the destination
        is known and has room); nothing is written and nothing moves.
  diff_mode:
    support: full
    description: Before and after of the VM, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Hot-move acme/web1 to hv2
  hypetunnel.fabric.hypetunnel_move:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    tenant: acme
    name: web1
    to: hv2
  register: moved

- name: Show the network interruption the controller measured
  ansible.builtin.debug:
    msg: "{{ moved.move.interruption_ms }} ms"
"""

RETURN = r"""
move:
  description:
    - The controller's move record (null when nothing had to move).
  returned: success, and on a failed or unfinished move
  type: dict
  contains:
    vm:
      description: The VM (C(tenant/name)).
      type: str
    seq:
      description: The move's number for this VM.
      type: int
    from:
      description: The hypervisor it left.
      type: str
    to:
      description: The destination.
      type: str
    kind:
      description: V(hot), V(cold) (or V(restart), after a hypervisor failure).
      type: str
    start:
      description: When it started (Unix time).
      type: float
    end:
      description: When the controller saw it end; null while it runs.
      type: float
    result:
      description: V(running), V(ok) or V(timeout).
      type: str
    interruption_ms:
      description: How long the VM's network could deliver its frames nowhere, as measured.
      type: float
  sample: {vm: acme/web1, seq: 1, from: hv1, to: hv2, kind: hot, start: 1764659045.1,
           end: 1764659046.3, result: ok, interruption_ms: 0.0, fabric_ready_lead_ms: 12.5}
plan:
  description: The controller's plan of the intent with the VM on O(to) (dry run).
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils import hypetunnel_moves as moves
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_api import (
    COMMON_KWARGS,
    ApiError,
    argument_spec,
    fail,
    seg,
)
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_intent import (
    Change,
    by_name,
    render_plan,
    replace_named,
    tenant_of,
)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            tenant=dict(type="str", required=True),
            name=dict(type="str", required=True),
            to=dict(type="str", required=True),
            kind=dict(type="str", choices=["hot", "cold"], default="hot"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="float", default=150.0),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    change = Change(module)
    api = change.api
    vid = "%s/%s" % (p["tenant"], p["name"])
    try:
        intent = api.intent()
        vm = by_name(tenant_of(change, intent, p["tenant"]).get("vms"), p["name"])
        if vm is None:
            change.fail("name", "no VM %s on the controller" % vid)
        result = dict(changed=False, move=moves.running(api, vid), plan=None)
        if vm.get("hypervisor") == p["to"]:
            rec = result["move"]
            if rec is not None and rec.get("to") == p["to"] and p["wait"] \
                    and not module.check_mode:
                result["move"] = rec = moves.wait(api, [rec], p["wait_timeout"])[0]
                finish(module, rec, p["wait_timeout"], result)
            module.exit_json(**result)
        # The dry run: the plan of the intent with the VM at its destination (validated).
        moved = dict(vm, hypervisor=p["to"])
        tenant = tenant_of(change, intent, p["tenant"])
        tenant["vms"] = replace_named(tenant["vms"], p["name"], moved)
        result["plan"] = api.apply(intent, dry_run=True)
        result["changed"] = True
        if module._diff:
            result["diff"] = dict(before=vm, after=moved, prepared=render_plan(result["plan"]))
        if module.check_mode:
            module.exit_json(**result)
        rec = api.post("/tenants/%s/vms/%s/move" % (seg(p["tenant"]), seg(p["name"])),
                       {"to": p["to"], "cold": p["kind"] == "cold"})
        if p["wait"]:
            rec = moves.wait(api, [rec], p["wait_timeout"])[0]
        result["move"] = rec
        if p["wait"]:
            finish(module, rec, p["wait_timeout"], result)
    except ApiError as e:
        fail(module, e)
    module.exit_json(**result)


def finish(module, rec, timeout, result):
    """Fail unless the move ended well."""
    if rec.get("end") is None:
        module.fail_json(msg="move %s did not end within %g s (the controller is still following "
                         "it: see hypetunnel_info gather=moves)" % (moves.describe(rec), timeout),
                         **result)
    if rec.get("result") != "ok":
        module.fail_json(msg="move %s ended with result %s" % (moves.describe(rec),
                                                               rec.get("result")), **result)


if __name__ == "__main__":
    main()
