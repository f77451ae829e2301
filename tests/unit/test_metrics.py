"""The Prometheus metrics: the scrape-time collector over a fake runtime's status, the
instruments, one registry per controller, and GET /api/v1/metrics behind its token."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hypetunnel.api.app import create_app
from hypetunnel.controller.service import FabricService
from hypetunnel.metrics.registry import ControllerMetrics
from hypetunnel.model.intent import Tenant
from hypetunnel.store.memory import MemoryStore
from tests.prometheus_assets import used_metrics
from tests.unit.auth_helpers import bearer, mint

STATUS: dict[str, Any] = {
    "controller": {"node": "ctl1", "role": "active", "term": 7, "version": "0.1.0",
                   "store_schema": 2, "startup_done": True, "applied_revision": 42,
                   "loop_lag_ms": 12.5, "flow_mods_sent": 321},
    "switches": [
        {"hypervisor": "hv1", "ovsdb": "tcp:10.0.0.1:6640", "ovsdb_connected": True,
         "openflow_connected": True, "flows": 40, "flows_installed": 40, "tunnels": 2,
         "converged": True},
        {"hypervisor": "hv2", "ovsdb": "tcp:10.0.0.2:6640", "ovsdb_connected": False,
         "openflow_connected": False, "flows": 30, "flows_installed": 0, "tunnels": 2,
         "converged": False},
        # Known from a connection but not in the intent (no OVSDB endpoint): not counted.
        {"hypervisor": "stray", "ovsdb": None, "openflow_connected": True, "flows": 0},
    ],
    "vms": {"total": 5, "bound": 4},
    "accounting": {"active": True, "interval_s": 10.0, "polls": 17, "last_poll_ms": 3.5},
    "converged": False,
}


class FakeRuntime:
    def __init__(self, status: dict[str, Any] = STATUS,
                 alarms: list[tuple[str, str]] | None = None) -> None:
        self._status = status
        self.alarms = alarms
        self.usage: list[dict[str, Any]] | None = None
        self.sessions: list[tuple[str, str, str, bool]] | None = None
        self.latencies: list[tuple[str, str, str, float]] | None = None
        self.status_calls = 0
        self.metrics = ControllerMetrics(self)

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return self._status

    def overlay(self) -> dict[str, Any]:
        return {}

    def open_alarm_kinds(self) -> list[tuple[str, str]] | None:
        return self.alarms

    def tenant_usage(self) -> list[dict[str, Any]] | None:
        return self.usage

    def tunnel_sessions(self) -> list[tuple[str, str, str, bool]] | None:
        return self.sessions

    def tunnel_latencies(self) -> list[tuple[str, str, str, float]] | None:
        return self.latencies


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


def test_the_collector_reads_the_status_at_scrape_time() -> None:
    rt = FakeRuntime(alarms=[("hypervisor_lost", "critical"), ("vm_crash", "major"),
                             ("vm_crash", "major")])
    assert rt.status_calls == 0  # registering collects nothing
    got = samples(rt.metrics.exposition().decode())
    assert rt.status_calls == 1
    assert value(got, "hypetunnel_controller_active") == 1
    assert value(got, "hypetunnel_controller_term") == 7
    assert value(got, "hypetunnel_controller_info", node="ctl1", version="0.1.0",
                 store_schema="2") == 1
    assert value(got, "hypetunnel_switches") == 2
    assert value(got, "hypetunnel_switches_connected") == 1
    assert value(got, "hypetunnel_switch_openflow_connected", hypervisor="hv2") == 0
    assert value(got, "hypetunnel_switch_flows", hypervisor="hv1") == 40
    assert value(got, "hypetunnel_switch_flows_installed", hypervisor="hv2") == 0
    assert ("hypetunnel_switch_flows", (("hypervisor", "stray"),)) not in got
    assert value(got, "hypetunnel_flow_mods_sent_total") == 321
    assert value(got, "hypetunnel_event_loop_lag_seconds") == pytest.approx(0.0125)
    assert value(got, "hypetunnel_vms", state="bound") == 4
    assert value(got, "hypetunnel_converged") == 0
    assert value(got, "hypetunnel_accounting_polls_total") == 17
    assert value(got, "hypetunnel_accounting_poll_seconds") == pytest.approx(0.0035)
    assert value(got, "hypetunnel_alarms_open", kind="vm_crash", severity="major") == 2
    assert value(got, "hypetunnel_alarms_open", kind="hypervisor_lost",
                 severity="critical") == 1
    # Every known kind has its series, at 0 when nothing is open.
    assert value(got, "hypetunnel_alarms_open", kind="flow_drift", severity="warning") == 0


def test_a_standby_exports_its_role_and_no_alarm_book() -> None:
    status = {**STATUS, "controller": {**STATUS["controller"], "role": "standby"}}
    got = samples(FakeRuntime(status, alarms=None).metrics.exposition().decode())
    assert value(got, "hypetunnel_controller_active") == 0
    assert not [k for k in got if k[0] == "hypetunnel_alarms_open"]


def test_tenant_usage_carries_tenant_labels() -> None:
    rt = FakeRuntime(alarms=[])
    rt.usage = [{"tenant": "acme", "packets_in": 5, "bytes_in": 500, "packets_out": 7,
                 "bytes_out": 700, "dropped_packets": 1, "dropped_bytes": 60}]
    got = samples(rt.metrics.exposition().decode())
    assert value(got, "hypetunnel_tenant_bytes_total", tenant="acme", direction="in") == 500
    assert value(got, "hypetunnel_tenant_bytes_total", tenant="acme", direction="out") == 700
    assert value(got, "hypetunnel_tenant_packets_total", tenant="acme",
                 direction="dropped") == 1
    rt.usage = None  # a standby does not hold the counters: the active one exports them
    assert not [k for k in samples(rt.metrics.exposition().decode())
                if k[0].startswith("hypetunnel_tenant_")]


def test_each_tunnel_ports_bfd_session_is_a_series() -> None:
    rt = FakeRuntime(alarms=[])
    rt.sessions = [("hv1", "hv2", "vxlan", True), ("hv2", "hv1", "vxlan", False)]
    got = samples(rt.metrics.exposition().decode())
    assert value(got, "hypetunnel_tunnel_bfd_forwarding", hypervisor="hv1", remote="hv2",
                 encapsulation="vxlan") == 1
    assert value(got, "hypetunnel_tunnel_bfd_forwarding", hypervisor="hv2", remote="hv1",
                 encapsulation="vxlan") == 0
    rt.sessions = None  # a standby: the active one exports them
    assert not [k for k in samples(rt.metrics.exposition().decode())
                if k[0] == "hypetunnel_tunnel_bfd_forwarding"]


def test_each_tunnels_latest_probe_is_a_latency_series() -> None:
    rt = FakeRuntime(alarms=[])
    rt.latencies = [("hv1", "hv2", "vxlan", 0.0004)]
    got = samples(rt.metrics.exposition().decode())
    assert value(got, "hypetunnel_tunnel_latency_seconds", hypervisor="hv1", remote="hv2",
                 encapsulation="vxlan") == pytest.approx(0.0004)
    rt.latencies = None  # a standby: the active one probes
    assert not [k for k in samples(rt.metrics.exposition().decode())
                if k[0] == "hypetunnel_tunnel_latency_seconds"]


def test_an_empty_status_still_gives_every_controller_metric() -> None:
    got = samples(FakeRuntime({}, alarms=[]).metrics.exposition().decode())
    assert value(got, "hypetunnel_controller_active") == 0
    assert value(got, "hypetunnel_switches") == 0
    assert value(got, "hypetunnel_flow_mods_sent_total") == 0


def test_two_controllers_in_one_process_keep_their_own_figures() -> None:
    a, b = FakeRuntime(alarms=[]), FakeRuntime(alarms=[])
    a.metrics.instruments.openflow_errors.inc(3)
    a.metrics.instruments.reconcile_seconds.observe(0.02)
    got_a = samples(a.metrics.exposition().decode())
    got_b = samples(b.metrics.exposition().decode())
    assert value(got_a, "hypetunnel_openflow_errors_total") == 3
    assert value(got_b, "hypetunnel_openflow_errors_total") == 0
    assert value(got_a, "hypetunnel_reconcile_duration_seconds_count") == 1
    assert value(got_a, "hypetunnel_reconcile_duration_seconds_bucket", le="0.025") == 1
    assert value(got_b, "hypetunnel_reconcile_duration_seconds_count") == 0


def test_store_operations_and_moves_are_observed() -> None:
    rt = FakeRuntime(alarms=[])
    ins = rt.metrics.instruments
    with ins.store_operation("commit"):
        pass
    with pytest.raises(OSError), ins.store_operation("commit"):
        raise OSError("etcd gone")
    ins.move_finished({"kind": "hot", "result": "ok", "interruption_ms": 40.0})
    ins.move_finished({"kind": "hot", "result": "timeout", "interruption_ms": None})
    got = samples(rt.metrics.exposition().decode())
    assert value(got, "hypetunnel_store_operation_duration_seconds_count",
                 operation="load") == 0  # every operation's series exists from the start
    assert value(got, "hypetunnel_store_operation_duration_seconds_count",
                 operation="commit") == 2
    assert value(got, "hypetunnel_store_operation_errors_total", operation="commit") == 1
    assert value(got, "hypetunnel_moves_total", kind="hot", result="ok") == 1
    assert value(got, "hypetunnel_moves_total", kind="hot", result="timeout") == 1
    assert value(got, "hypetunnel_move_interruption_seconds_count", kind="hot") == 1
    assert value(got, "hypetunnel_move_interruption_seconds_bucket", kind="hot",
                 le="0.05") == 1
    assert value(got, "hypetunnel_move_interruption_seconds_bucket", kind="hot",
                 le="0.025") == 0


def test_get_metrics_needs_a_provider_token_and_counts_the_api_requests() -> None:
    rt = FakeRuntime(alarms=[])
    service = FabricService(MemoryStore())
    service.create_tenant(Tenant(name="acme"))
    app = create_app(service, rt)
    client = TestClient(app)
    assert client.get("/api/v1/metrics").status_code == 401
    tenant = mint(app, "reader", "tenant-reader", tenant="acme")
    assert client.get("/api/v1/metrics", headers=bearer(tenant)).status_code == 403
    operator = mint(app, "prom", "operator")
    r = client.get("/api/v1/metrics", headers=bearer(operator))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    client.get("/api/v1/tenants/nosuch/vms", headers=bearer(operator))  # 404, one more route
    got = samples(client.get("/api/v1/metrics", headers=bearer(operator)).text)
    assert value(got, "hypetunnel_api_requests_total", method="GET", route="/api/v1/metrics",
                 code="200") == 1  # the one before this scrape
    assert value(got, "hypetunnel_api_requests_total", method="GET", route="/api/v1/metrics",
                 code="403") == 1
    assert value(got, "hypetunnel_api_requests_total", method="GET",
                 route="/api/v1/tenants/{tenant}/vms", code="404") == 1
    assert value(got, "hypetunnel_api_request_duration_seconds_count", method="GET",
                 route="/api/v1/metrics") == 3


def test_without_a_controller_runtime_there_are_no_metrics() -> None:
    app = create_app(FabricService(MemoryStore()), None)
    r = TestClient(app).get("/api/v1/metrics", headers=bearer(mint(app)))
    assert r.status_code == 404


def test_every_metric_the_rules_and_the_dashboard_use_is_exported() -> None:
    rt = FakeRuntime(alarms=[])
    rt.sessions = [("hv1", "hv2", "vxlan", True)]
    rt.metrics.instruments.move_finished({"kind": "hot", "result": "ok", "interruption_ms": 9})
    app = create_app(FabricService(MemoryStore()), rt)
    client = TestClient(app, headers=bearer(mint(app)))
    client.get("/api/v1/metrics")  # the API's own series appear with its first request
    exported = {name for name, _ in samples(client.get("/api/v1/metrics").text)}
    used = used_metrics()
    assert len(used) >= 15, used
    assert sorted(used - exported) == []
