"""The shipped Prometheus rules and Grafana dashboard (deploy/), and the metric names they use:
the lab test checks each exists in a real Prometheus, the unit test that the code exports it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "hypetunnel-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "hypetunnel-dashboard.json"
_NAME = re.compile(r"\b(hypetunnel_[a-z0-9_]+)\b")


def rule_expressions() -> list[str]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [str(t["expr"]) for p in doc["panels"] for t in p.get("targets", [])]


def metric_names(expressions: list[str]) -> set[str]:
    """Every hypetunnel_ series name an expression reads (as stored: _total, _bucket...)."""
    return {m for e in expressions for m in _NAME.findall(e)}


def used_metrics() -> set[str]:
    return metric_names(rule_expressions() + dashboard_expressions())
