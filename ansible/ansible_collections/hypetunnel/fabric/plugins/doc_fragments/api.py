# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The connection options every hypetunnel.fabric module shares.
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - The https URLs of the controller pair's REST API, for example C(https://100.64.0.10:8650).
      - Every member is asked C(GET /api/v1/controller); requests go to the one whose role is
        C(active) (with two claiming it, the highest term). A standby refuses writes.
      - C(unix:/path/api.sock) is an API served on a unix socket (as in the lab), with HTTPS through
        the socket and the certificate verified against O(ca_path) but not against a host name
        (there is none).
    type: list
    elements: str
    required: true
  token:
    description:
      - The API token (C(ht.<name>.<secret>)), sent in the C(Authorization) header as a bearer token.
      - Exactly one of O(token) and O(token_file) is needed.
    type: str
  token_file:
    description:
      - A file on the host the module runs on holding the token, for example the controller's
        C(/var/lib/hypetunnel/admin.token).
    type: path
  ca_path:
    description:
      - The CA file the API's certificate is verified against. Verification is always on
        (there is no option to turn it off), and the certificate must name the URL's host.
    type: path
    required: true
  timeout:
    description:
      - Seconds one request may take, and also the longest the module looks for an active
        controller during a hand-over (no member active, or a write refused by a member that
        just became the standby).
    type: float
    default: 30
notes:
  - The modules use only the Python standard library and Ansible's module utilities; they run on
    any host with python3 that reaches the API (the roles run them on a controller host).
"""
