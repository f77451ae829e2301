#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_intent
short_description: Make the whole HypeTunnel fabric what an intent says
version_added: "0.1.0"
description:
  - Applies an intent document (the intent file format of C(hypetunnel apply)) to the active
    controller. The fabric becomes exactly that intent, so objects absent from it are removed.
  - The controller plans first (C(POST /api/v1/apply) with C(dry_run=true)); an empty plan is
    not a change. Allocations already made (VNIs, VM addresses, MACs, placement) are kept for
    objects that do not give them.
options:
  intent:
    description:
      - The intent, as a mapping with the keys C(fabric), C(hypervisors) and C(tenants) of an
        intent file.
      - Hypervisors omitted here are removed, so a playbook that enlists hypervisors with
        M(hypetunnel.fabric.hypetunnel_hypervisor) should list them here too (or use
        M(hypetunnel.fabric.hypetunnel_tenant) per tenant instead).
    type: dict
    required: true
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: The controller's dry run; nothing is written.
  diff_mode:
    support: full
    description: Before and after of the intent, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Apply the tenants from vars
  hypetunnel.fabric.hypetunnel_intent:
    api_url:
      - https://100.64.0.10:8650
      - https://100.64.0.11:8650
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    intent:
      fabric:
        encapsulation: vxlan
      hypervisors:
        - name: hv1
          underlay_ip: 172.31.0.10
        - name: hv2
          underlay_ip: 172.31.0.11
      tenants:
        - name: acme
          networks:
            - name: front
              cidr: 10.1.0.0/24
          vms:
            - name: web1
              network: front
              hypervisor: hv1
"""

RETURN = r"""
plan:
  description: The controller's plan (applied unless in check mode or empty).
  returned: success
  type: dict
  contains:
    added:
      description: Objects added, each with C(kind), C(key) and C(detail).
      type: list
      elements: dict
    changed:
      description: Objects changed, with what changes in C(detail).
      type: list
      elements: dict
    removed:
      description: Objects removed.
      type: list
      elements: dict
    revision:
      description: The store revision after the apply (the current one for a dry run).
      type: int
    applied:
      description: Whether the plan was applied.
      type: bool
  sample:
    added:
      - kind: vm
        key: acme/web1
        detail: "10.1.0.2 02:88:97:61:72:cd on hv1 (network front, vni 1000, 1 vCPU / 512 MB)"
    changed: []
    removed: []
    revision: 3
    applied: true
intent:
  description:
    - The resolved intent after the run (every VNI, IP and MAC filled in).
    - In check mode, the current intent with the task's intent laid over it.
  returned: success
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_api import (
    COMMON_KWARGS,
    argument_spec,
)
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_intent import (
    Change,
    by_name,
    fill_from,
    merged,
)


def laid_over(current, given):
    out = {"fabric": merged(current.get("fabric"), given.get("fabric") or {}),
           "hypervisors": fill_from(current.get("hypervisors"), given.get("hypervisors")),
           "tenants": []}
    for t in given.get("tenants") or []:
        old = by_name(current.get("tenants"), t.get("name")) or {}
        new = merged(old, t)
        new["networks"] = fill_from(old.get("networks"), t.get("networks"))
        new["vms"] = fill_from(old.get("vms"), t.get("vms"))
        out["tenants"].append(new)
    return out


def main():
    module = AnsibleModule(argument_spec=argument_spec(intent=dict(type="dict", required=True)),
                           supports_check_mode=True, **COMMON_KWARGS)
    given = module.params["intent"]
    Change(module).run(build=lambda before: given, view=lambda intent: intent, key="intent",
                       preview=laid_over)


if __name__ == "__main__":
    main()
