#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_ovs_system
short_description: The Open vSwitch table of a host's database, its SSL settings and remotes
version_added: 0.1.0
description:
  - Sets the host-wide settings of Open vSwitch through C(ovs-vsctl) on the host's database
    socket (O(db)), namely the C(Open_vSwitch) row (created as C(ovs-vsctl init) does when the
    database is new), its C(other_config) and C(external_ids) keys, the C(SSL) record (key,
    certificate, CA) and the OVSDB remotes (C(manager_options)).
  - ovsdb-server reads the remotes and the SSL files from the database when it is started with
    C(--remote=db:Open_vSwitch,Open_vSwitch,manager_options) and
    C(--private-key=db:Open_vSwitch,SSL,private_key) (and so on), as the openvswitch role does.
  - Only what is given is managed. Idempotent, with check mode and diff.
options:
  db:
    description: The OVSDB endpoint of the host's ovsdb-server.
    type: str
    default: unix:/var/run/openvswitch/db.sock
  ssl:
    description: The SSL record, used by ovsdb-server's C(pssl:) remotes and by ovs-vswitchd's
      C(ssl:) controller connections.
    type: dict
    suboptions:
      private_key:
        description: The host's private key file.
        type: path
        required: true
      certificate:
        description: The host's certificate file.
        type: path
        required: true
      ca_cert:
        description: The CA the peers' certificates are checked against.
        type: path
        required: true
  managers:
    description:
      - The OVSDB remotes, for example C(pssl:6640:100.64.0.11) (listen with TLS on the
        management address). An empty list removes every remote.
    type: list
    elements: str
  other_config:
    description: Keys of C(other_config) to set (other keys are left alone).
    type: dict
  external_ids:
    description: Keys of C(external_ids) to set (other keys are left alone).
    type: dict
attributes:
  check_mode:
    support: full
    description: Reports what would change; writes nothing.
  diff_mode:
    support: full
    description: The managed settings before and after.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: TLS for the controllers' OVSDB connections
  hypetunnel.fabric.hypetunnel_ovs_system:
    db: unix:/var/run/openvswitch/db.sock
    ssl:
      private_key: /etc/hypetunnel/pki/hv1.key
      certificate: /etc/hypetunnel/pki/hv1.crt
      ca_cert: /etc/hypetunnel/pki/ca.crt
    managers:
      - pssl:6640:100.64.0.11
"""

RETURN = r"""
commands:
  description: The ovs-vsctl arguments of the transaction (empty when nothing changed).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_ovs import (
    Vsctl, quote)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            db=dict(type="str", default="unix:/var/run/openvswitch/db.sock"),
            ssl=dict(type="dict", options=dict(
                private_key=dict(type="path", required=True),
                certificate=dict(type="path", required=True),
                ca_cert=dict(type="path", required=True))),
            managers=dict(type="list", elements="str"),
            other_config=dict(type="dict"),
            external_ids=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    vsctl = Vsctl(module, p["db"])
    rows = vsctl.records("Open_vSwitch", ["other_config", "external_ids"])
    before, after, args = {}, {}, []
    if not rows:
        before["initialized"], after["initialized"] = False, True
        args += ["--", "init"]
        row = {"other_config": {}, "external_ids": {}}
    else:
        row = rows[0]
    sets = []
    for column in ("other_config", "external_ids"):
        want = dict((k, str(v)) for k, v in (p[column] or {}).items())
        if want:
            before[column] = dict((k, row[column].get(k)) for k in want)
            after[column] = want
            sets += ["%s:%s=%s" % (column, k, quote(v)) for k, v in sorted(want.items())
                     if row[column].get(k) != v]
    if sets:
        args += ["--", "set", "Open_vSwitch", "."] + sets
    if p["ssl"] is not None:
        have = vsctl.records("SSL", ["private_key", "certificate", "ca_cert"]) if rows else []
        want = dict(p["ssl"])
        before["ssl"], after["ssl"] = (have[0] if have else None), want
        if before["ssl"] != want:
            args += ["--", "set-ssl", want["private_key"], want["certificate"], want["ca_cert"]]
    if p["managers"] is not None:
        have = sorted(vsctl.run("get-manager").split()) if rows else []
        before["managers"], after["managers"] = have, sorted(p["managers"])
        if have != after["managers"]:
            args += (["--", "set-manager"] + list(p["managers"]) if p["managers"]
                     else ["--", "del-manager"])
    changed = bool(args)
    if changed and not module.check_mode:
        vsctl.run("--no-wait", *args)
    module.exit_json(changed=changed, commands=args, diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
