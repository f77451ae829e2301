"""Every benchmark runs on main: each one's --smoke mode (smallest size, a few seconds of
measuring) as a subprocess exits 0, prints its figures, and leaves docs/benchmarks.md alone.

compiler_scale is owned and smoke-tested elsewhere. The cost is the labs the benchmarks build
(one each; about 1.5 min for all on an idle 2-core machine). site_deploy's smoke (three site.yml
runs on 3 bare hosts and a `lab up --ha`: 4-9 min here) is collected only with
HYPETUNNEL_SITE_DEPLOY_SMOKE=1: the suite's budget cannot carry it, and tests/lab/
test_ansible_site.py runs the same three site.yml runs on 3 bare hosts in every suite.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
NUM = r"-?[\d,]+(?:\.\d+)?"

# benchmark -> patterns its output must contain: figures, not just headings.
FIGURES: dict[str, list[str]] = {
    "flow_rate": [rf"\| ours, ONF bundle \(atomic\) \| {NUM} \| {NUM} \| {NUM} \|",
                  rf"\| ovs-ofctl add-flows \| {NUM} \| {NUM} \|"],
    "convergence": [rf"round 0: \S+ on hv\d: flows {NUM} ms on \d+ switches, ping {NUM} ms",
                    rf"\*\*add-port -> flows installed on every affected switch\*\* \| "
                    rf"\*\*{NUM} / {NUM} / {NUM}\*\*"],
    "failover": [rf"kill {k}: takeover {NUM} ms, first flow {NUM} ms, lost \d+" for k in (1, 2)]
                + [r"packets lost on the established path: \d+ of 600"],
    "mobility": [rf"move 1: lost {NUM} ms, controller {NUM} ms \(fabric ready {NUM} ms",
                 r"moves that did not end ok: 0/1",
                 rf"drain of 1 VMs:\s+{NUM} s, moves not ok: 0/1"],
    "site_deploy": [rf"\| `site\.yml` first run \(bare hosts -> converged\) \| {NUM} s \|",
                    rf"\| second run \(changed=0\) \| {NUM} s \|",
                    rf"\| `--check` \(changed=0\) \| {NUM} s \|",
                    rf"\| \*\*first run / `lab up`\*\* \| \*\*{NUM}x\*\* \|"],
    "throughput": [rf"\| {path} \| \d+ \| \d+ \| {NUM} \| {NUM} \|"
                   for path in ("underlay", "vxlan", "gre", "geneve")],
}
TIMEOUT = 300.0  # s per benchmark, on a loaded machine
# site_deploy's smoke deploys 3 bare hosts with site.yml three times (first, second, --check)
# and builds the same fabric with `lab up --ha`: 8.8 min on the shared 2-core machine at load
# average 10 (2026-12-02); its three site.yml runs alone took 6 min at load 7.
TIMEOUTS = {"site_deploy": 900.0}


def run_smoke(name: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"],
                            cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=TIMEOUTS.get(name, TIMEOUT))
    except subprocess.TimeoutExpired:
        # SIGINT runs the benchmark's own `finally`, which takes its lab down.
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"{name} --smoke did not finish in {TIMEOUTS.get(name, TIMEOUT):.0f} s:\n"
                    f"{out[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


SMOKED = sorted(n for n in FIGURES
                if n != "site_deploy" or os.environ.get("HYPETUNNEL_SITE_DEPLOY_SMOKE") == "1")


@pytest.mark.parametrize("name", SMOKED)
def test_benchmark_smoke_runs_and_reports_its_figures(name: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the benchmarks need root (namespaces, Open vSwitch)")
    doc_before = hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else None
    cp = run_smoke(name)
    assert cp.returncode == 0, f"{name} --smoke exited {cp.returncode}:\n{cp.stdout[-3000:]}"
    missing = [p for p in FIGURES[name] if not re.search(p, cp.stdout)]
    assert not missing, f"{name} --smoke printed no figure for {missing}:\n{cp.stdout[-3000:]}"
    doc_after = hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else None
    assert doc_after == doc_before, f"{name} --smoke rewrote {DOC}"
