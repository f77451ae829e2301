#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: hypetunnel_service
short_description: A service, through systemd in production or a small lab supervisor
version_added: 0.1.0
description:
  - The service-manager switch of the hypetunnel.fabric roles. O(manager=systemd) (production)
    drives a systemd unit with C(systemctl) (the unit file itself is written by the role).
  - O(manager=lab) is the stand-in for hosts whose PID 1 is not systemd (the namespace lab).
    It starts O(command) in the foreground of a new session, detached from Ansible's
    connection, with its output in O(log_file), and records its pid and start time under
    O(lab_dir). A recorded process is only taken for the service while its pid still has the
    recorded start time (pids get reused). There is no restart on failure.
  - With O(manager=lab), a service that runs with another O(command) than the one it was
    started with is restarted (the command line is the lab's unit file).
  - Idempotent; check mode reports what would be done.
options:
  name:
    description: The service's (systemd unit's) name.
    type: str
    required: true
  state:
    description:
      - V(started) starts it unless it runs; V(stopped) stops it if it runs; V(restarted)
        always (re)starts it.
      - V(reloaded) asks a running service to reload its files (C(systemctl reload); with
        O(manager=lab), SIGHUP to its process); it fails when the service does not run.
    type: str
    choices: [started, stopped, restarted, reloaded]
    required: true
  manager:
    description: V(systemd) or V(lab).
    type: str
    choices: [systemd, lab]
    default: systemd
  enabled:
    description: With O(manager=systemd), whether the unit starts at boot.
    type: bool
  daemon_reload:
    description: With O(manager=systemd), run C(systemctl daemon-reload) first.
    type: bool
    default: false
  command:
    description:
      - With O(manager=lab), the service's command line (argv), run in the foreground.
      - Needed to start it; a restart without it runs the recorded command line again.
    type: list
    elements: str
  lab_dir:
    description: With O(manager=lab), where the pid file (C(<name>.pid)), the record
      (C(<name>.json)) and by default the log file are kept.
    type: path
    default: /var/run/hypetunnel-lab
  log_file:
    description: With O(manager=lab), the file the service's stdout and stderr are appended to
      (default C(<lab_dir>/<name>.log)).
    type: path
  environment:
    description: With O(manager=lab), variables added to the service's environment.
    type: dict
    default: {}
  chdir:
    description: With O(manager=lab), the service's working directory.
    type: path
    default: /
  wait_for:
    description: With O(manager=lab), a path (a socket, a pid file) that must exist once the
      service started; the module fails if the service exits or O(timeout) passes first.
      A socket there is removed before the start (one left by a killed process must not pass
      for the new one's).
    type: path
  timeout:
    description: Seconds to wait for O(wait_for), or for a stopping service to exit before it
      is killed.
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    description: Reports whether it would start, stop or restart; does nothing.
  diff_mode:
    support: none
    description: Nothing to compare; RV(action) says what was done.
author:
  - HypeTunnel developers (@hypetunnel)
"""

EXAMPLES = r"""
- name: The controller, as a systemd unit
  hypetunnel.fabric.hypetunnel_service:
    name: hypetunnel-controller
    state: started
    enabled: true

- name: The controller, in the lab
  hypetunnel.fabric.hypetunnel_service:
    name: hypetunnel-controller
    manager: lab
    state: started
    lab_dir: /srv/lab/hosts/hv1/var/run/hypetunnel-lab
    command:
      - /srv/lab/hosts/hv1/opt/hypetunnel/venv/bin/hypetunnel
      - controller
      - run
      - --config
      - /srv/lab/hosts/hv1/etc/hypetunnel/controller.yaml
"""

RETURN = r"""
pid:
  description: With O(manager=lab), the service's pid (none when stopped).
  returned: always
  type: int
action:
  description: What was (or in check mode would be) done, V(start), V(stop), V(restart),
    V(reload) or V(none).
  returned: always
  type: str
"""

import json
import os
import signal
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hypetunnel.fabric.plugins.module_utils.hypetunnel_supervise import spawn


def start_time(pid):
    """The kernel's start time of pid (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie has exited
        return None
    return fields[19]


class LabService(object):
    def __init__(self, module):
        self.module = module
        p = module.params
        self.name = p["name"]
        self.dir = p["lab_dir"]
        self.record_path = os.path.join(self.dir, "%s.json" % self.name)
        self.pidfile = os.path.join(self.dir, "%s.pid" % self.name)
        self.log_file = p["log_file"] or os.path.join(self.dir, "%s.log" % self.name)

    def record(self):
        try:
            with open(self.record_path) as f:
                rec = json.load(f)
        except (IOError, OSError, ValueError):
            return None
        if start_time(rec.get("pid", 0)) != rec.get("start_time"):
            return None
        return rec

    def start(self):
        p = self.module.params
        if not p["command"]:
            self.module.fail_json(msg="service %s: command is needed to start it" % self.name)
        for d in (self.dir, os.path.dirname(self.log_file)):
            if not os.path.isdir(d):
                os.makedirs(d)
        wait_for = p["wait_for"]
        if wait_for and os.path.exists(wait_for) and stat.S_ISSOCK(os.stat(wait_for).st_mode):
            os.unlink(wait_for)  # left by a killed process: it must not pass for the new one
        env = dict(os.environ)
        env.update(dict((k, str(v)) for k, v in p["environment"].items()))
        proc = spawn(p["command"], self.log_file, p["chdir"], env)
        stamp = None
        deadline = time.time() + p["timeout"]
        while stamp is None and time.time() < deadline:
            stamp = start_time(proc.pid)
            if stamp is None:
                time.sleep(0.02)
        rec = {"pid": proc.pid, "start_time": stamp, "command": p["command"]}
        tmp = self.record_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, self.record_path)
        with open(self.pidfile, "w") as f:
            f.write("%d\n" % proc.pid)
        while p["wait_for"] and not os.path.exists(p["wait_for"]) and proc.poll() is None:
            if time.time() > deadline:
                self.module.fail_json(msg="service %s: %s did not appear within %ss"
                                      % (self.name, p["wait_for"], p["timeout"]),
                                      log=self.log_tail())
            time.sleep(0.05)
        if proc.poll() is None:
            time.sleep(0.2)  # an immediate failure (bad flag, port in use) shows up here
        if proc.poll() is not None:
            self.module.fail_json(msg="service %s exited with %s" % (self.name, proc.returncode),
                                  log=self.log_tail())
        return proc.pid

    def stop(self, rec):
        pid = rec["pid"]
        self._signal(pid, signal.SIGTERM)
        deadline = time.time() + self.module.params["timeout"]
        while start_time(pid) == rec["start_time"] and time.time() < deadline:
            time.sleep(0.05)
        if start_time(pid) == rec["start_time"]:
            self._signal(pid, signal.SIGKILL)
            while start_time(pid) == rec["start_time"]:
                time.sleep(0.05)
        for path in (self.record_path, self.pidfile):
            if os.path.exists(path):
                os.unlink(path)

    @staticmethod
    def _signal(pid, sig):
        try:
            os.kill(pid, sig)
        except OSError:
            pass

    def log_tail(self):
        try:
            with open(self.log_file, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 2000))
                return f.read().decode("utf-8", "replace")
        except (IOError, OSError):
            return ""

    def ensure(self, state):
        rec = self.record()
        command = self.module.params["command"]
        if state == "reloaded":
            if not rec:
                self.module.fail_json(msg="service %s does not run: nothing to reload" % self.name)
            if not self.module.check_mode:
                self._signal(rec["pid"], signal.SIGHUP)
            return "reload", rec["pid"]
        if state == "stopped":
            action = "stop" if rec else "none"
        elif state == "restarted" or (rec and command and rec["command"] != command):
            action = "restart" if rec else "start"
        else:
            action = "none" if rec else "start"
        pid = rec["pid"] if rec and action == "none" else None
        if self.module.check_mode or action == "none":
            return action, pid
        if rec and not command:  # a restart with the command line it was started with
            self.module.params["command"] = rec.get("command")
        if rec:
            self.stop(rec)
        if action != "stop":
            pid = self.start()
        return action, pid


