"""Prometheus metrics of one controller: a registry per controller instance (never the
process-wide default one, so several controllers in one process do not collide).

- instruments.py: what must be observed when it happens (latency histograms, error counters);
- collector.py: everything else, read lazily at scrape time from the runtime's own status, so
  nothing is counted twice and the event loop does no extra work between scrapes.
"""
