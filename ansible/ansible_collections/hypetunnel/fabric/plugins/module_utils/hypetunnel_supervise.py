# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Starting a daemon for the lab supervisor of hypetunnel_service: in a new session, its output
appended to a log file, not waited for (module.run_command waits for what it runs)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess


def spawn(argv, log_file, cwd, env):
    """Start argv detached from the caller's session and terminal; returns the Popen."""
    with open(log_file, "ab") as log, open(os.devnull, "rb") as null:
        return subprocess.Popen(argv, stdin=null, stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, close_fds=True, start_new_session=True)
