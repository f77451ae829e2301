#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_vm
short_description: Add, change or remove a VM of a HypeTunnel tenant
version_added: "0.1.0"
description:
  - Makes one VM of an existing tenant present or absent in the controller's intent; everything
    else is left as it is.
  - Options left out keep the controller's values; for a new VM the controller allocates the
    address, the MAC and (by its placement policy) the hypervisor.
  - Changing O(hypervisor) of an existing VM changes where the intent places it; to move a
    running VM with the controller following the move, use M(hypetunnel.fabric.hypetunnel_move).
options:
  tenant:
    description: The tenant the VM belongs to (it must exist).
    type: str
    required: true
  name:
    description: The VM's name.
    type: str
    required: true
  state:
    description: V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  network:
    description: The tenant's network the VM is attached to. Required for a new VM.
    type: str
  hypervisor:
    description: Where it runs; left out, the controller places a new VM.
    type: str
  ip:
    description: Its IPv4 address in the network; left out, allocated.
    type: str
  mac:
    description: Its unicast MAC address; left out, allocated.
    type: str
  vcpus:
    description: Virtual CPUs it takes of the hypervisor's capacity (new VM default 1).
    type: int
  memory_mb:
    description: Memory it takes of the hypervisor's capacity (new VM default 512).
    type: int
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: The controller's dry run of the would-be intent; nothing is written.
  diff_mode:
    support: full
    description: Before and after of the VM, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: VM web3 in network front of acme, placed by the controller
  hypetunnel.fabric.hypetunnel_vm:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    tenant: acme
    name: web3
    network: front
    vcpus: 2
    memory_mb: 2048
"""

RETURN = r"""
vm:
  description:
    - The VM after the run (with its address, MAC and hypervisor); null when absent.
    - In check mode, a new VM shows only what was asked (the controller allocates the rest).
  returned: success
  type: dict
  sample: {name: web3, network: front, hypervisor: hv2, ip: 10.1.0.4, mac: "02:3a:5e:11:07:9c",
           vcpus: 2, memory_mb: 2048}
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

FIELDS = ("network", "hypervisor", "ip", "mac", "vcpus", "memory_mb")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            tenant=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            network=dict(type="str"),
            hypervisor=dict(type="str"),
            ip=dict(type="str"),
            mac=dict(type="str"),
            vcpus=dict(type="int"),
            memory_mb=dict(type="int"),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    name = p["name"]
    change = Change(module)

    def build(intent):
        tenant = tenant_of(change, intent, p["tenant"])
        vms = tenant.get("vms") or []
        current = by_name(vms, name)
        new = None
        if p["state"] == "present":
            if current is None and not p["network"]:
                change.fail("network", "required to create VM %s/%s" % (p["tenant"], name))
            given = dict((k, p[k]) for k in FIELDS)
            given["name"] = name
            new = merged(current, given)
        tenant["vms"] = replace_named(vms, name, new)
        return intent

    def view(intent):
        tenant = by_name(intent.get("tenants"), p["tenant"]) or {}
        return by_name(tenant.get("vms"), name)

    change.run(build, view, "vm")


if __name__ == "__main__":
    main()
