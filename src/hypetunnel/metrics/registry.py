"""One controller's registry: its collector and its instruments, and the text a scrape gets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from hypetunnel.metrics.collector import MetricsSource, StatusCollector
from hypetunnel.metrics.instruments import Instruments

# The classic text format, which every Prometheus 2.x reads (generate_latest writes it; the
# library's newest content type names a format version older servers do not know).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ControllerMetrics:
    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.instruments = Instruments(self.registry)
        self.registry.register(StatusCollector(source))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, collected now."""
        return generate_latest(self.registry)
