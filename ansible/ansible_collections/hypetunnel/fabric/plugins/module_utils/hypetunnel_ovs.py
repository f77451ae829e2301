# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""ovs-vsctl and ovs-ofctl for the host modules: read records as plain Python, write in one
transaction. Only the command-line tools are used (no python-ovs on the host)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json


def quote(value):
    """An OVSDB string literal (targets and options hold ':' and ',')."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def decode(datum):
    """OVSDB JSON (as ovs-vsctl --format=json --data=json prints it) to Python values:
    a set to a list, a map to a dict, a uuid to its string."""
    kinds = ("set", "map", "uuid", "named-uuid")
    if isinstance(datum, list) and len(datum) == 2 and datum[0] in kinds:
        kind, value = datum
        if kind == "set":
            return [decode(v) for v in value]
        if kind == "map":
            return dict((decode(k), decode(v)) for k, v in value)
        return value
    return datum


def scalar(value):
    """An optional column ([] when empty) as a value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


class Vsctl(object):
    def __init__(self, module, db, timeout=20):
        self.module = module
        self.db = db
        self.timeout = timeout

    def run(self, *args, **kwargs):
        cmd = [self.module.get_bin_path("ovs-vsctl", required=True), "--db=%s" % self.db,
               "--timeout=%d" % self.timeout] + list(args)
        rc, out, err = self.module.run_command(cmd)
        if rc != 0 and kwargs.get("check", True):
            self.module.fail_json(msg="ovs-vsctl failed: %s" % (err.strip() or out.strip()),
                                  cmd=" ".join(cmd), rc=rc)
        return out

    def records(self, table, columns, *conditions):
        """The rows of `table` (matching ovs-vsctl find conditions, if any) as dicts."""
        args = ["--format=json", "--data=json", "--columns=" + ",".join(columns)]
        args += ["find", table] + list(conditions) if conditions else ["list", table]
        doc = json.loads(self.run(*args) or '{"headings": [], "data": []}')
        return [dict(zip(doc["headings"], [decode(v) for v in row])) for row in doc["data"]]

    def record(self, table, name, columns):
        rows = self.records(table, columns, "name=%s" % quote(name))
        return rows[0] if rows else None
