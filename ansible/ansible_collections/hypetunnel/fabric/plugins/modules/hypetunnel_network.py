#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_network
short_description: Add, change or remove a network of a HypeTunnel tenant
version_added: "0.1.0"
description:
  - Makes one network of an existing tenant present or absent; everything else is left as it is.
  - Left out, O(vni) keeps the controller's allocation (or is allocated for a new network).
options:
  tenant:
    description: The tenant the network belongs to (it must exist).
    type: str
    required: true
  name:
    description: The network's name.
    type: str
    required: true
  state:
    description: V(absent) removes it (refused while VMs are attached to it).
    type: str
    choices: [present, absent]
    default: present
  cidr:
    description: The network's IPv4 prefix (/29 or shorter). Required for a new network.
    type: str
  vni:
    description: The overlay's VNI (1 to 16777213); left out, the controller's allocation.
    type: int
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: The controller's dry run of the would-be intent; nothing is written.
  diff_mode:
    support: full
    description: Before and after of the network, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Network back of tenant acme
  hypetunnel.fabric.hypetunnel_network:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    tenant: acme
    name: back
    cidr: 10.2.0.0/24
"""

RETURN = r"""
network:
  description: The network after the run (with its VNI); null when absent.
  returned: success
  type: dict
  sample: {name: back, cidr: 10.2.0.0/24, vni: 1001}
plan:
  description:
    - The controller's plan, with lists C(added), C(changed), C(removed) of C(kind), C(key),
      C(detail), the store C(revision) and whether it was C(applied).
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
    merged,
    replace_named,
    tenant_of,
)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            tenant=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            cidr=dict(type="str"),
            vni=dict(type="int"),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    name = p["name"]
    change = Change(module)

    def build(intent):
        tenant = tenant_of(change, intent, p["tenant"])
        networks = tenant.get("networks") or []
        current = by_name(networks, name)
        if p["state"] == "absent":
            users = [v["name"] for v in tenant.get("vms") or [] if v.get("network") == name]
            if users and current is not None:
                change.fail("name", "network %s/%s still has VMs: %s"
                            % (p["tenant"], name, ", ".join(users)))
            tenant["networks"] = replace_named(networks, name, None)
            return intent
        if current is None and not p["cidr"]:
            change.fail("cidr", "required to create network %s/%s" % (p["tenant"], name))
        tenant["networks"] = replace_named(networks, name, merged(
            current, dict(name=name, cidr=p["cidr"], vni=p["vni"])))
        return intent

    def view(intent):
        tenant = by_name(intent.get("tenants"), p["tenant"]) or {}
        return by_name(tenant.get("networks"), name)

    change.run(build, view, "network")


if __name__ == "__main__":
    main()
