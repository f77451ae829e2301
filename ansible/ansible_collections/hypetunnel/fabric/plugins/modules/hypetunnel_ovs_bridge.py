#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_ovs_bridge
short_description: An Open vSwitch bridge, its ports, controllers and static flows
version_added: 0.1.0
description:
  - Creates, updates or removes one Open vSwitch bridge through C(ovs-vsctl), talking to the
    host's own database socket (O(db)), in one OVSDB transaction.
  - Only what is given is managed; an option left out is left as it is on the host.
  - Idempotent; reads the bridge first and writes only what differs. Check mode and diff
    report the difference without writing.
  - Needs only the Open vSwitch command-line tools (C(ovs-vsctl), and C(ovs-ofctl) for O(flows)).
options:
  name:
    description: The bridge's name.
    type: str
    required: true
  state:
    description: V(present) creates or updates it; V(absent) deletes it with its ports.
    type: str
    choices: [present, absent]
    default: present
  db:
    description: The OVSDB endpoint of the host's ovsdb-server.
    type: str
    default: unix:/var/run/openvswitch/db.sock
  rundir:
    description:
      - The Open vSwitch run directory, where ovs-vswitchd keeps the bridge's OpenFlow
        management socket C(<name>.mgmt). Used with O(flows).
      - Defaults to the directory of O(db) when it is a C(unix:) socket.
    type: path
  datapath_type:
    description: V(system) (the kernel datapath) or V(netdev) (userspace).
    type: str
    choices: [system, netdev]
  fail_mode:
    description: What the bridge does without a controller.
    type: str
    choices: [secure, standalone]
  protocols:
    description: The OpenFlow versions it speaks, for example V(OpenFlow13).
    type: list
    elements: str
  other_config:
    description: Keys of the bridge's C(other_config) to set (other keys are left alone).
    type: dict
  external_ids:
    description: Keys of the bridge's C(external_ids) to set (other keys are left alone).
    type: dict
  mtu_request:
    description: The MTU of the bridge's own internal interface.
    type: int
  controllers:
    description:
      - The OpenFlow controller targets, for example C(ssl:100.64.0.11:6653). An empty list
        removes every controller.
    type: list
    elements: str
  ports:
    description: Ports to have on the bridge (one interface each).
    type: list
    elements: dict
    suboptions:
      name:
        description: The port's (and its interface's) name.
        type: str
        required: true
      type:
        description: The interface type, for example V(internal) or V(vxlan); empty for a
          system device.
        type: str
        default: ""
      options:
        description: The interface's C(options), as a whole (for example C(remote_ip), C(key)).
        type: dict
        default: {}
      mtu_request:
        description: The interface's MTU.
        type: int
      ofport_request:
        description: The OpenFlow port number to ask for.
        type: int
  purge_ports:
    description: Delete the bridge's ports that O(ports) does not list.
    type: bool
    default: false
  flows:
    description:
      - The bridge's whole OpenFlow table, one C(ovs-ofctl) flow per item; any other flow is
        deleted. Each flow gets the cookie O(flow_cookie) unless it names one.
      - The set is recorded in the bridge's C(external_ids:hypetunnel-flows); flows are written
        again when it differs or when the table holds another number of flows (flows do not
        survive an ovs-vswitchd restart).
    type: list
    elements: str
  flow_cookie:
    description: The cookie of the flows of O(flows).
    type: str
    default: "0x6874"
attributes:
  check_mode:
    support: full
    description: Reads the bridge and reports what would change; writes nothing.
  diff_mode:
    support: full
    description: The managed settings before and after.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: The integration bridge, closed without a controller
  hypetunnel.fabric.hypetunnel_ovs_bridge:
    name: br-int
    db: unix:/var/run/openvswitch/db.sock
    datapath_type: system
    fail_mode: secure
    protocols: [OpenFlow13]
    other_config:
      disable-in-band: "true"
    controllers:
      - ssl:100.64.0.11:6653
      - ssl:100.64.0.12:6653

- name: The physical bridge with the uplink NIC
  hypetunnel.fabric.hypetunnel_ovs_bridge:
    name: br-phy
    ports:
      - name: eth0
"""

RETURN = r"""
commands:
  description: The ovs-vsctl arguments of the transaction (empty when nothing changed).
  returned: always
  type: list
  elements: str
flows_written:
  description: Whether the flow table was (or in check mode would be) written.
  returned: always
  type: bool
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_ovs import (
    Vsctl, quote, scalar)

BRIDGE_COLUMNS = ["_uuid", "name", "datapath_type", "fail_mode", "protocols", "other_config",
                  "external_ids", "ports"]
