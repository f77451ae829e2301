"""Suite-wide rules: a hanging test fails fast, and a CI run that skipped a root tier fails.

Timeouts are per tier: a unit test that takes more than seconds is hung, not slow. A lab test
builds namespaces and Open vSwitch instances and may take minutes. A test may still ask for more
with its own @pytest.mark.timeout.

`HYPETUNNEL_REQUIRE_ALL_TIERS=1` (set by scripts/test.sh, which CI runs) turns any skipped
integration or lab test into a failed run: a green CI that silently skipped the real-packet tiers
(not root, a missing program) would prove nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TIER_TIMEOUT_S = {"unit": 30, "integration": 300, "lab": 600}
ROOT_TIERS = ("integration", "lab")
_skipped_root_tier: list[str] = []


def _tier(item: pytest.Item) -> str | None:
    try:
        return Path(str(item.fspath)).resolve().relative_to(TESTS.resolve()).parts[0]
    except ValueError:
        return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        timeout = TIER_TIMEOUT_S.get(_tier(item) or "")
        if timeout is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeout))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and report.nodeid.startswith(tuple(f"tests/{t}/" for t in ROOT_TIERS)):
        _skipped_root_tier.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("HYPETUNNEL_REQUIRE_ALL_TIERS") == "1" and _skipped_root_tier:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("HYPETUNNEL_REQUIRE_ALL_TIERS") == "1" and _skipped_root_tier:
        terminalreporter.section("root tiers skipped", red=True)
        terminalreporter.write_line(
            f"{len(_skipped_root_tier)} integration/lab tests were skipped; this run must run "
            "them all (as root, after scripts/setup.sh):")
        for nodeid in _skipped_root_tier[:20]:
            terminalreporter.write_line(f"  {nodeid}")
