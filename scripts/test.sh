#!/usr/bin/env bash
# Set up, then run every test tier: unit, real Open vSwitch, and namespace lab with real packets.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Every tier must run: a skipped real-OVS or lab test fails the run (tests/conftest.py).
export HYPETUNNEL_REQUIRE_ALL_TIERS=1
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
# The hypetunnel.fabric collection: ansible-test sanity on this Python, in the virtualenvs
# scripts/setup.sh prepared (no network here). pslint is skipped: it needs PowerShell, which no
# package registry reachable here has, and the collection has no PowerShell code.
repo=$(pwd)
pyv=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
(cd ansible/ansible_collections/hypetunnel/fabric &&
   PATH="$repo/.venv/bin:$PATH" ansible-test sanity --color no --python "$pyv" --skip-test pslint)
# Its roles and playbooks: ansible-lint with the production profile, the collection resolved
# from this checkout.
(cd ansible/ansible_collections/hypetunnel/fabric &&
   PATH="$repo/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$repo/ansible" \
     ansible-lint --profile production --offline)
exec .venv/bin/python -m pytest -p no:cacheprovider -ra "$@"
