"""site.yml from bare hosts to a converged and verified fabric, against `hypetunnel lab up`.

    PYTHONPATH=src:. python benchmarks/site_deploy.py [--sizes 3 12] [--no-write] [--smoke]

For each size N (hypervisors), in one run:
  * a bare lab of N hosts (`lab up --bare`: namespaces, sshd, nothing configured), then
    `ansible-playbook hypetunnel.fabric.site` over SSH from the operator namespace: the first
    run (OVS, management overlay, 3-member etcd, the controller pair, enlistment, tenants),
    then `lab attach` + `lab sync` + `verify` (real pings: reach and isolation), the second
    run (idempotent: changed=0 asserted) and `--check` (changed=0 asserted);
  * `hypetunnel lab up --ha` of the same fabric (the same tenants, N hypervisors, an HA pair
    on etcd with TLS) and its `verify`.
The tenants are examples/deploy/tenants.yml, plus one acme VM on each hypervisor past hv3, so
every hypervisor carries traffic. The result is written to docs/benchmarks.md (section
site_deploy) via benchmarks/_report.py. --smoke: 3 hypervisors, nothing written.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from _report import load_note, write_section  # noqa: E402

from hypetunnel.lab import datacenter  # noqa: E402
from tests.lab.test_ansible_site import (  # noqa: E402
    TENANTS,
    VERIFIED,
    bare_lab,
    hypetunnel,
    site,
    verify,
)


@dataclass
class Sizes:
    n: int
    bare_up: float  # s
    first: float
    verify: float
    second: float
    check: float
    pairs: int  # probes verify sent (reach + isolation)
    changed_first: int  # tasks changed over all hosts
    lab_up: float
    lab_verify: float
    lab_pairs: int
    load_before: str


def tenants(n: int) -> dict[str, Any]:
    doc = yaml.safe_load(TENANTS.read_text())
    acme = next(t for t in doc["hypetunnel_tenants"] if t["name"] == "acme")
    for i in range(4, n + 1):
        acme["vms"].append({"name": f"vm{i}", "network": "front", "hypervisor": f"hv{i}",
                            "ip": f"10.1.0.{100 + i}", "mac": f"02:00:00:01:01:{i:02x}"})
    return dict(doc)


def hosts(n: int) -> list[str]:
    return [f"hv{i}" for i in range(1, n + 1)]


def timed(fn: Any, *args: Any, **kw: Any) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return time.monotonic() - t0, out


def changed(recap: dict[str, dict[str, int]]) -> int:
    return sum(r["changed"] for r in recap.values())


def bare_run(n: int, varfile: Path) -> tuple[float, float, float, float, float, int, int]:
    names = hosts(n)
    extra = ("-e", f"@{varfile}")
    budget = 300 + 60 * n  # s per playbook, on a loaded machine
    t0 = time.monotonic()
    with bare_lab("sb", names) as lab:
        bare_up = time.monotonic() - t0
        first, (_, recap) = timed(site, lab, *extra, hosts=names, timeout=budget)
        print(f"{n}: site.yml first run {first:.1f} s", flush=True)
        t1 = time.monotonic()
        for step in ("attach", "sync"):
            cp = hypetunnel("lab", step, "--name", lab.name, timeout=300)
            assert cp.returncode == 0, cp.stdout + cp.stderr
        pairs, ok = verify(lab)
        verified = time.monotonic() - t1
        assert ok == pairs
        second, (_, recap2) = timed(site, lab, *extra, hosts=names, timeout=budget)
        assert changed(recap2) == 0, recap2
        check, (_, recap3) = timed(site, lab, *extra, "--check", hosts=names, timeout=budget)
        assert changed(recap3) == 0, recap3
        print(f"{n}: verify {verified:.1f} s ({pairs} probes), second {second:.1f} s, "
              f"--check {check:.1f} s", flush=True)
    return bare_up, first, verified, second, check, pairs, changed(recap)


def lab_up_run(n: int, doc: dict[str, Any], tmp: Path) -> tuple[float, float, int]:
    intent = {"fabric": copy.deepcopy(doc.get("hypetunnel_fabric", {})),
              "hypervisors": [{"name": h} for h in hosts(n)],
              "tenants": doc["hypetunnel_tenants"]}
    file = tmp / f"fabric-{n}.yaml"
    file.write_text(yaml.safe_dump(intent, sort_keys=False))
    name = f"sbu{os.getpid() % 1000}"
    datacenter.down(name)
    try:
        up, cp = timed(hypetunnel, "lab", "up", str(file), "--ha", "--name", name,
                       timeout=600)
        assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
        t1 = time.monotonic()
        cp = hypetunnel("verify", "--name", name, timeout=300)
        verified = time.monotonic() - t1
        assert cp.returncode == 0, cp.stdout[-2000:]
        m = VERIFIED.search(cp.stdout)
        assert m and m[1] == m[2] and m[3] == m[4], cp.stdout[-2000:]
        pairs = int(m[2]) + int(m[4])
        print(f"{n}: lab up --ha {up:.1f} s, verify {verified:.1f} s", flush=True)
        return up, verified, pairs
    finally:
        datacenter.down(name)


def measure(n: int, tmp: Path) -> Sizes:
    doc = tenants(n)
    varfile = tmp / f"tenants-{n}.yml"
    varfile.write_text(yaml.safe_dump(doc, sort_keys=False))
    load = load_note()
    bare_up, first, verified, second, check, pairs, ch = bare_run(n, varfile)
    up, up_verify, up_pairs = lab_up_run(n, doc, tmp)
    return Sizes(n, bare_up, first, verified, second, check, pairs, ch, up, up_verify,
                 up_pairs, load)


def render(results: list[Sizes]) -> str:
    def row(label: str, fmt: Any) -> str:
        return f"| {label} | " + " | ".join(fmt(r) for r in results) + " |"

    def bare_total(r: Sizes) -> float:
        return r.bare_up + r.first + r.verify

    table = "\n".join([
        "| figure | " + " | ".join(f"{r.n} hypervisors" for r in results) + " |",
        "|---|" + "---:|" * len(results),
        row("`site.yml` first run (bare hosts -> converged)", lambda r: f"{r.first:.1f} s"),
        row("second run (changed=0)", lambda r: f"{r.second:.1f} s"),
        row("`--check` (changed=0)", lambda r: f"{r.check:.1f} s"),
        row("`hypetunnel lab up --ha`, same fabric", lambda r: f"{r.lab_up:.1f} s"),
        row("**first run / `lab up`**", lambda r: f"**{r.first / r.lab_up:.1f}x**"),
        row("bare hosts up + first run + attach/sync/verify", lambda r: f"{bare_total(r):.1f} s"),
        row("`lab up --ha` + verify", lambda r: f"{r.lab_up + r.lab_verify:.1f} s"),
        row("ratio of the two", lambda r: f"{bare_total(r) / (r.lab_up + r.lab_verify):.1f}x"),
    ])
    details = "\n".join(
        f"- {r.n} hypervisors: bare hosts up {r.bare_up:.1f} s; first run changed "
        f"{r.changed_first} tasks; attach + sync + verify {r.verify:.1f} s ({r.pairs} probes, "
        f"all as expected); `lab up --ha` then verify {r.lab_verify:.1f} s ({r.lab_pairs} "
        f"probes). Load before: {r.load_before}."
        for r in results)
    return f"""
