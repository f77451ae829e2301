"""The scrape-time collector: reads the runtime's status (the same dict GET /status answers)
and its open alarms, and turns them into metric families. Nothing is stored between scrapes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hypetunnel.fcaps.alarm import KINDS


class MetricsSource(Protocol):
    def status(self) -> dict[str, Any]:
        """As RuntimeView.status (api/app.py)."""
        ...

    def open_alarm_kinds(self) -> Iterable[tuple[str, str]] | None:
        """(kind, severity) of every open alarm; None where the book is not held (a standby:
        the active controller exports them)."""
        ...

    def tunnel_sessions(self) -> Iterable[tuple[str, str, str, bool]] | None:
        """(hypervisor, remote hypervisor, encapsulation, forwarding) of every tunnel port's
        BFD session, as the switches report it; None where the sessions are not held."""
        ...

    def tunnel_latencies(self) -> Iterable[tuple[str, str, str, float]] | None:
        """(hypervisor, remote hypervisor, encapsulation, seconds) of every tunnel's latest
        probe round trip (fcaps/latency.py); None where the probes are not run."""
        ...

    def tenant_usage(self) -> Iterable[dict[str, Any]] | None:
        """Usage rows per tenant since accounting began (accounting/book.py report); None
        where the counters are not held (a standby)."""
        ...


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class StatusCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []  # unknown until scraped: the registry does not call collect() at register

    def collect(self) -> Iterator[Metric]:
        status = self.source.status()
        yield from self._controller(status.get("controller") or {}, status)
        yield from self._switches(status.get("switches") or [])
        yield from self._accounting(status.get("accounting") or {})
        alarms = self.source.open_alarm_kinds()
        if alarms is not None:
            yield self._alarms(alarms)
        sessions = self.source.tunnel_sessions()
        if sessions is not None:
            yield self._bfd(sessions)
        latencies = self.source.tunnel_latencies()
        if latencies is not None:
            yield self._latency(latencies)
        usage = self.source.tenant_usage()
        if usage is not None:
            yield from self._usage(list(usage))

    def _controller(self, ctl: dict[str, Any], status: dict[str, Any]) -> Iterator[Metric]:
        info = GaugeMetricFamily("hypetunnel_controller_info", "This controller's identity",
                                 labels=["node", "version", "store_schema"])
        info.add_metric([str(ctl.get("node") or ""), str(ctl.get("version") or ""),
                         str(ctl.get("store_schema") or "")], 1)
        yield info
        yield _gauge("hypetunnel_controller_active",
                     "1 if this controller is the active one (programs the switches), else 0",
                     1 if ctl.get("role") == "active" else 0)
        yield _gauge("hypetunnel_controller_term", "The election term this controller knows",
                     float(ctl.get("term") or 0))
        yield _gauge("hypetunnel_controller_ready_startup",
                     "1 once the startup gate opened (every switch's bindings known)",
                     1 if ctl.get("startup_done") else 0)
        yield _gauge("hypetunnel_applied_revision", "Store revision of the intent applied",
                     float(ctl.get("applied_revision") or 0))
        yield _gauge("hypetunnel_event_loop_lag_seconds",
                     "Recent worst lateness of the controller's event loop",
                     float(ctl.get("loop_lag_ms") or 0) / 1000)
        yield _gauge("hypetunnel_converged",
                     "1 if every switch holds its desired state and every VM is bound",
                     1 if status.get("converged") else 0)
        vms = status.get("vms") or {}
        g = GaugeMetricFamily("hypetunnel_vms", "VMs of the intent, and those bound to a port",
                              labels=["state"])
        g.add_metric(["total"], float(vms.get("total") or 0))
        g.add_metric(["bound"], float(vms.get("bound") or 0))
        yield g
        yield CounterMetricFamily(
            "hypetunnel_flow_mods_sent", "Flow adds and deletes sent to the switches (sessions "
            "of the switches this controller serves now)",
            value=float(ctl.get("flow_mods_sent") or 0))

    def _switches(self, switches: list[dict[str, Any]]) -> Iterator[Metric]:
        enlisted = [s for s in switches if s.get("ovsdb")]
        yield _gauge("hypetunnel_switches", "Switches of the intent (with an OVSDB endpoint)",
                     len(enlisted))
        yield _gauge("hypetunnel_switches_connected",
                     "Switches whose OpenFlow channel is up",
                     sum(1 for s in enlisted if s.get("openflow_connected")))
        per = {
            "connected": GaugeMetricFamily("hypetunnel_switch_openflow_connected",
                                           "1 if the switch's OpenFlow channel is up",
                                           labels=["hypervisor"]),
            "ovsdb": GaugeMetricFamily("hypetunnel_switch_ovsdb_connected",
                                       "1 if the switch's OVSDB session is up",
                                       labels=["hypervisor"]),
            "flows": GaugeMetricFamily("hypetunnel_switch_flows",
                                       "Flows the switch should hold", labels=["hypervisor"]),
            "installed": GaugeMetricFamily("hypetunnel_switch_flows_installed",
                                           "Flows this controller installed on the switch",
                                           labels=["hypervisor"]),
            "tunnels": GaugeMetricFamily("hypetunnel_switch_tunnels",
                                         "Tunnel ports the switch should have",
                                         labels=["hypervisor"]),
            "converged": GaugeMetricFamily("hypetunnel_switch_converged",
                                           "1 if the switch holds exactly its desired state",
                                           labels=["hypervisor"]),
        }
        for s in enlisted:
            hv = [str(s.get("hypervisor"))]
            per["connected"].add_metric(hv, 1 if s.get("openflow_connected") else 0)
            per["ovsdb"].add_metric(hv, 1 if s.get("ovsdb_connected") else 0)
            per["flows"].add_metric(hv, float(s.get("flows") or 0))
            per["installed"].add_metric(hv, float(s.get("flows_installed") or 0))
            per["tunnels"].add_metric(hv, float(s.get("tunnels") or 0))
            per["converged"].add_metric(hv, 1 if s.get("converged") else 0)
        yield from per.values()

    @staticmethod
    def _accounting(acct: dict[str, Any]) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "hypetunnel_accounting_polls", "Completed reads of every switch's flow counters "
            "into the usage book (the active controller's; a standby's stays put)",
            value=float(acct.get("polls") or 0))
        yield _gauge("hypetunnel_accounting_poll_seconds",
                     "How long the last accounting poll took (every switch's flow table read "
                     "and booked)", float(acct.get("last_poll_ms") or 0) / 1000)

    @staticmethod
    def _usage(rows: list[dict[str, Any]]) -> Iterator[Metric]:
        for unit in ("bytes", "packets"):
            c = CounterMetricFamily(
                f"hypetunnel_tenant_{unit}", f"A tenant's traffic in {unit}: in (delivered to "
                "its VMs), out (sent by them), dropped (at the source: to no known address)",
                labels=["tenant", "direction"])
            for r in rows:
                for direction, key in (("in", f"{unit}_in"), ("out", f"{unit}_out"),
                                       ("dropped", f"dropped_{unit}")):
                    c.add_metric([str(r.get("tenant", "")), direction], float(r.get(key, 0)))
            yield c

    @staticmethod
    def _bfd(sessions: Iterable[tuple[str, str, str, bool]]) -> Metric:
        g = GaugeMetricFamily("hypetunnel_tunnel_bfd_forwarding",
                              "1 if the tunnel port's BFD session forwards (the path to the "
                              "remote hypervisor works), 0 if not", labels=[
                                  "hypervisor", "remote", "encapsulation"])
        for hv, remote, encapsulation, forwarding in sorted(sessions):
            g.add_metric([hv, remote, encapsulation], 1 if forwarding else 0)
        return g

    @staticmethod
    def _latency(latencies: Iterable[tuple[str, str, str, float]]) -> Metric:
        g = GaugeMetricFamily("hypetunnel_tunnel_latency_seconds",
                              "Round trip of the latest probe through the tunnel and back (both "
                              "switches' data paths included, the control channel not); no "
                              "series while the tunnel has no fresh answer",
                              labels=["hypervisor", "remote", "encapsulation"])
        for hv, remote, encapsulation, seconds in sorted(latencies):
            g.add_metric([hv, remote, encapsulation], seconds)
        return g

    @staticmethod
    def _alarms(alarms: Iterable[tuple[str, str]]) -> Metric:
        counts = Counter(alarms)
        # Every known kind has its series (0 when none is open): an alert on it never sees
        # "no data", and a dashboard shows a flat line, not a gap.
        for known in KINDS.values():
            counts.setdefault((known.name, known.severity), 0)
        g = GaugeMetricFamily("hypetunnel_alarms_open", "Open alarms, by kind and severity",
                              labels=["kind", "severity"])
        for (kind, severity), n in sorted(counts.items()):
            g.add_metric([kind, severity], n)
        return g
