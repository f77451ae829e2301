#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_hypervisor
short_description: Enlist, change or retire a HypeTunnel hypervisor
version_added: "0.1.0"
description:
  - Makes one hypervisor of the controller's intent present with the given fields, or absent.
  - Options left out keep the value the controller has (so enlisting again with only O(ovsdb)
    does not undrain or move anything). The change goes through the controller's plan; an
    empty plan is not a change.
options:
  name:
    description: The hypervisor's name (lowercase letters, digits and C(-), starting with a letter).
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates it; V(absent) removes it from the fabric (refused while VMs
        are placed on it; move them or drain it first).
    type: str
    choices: [present, absent]
    default: present
  underlay_ip:
    description: Its underlay (tunnel endpoint) IPv4 address.
    type: str
  ovsdb:
    description: The OVSDB endpoint the controller drives it through, for example C(ssl:100.64.0.11:6640).
    type: str
  datapath_type:
    description: Its Open vSwitch datapath, V(system) (kernel) in production, V(netdev) in the lab.
    type: str
    choices: [system, netdev]
  capacity:
    description: What it can host; the VMs placed on it never add up to more.
    type: dict
    suboptions:
      vcpus:
        description: Virtual CPUs.
        type: int
        required: true
      memory_mb:
        description: Memory in MB.
        type: int
        required: true
  schedulable:
    description:
      - V(false) keeps new VMs off it. To move its VMs away too, use
        M(hypetunnel.fabric.hypetunnel_drain).
    type: bool
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: The controller's dry run of the would-be intent; nothing is written.
  diff_mode:
    support: full
    description: Before and after of the hypervisor, and the controller's plan.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Enlist hv1
  hypetunnel.fabric.hypetunnel_hypervisor:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: hv1
    underlay_ip: 172.31.0.10
    ovsdb: ssl:100.64.0.10:6640
    datapath_type: system
    capacity:
      vcpus: 32
      memory_mb: 131072

- name: Retire hv3 (after draining it)
  hypetunnel.fabric.hypetunnel_hypervisor:
    api_url: ["https://100.64.0.10:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    name: hv3
    state: absent
"""

RETURN = r"""
hypervisor:
  description: The hypervisor after the run (in check mode, as it would be); null when absent.
  returned: success
  type: dict
  sample:
    name: hv1
    underlay_ip: 172.31.0.10
    ovsdb: ssl:100.64.0.10:6640
    datapath_type: system
    capacity: {vcpus: 32, memory_mb: 131072}
    schedulable: null
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
)

FIELDS = ("underlay_ip", "ovsdb", "datapath_type", "capacity", "schedulable")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            underlay_ip=dict(type="str"),
            ovsdb=dict(type="str"),
            datapath_type=dict(type="str", choices=["system", "netdev"]),
            capacity=dict(type="dict", options=dict(vcpus=dict(type="int", required=True),
                                                    memory_mb=dict(type="int", required=True))),
            schedulable=dict(type="bool"),
        ),
        supports_check_mode=True, **COMMON_KWARGS)
    p = module.params
    name = p["name"]
    change = Change(module)

    def build(intent):
        hvs = intent.get("hypervisors") or []
        if p["state"] == "absent":
            users = ["%s/%s" % (t["name"], v["name"]) for t in intent.get("tenants") or []
                     for v in t.get("vms") or [] if v.get("hypervisor") == name]
            if users and by_name(hvs, name) is not None:
                change.fail("name", "hypervisor %s still hosts VMs: %s (move them away or "
                            "drain it first)" % (name, ", ".join(users[:10])))
            intent["hypervisors"] = replace_named(hvs, name, None)
        else:
            given = dict((k, p[k]) for k in FIELDS)
            given["name"] = name
            intent["hypervisors"] = replace_named(hvs, name, merged(by_name(hvs, name), given))
        return intent

    change.run(build, lambda intent: by_name(intent.get("hypervisors"), name), "hypervisor")


if __name__ == "__main__":
    main()
