#!/usr/bin/env bash
# Set up, then run every test tier: unit, real Open vSwitch, and namespace lab with real packets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Every tier must run: a skipped real-OVS or lab test fails the run (tests/conftest.py).
export HYPETUNNEL_REQUIRE_ALL_TIERS=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
