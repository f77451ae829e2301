# -*- coding: utf-8 -*-
# Copyright: HypeTunnel developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The HypeTunnel REST API (/api/v1) from a module: TLS, token, the active controller, errors.

Modules run on a host's system python3, so only the standard library and Ansible's own
module_utils are used (no hypetunnel, no requests). TLS verification is always on: the API's
certificate must be signed by the CA in ca_path and name the host of the URL. An API served on
a unix socket (``unix:/path/api.sock``, as in the lab) speaks HTTPS through the socket, verified
against the CA but not against a host name: there is none, the socket's path (and its file
permissions) is the address (as the hypetunnel CLI's client does).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import ssl
import threading
import time

from ansible.module_utils.common.text.converters import to_text
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from ansible.module_utils.urls import Request

API_PREFIX = "/api/v1"
# A dead member must not cost the whole timeout: the probe of GET /controller is short.
PROBE_TIMEOUT = 5.0
RETRY_INTERVAL = 0.5  # seconds between looks for an active controller during a hand-over
STANDBY_REASON = "this controller is the standby"

COMMON_ARGS = dict(
    api_url=dict(type="list", elements="str", required=True),
    token=dict(type="str", no_log=True),
    token_file=dict(type="path"),
    ca_path=dict(type="path", required=True),
    timeout=dict(type="float", default=30.0),
)
COMMON_KWARGS = dict(
    mutually_exclusive=[("token", "token_file")],
    required_one_of=[("token", "token_file")],
)


def argument_spec(**specific):
    """The module's own options plus the common connection options."""
    spec = dict(COMMON_ARGS)
    spec.update(specific)
    return spec


def seg(name):
    """One URL path segment (names are validated by the API; quoting keeps '/' out)."""
    return quote(to_text(name), safe="")


class ApiError(Exception):
    """An error answer, or no answer; `errors` are (path, reason) pairs as the API names them."""

    def __init__(self, errors, status=None, url=None):
        self.errors = list(errors)
        self.status = status
        self.url = url
        super(ApiError, self).__init__("; ".join(self.lines()))

    def lines(self):
        return [("%s: %s" % (p, r)) if p else r for p, r in self.errors]

    @property
    def standby(self):
        return self.status == 409 and any(reason.startswith(STANDBY_REASON) for path, reason in self.errors)


def errors_from_body(status, reason, body):
    """The API's {"detail": {"errors": [{path, reason}]}}; anything else as one reason."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    items = detail.get("errors") if isinstance(detail, dict) else detail
    if isinstance(items, list) and items:
        out = []
        for item in items:
            if isinstance(item, dict):
                out.append((to_text(item.get("path", "")), to_text(item.get("reason", item))))
            else:
                out.append(("", to_text(item)))
        return out
    if isinstance(detail, str) and detail:
        return [("", detail)]
    return [("", "HTTP %s %s" % (status, reason or ""))]


def _tls_failure(exc):
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, ssl.SSLError) or "CERTIFICATE" in to_text(reason).upper() \
        or "SSL" in to_text(reason)


UNIX_PREFIX = "unix:"
# The host part of the request URL sent through a unix socket (the Host header only).
UNIX_HOST = "https://hypetunnel"


def valid_url(url):
    """An https:// URL, or unix:/absolute/path of a socket serving HTTPS."""
    if url.startswith(UNIX_PREFIX):
        return url[len(UNIX_PREFIX):].startswith("/")
    return url.startswith("https://")


def unix_context(ca_path):
    """TLS through a unix socket: the CA's signature is checked, a host name cannot be."""
    context = ssl.create_default_context(cafile=ca_path)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class Member:
    """One controller's API."""

    def __init__(self, url, token, ca_path, timeout):
        self.url = url.rstrip("/")
        self.socket = self.url[len(UNIX_PREFIX):] if self.url.startswith(UNIX_PREFIX) else None
        self.token = token
        self.ca_path = ca_path
        self.timeout = timeout
        self.etag = None  # the ETag of this member's last answer (GET /intent: its revision)

    def request(self, method, path, body=None, timeout=None, if_match=None):
        url = (UNIX_HOST if self.socket else self.url) + API_PREFIX + path
        headers = {"Authorization": "Bearer %s" % self.token, "Accept": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            opener = Request(context=unix_context(self.ca_path) if self.socket else None)
            resp = opener.open(method, url, data=data, headers=headers,
                               ca_path=self.ca_path, validate_certs=True,
                               timeout=timeout or self.timeout, follow_redirects="none",
                               use_proxy=False, unix_socket=self.socket)
            raw = resp.read()
            self.etag = resp.headers.get("ETag")
        except HTTPError as e:
            try:
                body = json.loads(to_text(e.read()))
            except (ValueError, TypeError, AttributeError):
                body = None
            raise ApiError(errors_from_body(e.code, e.reason, body), e.code, url)
        except URLError as e:
            if _tls_failure(e):
                why = ("TLS with the HypeTunnel API at %s failed: %s (is ca_path the CA that "
                       "signed the controller's certificate?)" % (self.url, to_text(e.reason)))
            else:
                why = "cannot reach the HypeTunnel API at %s: %s" % (self.url, to_text(e.reason))
            raise ApiError([("api_url", why)], None, url)
        except (ssl.SSLError, ssl.CertificateError) as e:
            raise ApiError([("api_url", "TLS with the HypeTunnel API at %s failed: %s"
                             % (self.url, to_text(e)))], None, url)
        except (OSError, ValueError) as e:  # timeouts, resets, a malformed URL
            raise ApiError([("api_url", "talking to the HypeTunnel API at %s failed: %s"
                             % (self.url, to_text(e)))], None, url)
        if not raw:
            return None
        try:
            return json.loads(to_text(raw))
        except ValueError:
            raise ApiError([("", "%s %s: the answer is not JSON" % (method, url))], None, url)


class HypeTunnelApi:
    """The controller pair of `api_url`: requests go to the active member.

    The active member is the one answering GET /controller with role "active" (a controller
    without HA answers without a role and counts as active); with two claiming it (one resumed
    after a hang), the highest term wins. During a hand-over no member may be active, or a
    write may reach the old active just as it steps down (409 "this controller is the standby"):
    then the API is asked again until `timeout` seconds have passed.
    """

    def __init__(self, module):
        self.module = module
        p = module.params
        self.urls = [u for u in p["api_url"] if u]
        if not self.urls:
            module.fail_json(msg="api_url: give at least one https:// URL", errors=[
                {"path": "api_url", "reason": "give at least one https:// URL"}])
        for u in self.urls:
            if not valid_url(u):
                module.fail_json(msg="api_url: %s is not an https:// URL nor unix:/path of a "
                                 "socket (TLS is always on)" % u,
                                 errors=[{"path": "api_url", "reason": "not an https:// URL"}])
        self.timeout = p["timeout"]
        self.token = self._token(p)
        self.members = [Member(u, self.token, p["ca_path"], self.timeout) for u in self.urls]
        self._active = None
        self.etag = None

    def _token(self, p):
        if p.get("token"):
            return p["token"].strip()
        path = p["token_file"]
        try:
            with open(path, "r") as f:
                token = f.read().strip()
        except (IOError, OSError) as e:
            self.module.fail_json(msg="token_file: cannot read %s: %s" % (path, to_text(e)),
                                  errors=[{"path": "token_file", "reason": to_text(e)}])
        if not token:
            self.module.fail_json(msg="token_file: %s is empty" % path,
                                  errors=[{"path": "token_file", "reason": "empty"}])
        return token

    # -- finding the active member ---------------------------------------------------------
    def probe(self):
        """(member, answer or ApiError) of every member, asked in parallel."""
        answers = {}

        def ask(m):
            try:
                answers[m.url] = m.request("GET", "/controller",
                                           timeout=min(PROBE_TIMEOUT, self.timeout))
            except ApiError as e:
                answers[m.url] = e

        threads = [threading.Thread(target=ask, args=(m,)) for m in self.members]
        for t in threads:
            t.daemon = True
            t.start()
        for t in threads:
            t.join(min(PROBE_TIMEOUT, self.timeout) + 1.0)
        return [(m, answers.get(m.url, ApiError([("api_url", "%s: no answer" % m.url)])))
                for m in self.members]

    def active(self, refresh=False):
        if self._active is not None and not refresh:
            return self._active
        deadline = time.monotonic() + self.timeout
        while True:
            probes = self.probe()
            actives = [(m, a) for m, a in probes if isinstance(a, dict)
                       and a.get("role") in ("active", None)]
            if actives:
                best = max(actives, key=lambda ma: ma[1].get("term") or 0)
                self._active = best[0]
                return self._active
            # A member that refuses the token or the TLS handshake will not get better.
            errors = [a for m, a in probes if isinstance(a, ApiError)]
            fatal = [a for a in errors if a.status in (401, 403)]
            tls = [a for a in errors if any("TLS" in reason for path, reason in a.errors)]
            if fatal or (tls and len(tls) == len(probes)) or time.monotonic() >= deadline:
                raise ApiError(self._no_active(probes), fatal[0].status if fatal else None)
            time.sleep(RETRY_INTERVAL)

    @staticmethod
    def _no_active(probes):
        errors = []
        for m, a in probes:
            if isinstance(a, ApiError):
                errors.extend((p, r if m.url in r else "%s: %s" % (m.url, r)) for p, r in a.errors)
            else:
                errors.append(("api_url", "%s: role %s" % (m.url, a.get("role"))))
        errors.append(("api_url", "no active controller among %d" % len(probes)))
        return errors

    # -- requests ----------------------------------------------------------------------------
    def call(self, method, path, body=None, if_match=None):
        """The request on the active member; during a hand-over, again on the new active."""
        deadline = time.monotonic() + self.timeout
        refresh = False
        while True:
            member = self.active(refresh=refresh)
            try:
                answer = member.request(method, path, body, if_match=if_match)
                self.etag = member.etag
                return answer
            except ApiError as e:
                retry = e.standby or e.status == 503 or (e.status is None and len(self.members) > 1)
                if not retry or time.monotonic() >= deadline:
                    raise
            time.sleep(RETRY_INTERVAL)
            refresh = True

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body=None):
        return self.call("POST", path, body)

    def intent(self):
        """The resolved intent; `self.etag` is then the revision it was read at."""
        return self.get("/intent")

    def apply(self, intent, dry_run, if_match=None):
        """With if_match (an ETag of intent()), the controller refuses with 412 when anything
        was committed since that read, rather than undo a change the caller never saw."""
        return self.call("POST", "/apply", {"intent": intent, "dry_run": bool(dry_run)},
                         if_match=if_match)


def fail(module, exc, **result):
    """fail_json with the API's errors as "path: reason" lines (and as a list)."""
    module.fail_json(msg="; ".join(exc.lines()),
                     errors=[{"path": p, "reason": r} for p, r in exc.errors],
                     status=exc.status, **result)
