#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_failover
short_description: Make one controller of the HypeTunnel pair the active one
version_added: "0.1.0"
description:
  - Asks every member of O(api_url) for its role (C(GET /api/v1/controller)). When the
    controller named O(active) (its C(node), the inventory name the controller role gives it)
    is the active one already, nothing changes.
  - Otherwise it must be the standby, and the active one is asked for a graceful hand-over
    (C(POST /api/v1/controller/failover), as C(hypetunnel controller failover) does); it steps
    down and tells the standby to claim at once. The module then waits until O(active) reports
    the role C(active).
  - The hand-over request is sent once, never retried; a retry that reached the new active
    would hand the role straight back.
options:
  active:
    description: The node that must be the active controller.
    type: str
    required: true
  wait_timeout:
    description: The longest to wait for O(active) to report the role C(active), in seconds.
    type: float
    default: 60
extends_documentation_fragment:
  - hypetunnel.fabric.api
attributes:
  check_mode:
    support: full
    description: Reports whether a hand-over would be asked for; asks for none.
  diff_mode:
    support: none
    description: RV(previous) and RV(controllers) say who was and is active.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: Hand the active role to ctl2
  hypetunnel.fabric.hypetunnel_failover:
    api_url: ["https://100.64.0.10:8650", "https://100.64.0.11:8650"]
    token_file: /var/lib/hypetunnel/admin.token
    ca_path: /etc/hypetunnel/pki/ca.crt
    active: ctl2
"""

RETURN = r"""
previous:
  description: The node that was active before (none when no member was).
  returned: success
  type: str
  sample: ctl1
controllers:
  description: Every member of O(api_url) after the run, with its C(url), and C(node),
    C(role), C(term), C(version) or C(error).
  returned: always
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_api import (
    COMMON_KWARGS,
    RETRY_INTERVAL,
    ApiError,
    HypeTunnelApi,
    argument_spec,
    fail,
)


def views(api):
    """(member, its GET /controller answer or None) and the same as return values."""
    probes = api.probe()
    out = [dict(url=m.url, **a) if isinstance(a, dict)
           else dict(url=m.url, error="; ".join(a.lines())) for m, a in probes]
    return [(m, a if isinstance(a, dict) else None) for m, a in probes], out


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(active=dict(type="str", required=True),
                                    wait_timeout=dict(type="float", default=60.0)),
        supports_check_mode=True, **COMMON_KWARGS)
    want = module.params["active"]
    api = HypeTunnelApi(module)
    probes, shown = views(api)
    target = [a for m, a in probes if a is not None and a.get("node") == want]
    actives = [(m, a) for m, a in probes if a is not None and a.get("role") == "active"]
    previous = max(actives, key=lambda ma: ma[1].get("term") or 0) if actives else None
    result = dict(changed=False, controllers=shown,
                  previous=previous[1].get("node") if previous else None)
    if not target:
        module.fail_json(msg="active: no member of api_url is the controller %s" % want, **result)
    if target[0].get("role") == "active" and len(actives) == 1:
        module.exit_json(**result)
    if target[0].get("role") != "standby" or previous is None:
        module.fail_json(msg="active: %s is %s, and the active one %s: a hand-over needs an "
                         "active controller and %s as its standby"
                         % (want, target[0].get("role"), result["previous"] or "is none", want),
                         **result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(**result)
    try:
        previous[0].request("POST", "/controller/failover")
    except ApiError as e:
        if e.status is not None:  # refused (e.g. 409: no longer the active one)
            fail(module, e, **result)
        # No answer: it may have stepped down all the same; the wait below tells.
    deadline = time.time() + module.params["wait_timeout"]
    while True:
        probes, result["controllers"] = views(api)
        roles = dict((a.get("node"), a.get("role")) for m, a in probes if a is not None)
        if roles.get(want) == "active" and list(roles.values()).count("active") == 1:
            module.exit_json(**result)
        if time.time() > deadline:
            module.fail_json(msg="%s did not become the active controller within %g s (roles: %s)"
                             % (want, module.params["wait_timeout"],
                                ", ".join(sorted("%s %s" % kv for kv in roles.items()))),
                             **result)
        time.sleep(RETRY_INTERVAL)


if __name__ == "__main__":
    main()