FLOWS_KEY = "hypetunnel-flows"


def _dp(value):
    return value or "system"


def _ovs_map(values):
    return "{" + ",".join("%s=%s" % (quote(k), quote(v)) for k, v in sorted(values.items())) + "}"


def current_ports(vsctl, bridge):
    """name -> interface settings of the bridge's ports."""
    port_uuids = set(bridge["ports"]) if isinstance(bridge["ports"], list) else {bridge["ports"]}
    ports = [p for p in vsctl.records("Port", ["_uuid", "name", "interfaces"])
             if p["_uuid"] in port_uuids]
    ifaces = dict((i["name"], i) for i in vsctl.records(
        "Interface", ["name", "type", "options", "mtu_request", "ofport_request"]))
    out = {}
    for p in ports:
        i = ifaces.get(p["name"], {})
        out[p["name"]] = {"type": i.get("type", ""), "options": i.get("options", {}),
                          "mtu_request": scalar(i.get("mtu_request")),
                          "ofport_request": scalar(i.get("ofport_request"))}
    return out


def port_view(spec):
    view = {"type": spec["type"] or "", "options": dict((k, str(v)) for k, v in
                                                        spec["options"].items())}
    for key in ("mtu_request", "ofport_request"):
        if spec.get(key) is not None:
            view[key] = spec[key]
    return view


def port_differs(want, have):
    return any(have.get(k) != v for k, v in want.items())


def interface_settings(name, want):
    args = ["--", "set", "Interface", name, "type=%s" % quote(want["type"]),
            "options=%s" % _ovs_map(want["options"])]
    for key in ("mtu_request", "ofport_request"):
        if key in want:
            args.append("%s=%d" % (key, want[key]))
    return args


def flows_text(params):
    lines = []
    for flow in params["flows"]:
        flow = flow.strip()
        if "cookie=" not in flow:
            flow = "cookie=%s,%s" % (params["flow_cookie"], flow)
        lines.append(flow)
    return "\n".join(lines) + "\n"


def ofctl_target(module):
    rundir = module.params["rundir"]
    db = module.params["db"]
    if rundir is None and db.startswith("unix:"):
        rundir = os.path.dirname(db[len("unix:"):])
    if rundir is None:
        module.fail_json(msg="flows need rundir (db is not a unix: socket)")
    return "unix:%s/%s.mgmt" % (rundir, module.params["name"])


def ofctl(module, *args, **kwargs):
    cmd = [module.get_bin_path("ovs-ofctl", required=True)]
    if module.params["protocols"]:
        cmd.append("--protocols=" + ",".join(module.params["protocols"]))
    cmd += list(args)
    rc, out, err = module.run_command(cmd, data=kwargs.get("data"), binary_data=True)
    if rc != 0:
        module.fail_json(msg="ovs-ofctl failed: %s" % (err.strip() or out.strip()),
                         cmd=" ".join(cmd), rc=rc)
    return out


def flow_count(module, target):
    out = ofctl(module, "dump-flows", "--no-stats", target)
    return sum(1 for line in out.splitlines() if "actions=" in line)