How long the Ansible collection takes to deploy a fabric on hosts that have nothing
configured, against the lab building the same fabric itself, measured in the same run.

{table}

Conditions: the bare lab's hosts are network namespaces with an sshd each, reached over SSH
from the operator namespace (ansible-core 2.19, pipelining, ControlPersist, forks 16 from the
lab's ansible.cfg); the controller package is installed by pip into a virtualenv per
controller host from a local wheelhouse (no network). site.yml deploys OVS (userspace
datapath) on every host, the management overlay, a 3-member etcd with TLS, the controller
pair with TLS, enlists every hypervisor and applies the tenants
(examples/deploy/tenants.yml, plus one acme VM on each hypervisor past hv3). `lab up --ha`
builds the same fabric (same tenants, same hypervisors, an HA pair on etcd, TLS) with its
own Python code and no SSH. Both are followed by `verify` (real pings between every pair of
VMs: reach within a tenant network, isolation across). Wall times from one run each, so
they carry the noise of a shared machine: other helpers' labs ran at the same time.

{details}
Load at the end: {load_note()}.
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[3, 12])
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    ap.add_argument("--smoke", action="store_true", help="3 hypervisors, no write")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.no_write = [3], True
    if os.geteuid() != 0:
        raise SystemExit("site_deploy: the lab needs root")
    with tempfile.TemporaryDirectory(prefix="ht-sitebench-") as d:
        results = [measure(n, Path(d)) for n in args.sizes]
    body = render(results)
    print(body)
    if not args.no_write:
        write_section("site_deploy", "site.yml from bare hosts, against `lab up`", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