def systemd(module):
    p = module.params
    systemctl = module.get_bin_path("systemctl", required=True)

    def run(*args):
        rc, out, err = module.run_command([systemctl] + list(args))
        if rc != 0:
            module.fail_json(msg="systemctl %s failed: %s" % (" ".join(args), err.strip()))
        return out.strip()

    if p["daemon_reload"] and not module.check_mode:
        run("daemon-reload")
    props = dict(line.split("=", 1) for line in run(
        "show", p["name"], "-p", "ActiveState", "-p", "UnitFileState").splitlines() if "=" in line)
    active = props.get("ActiveState") in ("active", "activating", "reloading")
    if p["state"] == "reloaded":
        if not active:
            module.fail_json(msg="service %s does not run: nothing to reload" % p["name"])
        action = "reload"
    elif p["state"] == "stopped":
        action = "stop" if active else "none"
    elif p["state"] == "restarted":
        action = "restart"
    else:
        action = "none" if active else "start"
    changed = action != "none"
    if p["enabled"] is not None:
        is_enabled = props.get("UnitFileState") in ("enabled", "enabled-runtime")
        if is_enabled != p["enabled"]:
            changed = True
            if not module.check_mode:
                run("enable" if p["enabled"] else "disable", p["name"])
    if action != "none" and not module.check_mode:
        run(action, p["name"])
    return changed, action


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["started", "stopped", "restarted", "reloaded"],
                       required=True),
            manager=dict(type="str", choices=["systemd", "lab"], default="systemd"),
            enabled=dict(type="bool"),
            daemon_reload=dict(type="bool", default=False),
            command=dict(type="list", elements="str"),
            lab_dir=dict(type="path", default="/var/run/hypetunnel-lab"),
            log_file=dict(type="path"),
            environment=dict(type="dict", default={}),
            chdir=dict(type="path", default="/"),
            wait_for=dict(type="path"),
            timeout=dict(type="float", default=30),
        ),
        supports_check_mode=True,
    )
    if module.params["manager"] == "systemd":
        changed, action = systemd(module)
        module.exit_json(changed=changed, action=action, pid=None)
    action, pid = LabService(module).ensure(module.params["state"])
    module.exit_json(changed=action != "none", action=action, pid=pid)


if __name__ == "__main__":
    main()