def present(module, vsctl, bridge):
    p = module.params
    name = p["name"]
    before, after, args = {}, {}, []
    if bridge is None:
        args += ["--", "--may-exist", "add-br", name]
        bridge = {"datapath_type": "", "fail_mode": None, "protocols": [], "other_config": {},
                  "external_ids": {}, "ports": []}
        ports = {}
        before["exists"], after["exists"] = False, True
    else:
        ports = current_ports(vsctl, bridge)
    sets = []
    if p["datapath_type"] is not None:
        before["datapath_type"] = _dp(bridge["datapath_type"])
        after["datapath_type"] = p["datapath_type"]
        if before["datapath_type"] != after["datapath_type"]:
            sets.append("datapath_type=%s" % p["datapath_type"])
    if p["fail_mode"] is not None:
        before["fail_mode"] = scalar(bridge["fail_mode"])
        after["fail_mode"] = p["fail_mode"]
        if before["fail_mode"] != after["fail_mode"]:
            sets.append("fail_mode=%s" % p["fail_mode"])
    if p["protocols"] is not None:
        have = bridge["protocols"] if isinstance(bridge["protocols"], list) \
            else [bridge["protocols"]]
        before["protocols"], after["protocols"] = sorted(have), sorted(p["protocols"])
        if before["protocols"] != after["protocols"]:
            sets.append("protocols=%s" % ",".join(p["protocols"]) if p["protocols"]
                        else "protocols=[]")
    flows_hash = None
    if p["flows"] is not None:
        # The flow table is a set: the order it is given in does not matter.
        flows_hash = hashlib.sha256("\n".join(sorted(flows_text(p).splitlines())).encode()
                                    ).hexdigest()[:16]
    for column in ("other_config", "external_ids"):
        want = dict((k, str(v)) for k, v in (p[column] or {}).items())
        if column == "external_ids" and flows_hash is not None:
            want[FLOWS_KEY] = flows_hash
        if want:
            have = bridge[column]
            before[column] = dict((k, have.get(k)) for k in want)
            after[column] = want
            sets += ["%s:%s=%s" % (column, k, quote(v)) for k, v in sorted(want.items())
                     if have.get(k) != v]
    if sets:
        args += ["--", "set", "Bridge", name] + sets
    if p["mtu_request"] is not None:
        have = ports.get(name, {}).get("mtu_request")
        before["mtu_request"], after["mtu_request"] = have, p["mtu_request"]
        if have != p["mtu_request"]:
            args += ["--", "set", "Interface", name, "mtu_request=%d" % p["mtu_request"]]
    if p["ports"] is not None:
        wanted = dict((s["name"], port_view(s)) for s in p["ports"])
        before["ports"] = dict((n, dict((k, v) for k, v in ports[n].items()
                                        if k in wanted.get(n, ports[n])))
                               for n in ports if n != name and (n in wanted or p["purge_ports"]))
        after["ports"] = wanted
        for port, want in sorted(wanted.items()):
            if port not in ports:
                args += ["--", "--may-exist", "add-port", name, port]
                args += interface_settings(port, want)
            elif port_differs(want, ports[port]):
                args += interface_settings(port, want)
        if p["purge_ports"]:
            for port in sorted(ports):
                if port != name and port not in wanted:
                    args += ["--", "--if-exists", "del-port", name, port]
    if p["controllers"] is not None:
        have = vsctl.run("get-controller", name).split() if "exists" not in before else []
        before["controllers"], after["controllers"] = sorted(have), sorted(p["controllers"])
        if before["controllers"] != after["controllers"]:
            args += (["--", "set-controller", name] + list(p["controllers"])
                     if p["controllers"] else ["--", "del-controller", name])
    write_flows = False
    if flows_hash is not None:
        target = ofctl_target(module)
        if "exists" in before or bridge["external_ids"].get(FLOWS_KEY) != flows_hash:
            write_flows = True
        else:
            write_flows = flow_count(module, target) != len(p["flows"])
        if write_flows:
            before["flows"], after["flows"] = "(other or missing)", p["flows"]
    changed = bool(args) or write_flows
    if changed and not module.check_mode:
        if args:
            vsctl.run(*args)
        if write_flows:
            ofctl(module, "replace-flows", target, "-", data=flows_text(p))
    return changed, args, write_flows, before, after


def main():
    port_spec = dict(name=dict(type="str", required=True), type=dict(type="str", default=""),
                     options=dict(type="dict", default={}), mtu_request=dict(type="int"),
                     ofport_request=dict(type="int"))
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            db=dict(type="str", default="unix:/var/run/openvswitch/db.sock"),
            rundir=dict(type="path"),
            datapath_type=dict(type="str", choices=["system", "netdev"]),
            fail_mode=dict(type="str", choices=["secure", "standalone"]),
            protocols=dict(type="list", elements="str"),
            other_config=dict(type="dict"),
            external_ids=dict(type="dict"),
            mtu_request=dict(type="int"),
            controllers=dict(type="list", elements="str"),
            ports=dict(type="list", elements="dict", options=port_spec),
            purge_ports=dict(type="bool", default=False),
            flows=dict(type="list", elements="str"),
            flow_cookie=dict(type="str", default="0x6874"),
        ),
        supports_check_mode=True,
    )
    vsctl = Vsctl(module, module.params["db"])
    name = module.params["name"]
    bridge = vsctl.record("Bridge", name, BRIDGE_COLUMNS)
    if module.params["state"] == "absent":
        changed = bridge is not None
        args = ["--if-exists", "del-br", name] if changed else []
        if changed and not module.check_mode:
            vsctl.run(*args)
        module.exit_json(changed=changed, commands=args, flows_written=False,
                         diff=dict(before={"exists": changed}, after={"exists": False}))
    changed, args, flows_written, before, after = present(module, vsctl, bridge)
    module.exit_json(changed=changed, commands=args, flows_written=flows_written,
                     diff=dict(before=before, after=after))


if __name__ == "__main__":
    main()
