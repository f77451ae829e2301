"""What cannot be read from the status at scrape time: durations and events, observed when
they happen. Each observation is a few arithmetic operations under a lock (prometheus-client)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

# Seconds. A reconcile round is milliseconds when only a slice changed, seconds at a takeover.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A hot move's network interruption: tens of milliseconds is the goal, seconds a problem.
INTERRUPTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Instruments:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconcile_seconds = Histogram(
            "hypetunnel_reconcile_duration_seconds",
            "Time of one reconcile round of a switch (tunnel ports, then the flow difference)",
            registry=registry, buckets=RECONCILE_BUCKETS)
        self.store_seconds = Histogram(
            "hypetunnel_store_operation_duration_seconds",
            "Time of one store operation (load, commit, revision probe)", ["operation"],
            registry=registry, buckets=STORE_BUCKETS)
        self.store_errors = Counter(
            "hypetunnel_store_operation_errors", "Store operations that failed", ["operation"],
            registry=registry)
        self.openflow_errors = Counter(
            "hypetunnel_openflow_errors", "OpenFlow error messages received from switches",
            registry=registry)
        self.moves = Counter(
            "hypetunnel_moves", "VM moves finished, by kind (hot, cold, ...) and result",
            ["kind", "result"], registry=registry)
        self.move_interruption_seconds = Histogram(
            "hypetunnel_move_interruption_seconds",
            "Measured network interruption of a finished VM move", ["kind"],
            registry=registry, buckets=INTERRUPTION_BUCKETS)
        self.api_requests = Counter(
            "hypetunnel_api_requests", "REST API requests answered, by route template and code",
            ["method", "route", "code"], registry=registry)
        self.api_seconds = Histogram(
            "hypetunnel_api_request_duration_seconds", "REST API request latency",
            ["method", "route"], registry=registry, buckets=API_BUCKETS)
        for op in ("load", "commit", "revision"):  # every series exists from the start
            self.store_seconds.labels(op)
            self.store_errors.labels(op)

    @contextmanager
    def store_operation(self, operation: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        except Exception:
            self.store_errors.labels(operation).inc()
            raise
        finally:
            self.store_seconds.labels(operation).observe(time.perf_counter() - t0)

    def move_finished(self, rec: dict[str, Any]) -> None:
        """A move record at its end (controller/mobility.py): result and interruption."""
        kind = str(rec.get("kind") or "unknown")
        self.moves.labels(kind, str(rec.get("result") or "unknown")).inc()
        interruption = rec.get("interruption_ms")
        if isinstance(interruption, (int, float)):
            self.move_interruption_seconds.labels(kind).observe(interruption / 1000)
