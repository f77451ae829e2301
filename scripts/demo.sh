#!/usr/bin/env bash
# The main job: set up, then build the example datacenter, prove it with real packets, tear down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hypetunnel demo "$@"
