#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_info
short_description: Read the HypeTunnel fabric's intent, status, overlay and move log
version_added: "0.1.0"
description:
  - Reads from the active controller (and, for V(controllers), from every member of O(api_url)).
    Never changes anything.
options:
  gather:
    description:
      - What to read. V(intent) is the resolved intent, V(status) the controller's and switches'
        status, V(overlay) the tunnels and VNIs per hypervisor, V(moves) the move log,
        V(controllers) the role and term every member reports.
    type: list
    elements: str
    choices: [intent, status, overlay, moves, controllers]
    default: [intent, status]
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: It only reads.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Is the fabric converged?
  hypetunnel.fabric.hypetunnel_info:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    gather: [status, controllers]
  register: fabric
  until: fabric.status.converged
  retries: 30
  delay: 2
"""

RETURN = r"""
intent:
  description: The resolved intent (fabric, hypervisors, tenants).
  returned: when gathered
  type: dict
status:
  description: The store revision, the controller's role and the switches' state (C(converged)).
  returned: when gathered
  type: dict
overlay:
  description: Per hypervisor, its tunnels, VNIs and flow counts.
  returned: when gathered
  type: dict
moves:
  description: Every move record (see M(hypetunnel.fabric.hypetunnel_move)).
  returned: when gathered
  type: list
  elements: dict
controllers:
  description: Every member of O(api_url) with its C(url), and C(role), C(term) or C(error).
  returned: when gathered
  type: list
  elements: dict
  sample: [{url: "https://100.64.0.10:8650", role: active, term: 3},
           {url: "https://100.64.0.11:8650", role: standby, term: 3}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_api import (
    COMMON_KWARGS,
    ApiError,
    HypeTunnelApi,
    argument_spec,
    fail,
)

CHOICES = ["intent", "status", "overlay", "moves", "controllers"]


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(gather=dict(type="list", elements="str", choices=CHOICES,
                                                default=["intent", "status"])),
        supports_check_mode=True, **COMMON_KWARGS)
    api = HypeTunnelApi(module)
    result = dict(changed=False)
    try:
        for what in module.params["gather"]:
            if what == "controllers":
                result[what] = [dict(url=m.url, **a) if isinstance(a, dict)
                                else dict(url=m.url, error="; ".join(a.lines()))
                                for m, a in api.probe()]
            else:
                result[what] = api.get("/" + what)
    except ApiError as e:
        fail(module, e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
