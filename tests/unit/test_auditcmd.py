"""`hypetunnel audit` against a fake API: the query it sends and the table it prints."""

from __future__ import annotations

import time
from typing import Any

import pytest

from hypetunnel.cli.auditcmd import parse_duration
from hypetunnel.cli.context import CliError
from tests.unit.test_cli import API, FakeApi, api, cli  # noqa: F401  (fixtures)

NOW = time.time()
ENTRIES = [
    {"kind": "refusal", "time": NOW, "who": "anonymous", "role": None, "tenant": None,
     "method": "DELETE", "route": "/api/v1/tenants/{tenant}", "params": {"tenant": "acme"},
     "status": 401, "auth_failure": "expired", "count": 12, "node": "ctl1"},
    {"kind": "change", "time": NOW - 5, "who": "tom", "role": "tenant-admin", "tenant": "acme",
     "method": "DELETE", "route": "/api/v1/tenants/{tenant}/vms/{vm}",
     "params": {"tenant": "acme", "vm": "web1"}, "status": 200, "revision": 7, "node": "ctl2",
     "plan": {"added": [], "changed": [], "removed": ["vm acme/web1"],
              "counts": {"added": 0, "changed": 0, "removed": 1}, "applied": True}},
]


def test_audit_sends_tenant_and_since_and_prints_a_table(cli: Any, api: FakeApi) -> None:  # noqa: F811
    api.on("GET", "/api/v1/audit", 200, ENTRIES)
    r = cli("--api", API, "audit", "--tenant", "acme", "--since", "1h")
    assert r.exit_code == 0, r.output
    [req] = api.requests
    assert req.url.params["tenant"] == "acme" and float(req.url.params["since"]) == 3600
    assert "DELETE /tenants/acme/vms/web1" in r.stdout and "tom (tenant-admin)" in r.stdout
    assert "-vm acme/web1" in r.stdout and "200 r7" in r.stdout and "ctl2" in r.stdout
    assert "401 expired x12" in r.stdout


def test_audit_without_entries_and_as_json(cli: Any, api: FakeApi) -> None:  # noqa: F811
    api.on("GET", "/api/v1/audit", 200, [])
    assert "no audit entries" in cli("--api", API, "audit").stdout
    api.on("GET", "/api/v1/audit", 200, ENTRIES)
    assert '"auth_failure": "expired"' in cli("--api", API, "audit", "-o", "json").stdout


def test_a_bad_since_is_refused_before_any_request(cli: Any, api: FakeApi) -> None:  # noqa: F811
    r = cli("--api", API, "audit", "--since", "yesterday")
    assert r.exit_code != 0 and "--since" in r.output and "15m" in r.output
    assert api.requests == []


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900),
                                               ("1h", 3600), ("2d", 172800), ("1.5h", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bad_duration_names_the_option() -> None:
    with pytest.raises(CliError):
        parse_duration("-1h")
