"""`hypetunnel usage` against a fake API: the query it sends and the table it prints."""

from __future__ import annotations

from typing import Any

from tests.unit.test_cli import API, FakeApi, api, cli  # noqa: F401  (fixtures)

ROWS = [{"tenant": "acme", "network": "front", "vm": "web1", "packets_in": 12,
         "bytes_in": 3400, "packets_out": 56, "bytes_out": 78900}]


def test_usage_sends_by_tenant_and_since_and_prints_a_table(cli: Any, api: FakeApi) -> None:  # noqa: F811
    api.on("GET", "/api/v1/usage", 200, ROWS)
    r = cli("--api", API, "usage", "--by", "vm", "--tenant", "acme", "--since", "1h")
    assert r.exit_code == 0, r.output
    [req] = api.requests
    assert req.url.params["by"] == "vm" and req.url.params["tenant"] == "acme"
    assert float(req.url.params["since"]) == 3600
    assert "web1" in r.stdout and "78900" in r.stdout and "last 1h" in r.stdout


def test_usage_refuses_an_unknown_grouping_before_any_request(cli: Any, api: FakeApi) -> None:  # noqa: F811
    r = cli("--api", API, "usage", "--by", "switch")
    assert r.exit_code != 0 and "--by" in r.output
    assert api.requests == []
