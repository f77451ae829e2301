#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_tenant
short_description: Add, change or remove a HypeTunnel tenant
version_added: "0.1.0"
description:
  - Makes one tenant of the controller's intent present or absent. Other tenants and the
    hypervisors are left as they are.
  - With O(networks) or O(vms) given, the tenant has exactly those (the ones left out are
    removed); without them, its networks and VMs are kept. Allocations already made (VNIs, VM
    addresses, MACs, placement) are kept for entries that do not give them.
options:
  name:
    description: The tenant's name.
    type: str
    required: true
  state:
    description: V(absent) removes the tenant with all its networks and VMs.
    type: str
    choices: [present, absent]
    default: present
  encapsulation:
    description: The tenant's overlay encapsulation; left out, the fabric's default (or the stored value).
    type: str
    choices: [vxlan, gre, geneve]
  networks:
    description:
      - The tenant's networks, as in an intent file (C(name), C(cidr), optional C(vni)).
    type: list
    elements: dict
  vms:
    description:
      - The tenant's VMs, as in an intent file (C(name), C(network), optional C(hypervisor),
        C(ip), C(mac), C(vcpus), C(memory_mb)).
    type: list
    elements: dict
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: The controller's dry run of the would-be intent; nothing is written.
  diff_mode:
    support: full
    description: Before and after of the tenant, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Tenant acme with one network and two VMs
  hypetunnel.fabric.hypetunnel_tenant:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: acme
    encapsulation: geneve
    networks:
      - name: front
        cidr: 10.1.0.0/24
    vms:
      - name: web1
        network: front
      - name: web2
        network: front
        hypervisor: hv2

- name: Remove tenant old-corp
  hypetunnel.fabric.hypetunnel_tenant:
    api_url: ["https://100.64.0.10:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: old-corp
    state: absent
"""

RETURN = r"""
tenant:
  description:
    - The tenant after the run, resolved (VNIs, VM addresses and MACs filled in); null when absent.
    - In check mode, the tenant as asked, with the allocations the controller already has.
  returned: success
  type: dict
  sample:
    name: acme
    encapsulation: geneve
    networks: [{name: front, cidr: 10.1.0.0/24, vni: 1000}]
    vms: [{name: web1, network: front, hypervisor: hv1, ip: 10.1.0.2, mac: "02:88:97:61:72:cd",
           vcpus: 1, memory_mb: 512}]
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
    fill_from,
    merged,
    replace_named,
)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            encapsulation=dict(type="str", choices=["vxlan", "gre", "geneve"]),
            networks=dict(type="list", elements="dict"),
            vms=dict(type="list", elements="dict"),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    name = p["name"]

    def build(intent):
        tenants = intent.get("tenants") or []
        new = None
        if p["state"] == "present":
            new = merged(by_name(tenants, name), dict(name=name, encapsulation=p["encapsulation"],
                                                      networks=p["networks"], vms=p["vms"]))
        intent["tenants"] = replace_named(tenants, name, new)
        return intent

    def preview(before, wanted):
        # Entries given without their allocations keep the controller's (as the apply will).
        old = by_name(before.get("tenants"), name)
        tenant = by_name(wanted.get("tenants"), name)
        if old is not None and tenant is not None:
            tenant = dict(tenant, networks=fill_from(old.get("networks"), tenant["networks"]),
                          vms=fill_from(old.get("vms"), tenant["vms"]))
            wanted = dict(wanted, tenants=replace_named(wanted["tenants"], name, tenant))
        return wanted

    Change(module).run(build, lambda intent: by_name(intent.get("tenants"), name), "tenant",
                       preview)


if __name__ == "__main__":
    main()
