#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_drain
short_description: Drain a HypeTunnel hypervisor for maintenance, or put it back in service
version_added: "0.1.0"
description:
  - V(drained) makes the hypervisor unschedulable and has the controller move every VM away
    (hot moves, placed within the other hypervisors' capacity,
    C(POST /api/v1/hypervisors/{name}/drain)); with O(wait) the module follows every move to its end.
  - V(undrained) makes it schedulable again (C(POST /api/v1/hypervisors/{name}/undrain)); its
    VMs do not come back by themselves.
  - Not changed when the hypervisor is already unschedulable and hosts no VM (V(drained)), or
    already schedulable (V(undrained)).
options:
  name:
    description: The hypervisor.
    type: str
    required: true
  state:
    description: V(drained) or V(undrained).
    type: str
    choices: [drained, undrained]
    default: drained
  wait:
    description: Wait for every move of the drain to end (and fail unless each ended well).
    type: bool
    default: true
  wait_timeout:
    description: The longest to wait for the moves, in seconds.
    type: float
    default: 300
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description:
      - The controller's dry run of the intent with the hypervisor unschedulable (or schedulable);
        RV(would_move) lists the VMs a drain would move. Where they go is decided by the
        controller when it drains, so the dry run cannot tell whether they all fit elsewhere.
  diff_mode:
    support: full
    description: Before and after of the hypervisor, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Drain hv2 before its maintenance
  hypetunnel.fabric.hypetunnel_drain:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: hv2
    state: drained

- name: Put hv2 back in service
  hypetunnel.fabric.hypetunnel_drain:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: hv2
    state: undrained
"""

RETURN = r"""
hypervisor:
  description: The hypervisor after the run (in check mode, as it would be).
  returned: success
  type: dict
  sample: {name: hv2, underlay_ip: 172.31.0.11, schedulable: false}
moves:
  description:
    - The controller's records of the drain's moves (see M(hypetunnel.fabric.hypetunnel_move)
      for their fields); empty when nothing moved.
  returned: success, and on a failed or unfinished drain
  type: list
  elements: dict
would_move:
  description: In check mode, the VMs (C(tenant/name)) the drain would move away.
  returned: check mode
  type: list
  elements: str
plan:
  description: The controller's plan of the schedulable change (dry run); null when unchanged.
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
)


def hosted(intent, name):
    return ["%s/%s" % (t["name"], v["name"]) for t in intent.get("tenants") or []
            for v in t.get("vms") or [] if v.get("hypervisor") == name]


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["drained", "undrained"], default="drained"),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="float", default=300.0),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    name = p["name"]
    drain = p["state"] == "drained"
    change = Change(module)
    api = change.api
    try:
        intent = api.intent()
        hv = by_name(intent.get("hypervisors"), name)
        if hv is None:
            change.fail("name", "no hypervisor %s on the controller" % name)
        vms = hosted(intent, name)
        unschedulable = hv.get("schedulable") is False
        result = dict(changed=False, hypervisor=hv, moves=[], plan=None)
        if (drain and unschedulable and not vms) or (not drain and not unschedulable):
            module.exit_json(**result)
        after = dict(hv, schedulable=not drain)
        intent["hypervisors"] = replace_named(intent["hypervisors"], name, after)
        result.update(changed=True, plan=api.apply(intent, dry_run=True), hypervisor=after)
        if module._diff:
            result["diff"] = dict(before=hv, after=after, prepared=render_plan(result["plan"]))
        if module.check_mode:
            if drain:
                result["would_move"] = vms
            module.exit_json(**result)
        path = "/hypervisors/%s/%s" % (seg(name), "drain" if drain else "undrain")
        answer = api.post(path)
        if drain:
            recs = answer or []
            if p["wait"] and recs:
                recs = moves.wait(api, recs, p["wait_timeout"])
            result["moves"] = recs
            bad = moves.unfinished(recs) if p["wait"] else []
            if bad:
                module.fail_json(msg="drain of %s: %d moves did not end within %g s: %s"
                                 % (name, len(bad), p["wait_timeout"],
                                    "; ".join(moves.describe(r) for r in bad)), **result)
            bad = moves.failed(recs)
            if bad:
                module.fail_json(msg="drain of %s: moves failed: %s"
                                 % (name, "; ".join(moves.describe(r) for r in bad)), **result)
        result["hypervisor"] = by_name(api.intent().get("hypervisors"), name)
    except ApiError as e:
        fail(module, e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
