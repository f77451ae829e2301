"""Intent loading: large and hostile YAML files, loaded and validated as `hypetunnel apply` does.

Cases (each run in a fresh Python process, so peak RSS is the case's own):
1. valid: N tenants, each with one network and two VMs (one with a written IP) on 4
   hypervisors; loaded and validated (load_intent_file, the path `apply` and `validate` take).
   Budget: 10,000 tenants in under 2 s wall time, in every run.
2. bad key: 80,000 tenants of one network each (~5 MB) and one unknown key in the last tenant;
   must be refused naming that field and its line.
3. comments: a 5 MB file of comment lines and an empty tenant list.
4. alias bomb: "billion laughs", 9 levels of 9 aliases; must be refused.

Run: .venv/bin/python benchmarks/intent_load.py [--runs 3] [--no-write] [--smoke]
(--smoke: smallest sizes, one run, nothing written: a check that the script works.)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

BUDGET_S = 2.0
HYPERVISORS = 4


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    size: int  # tenants, comment lines or alias levels
    refused: bool  # the file must be refused (and the error must say `expect`)
    expect: str = ""


def full_cases() -> list[Case]:
    return [
        Case("valid", "10,000 tenants (1 network, 2 VMs each), valid", 10_000, False),
        Case("bad_key", "80,000 tenants, one unknown key at the end", 80_000, True,
             "tenants[79999].colour: unknown key"),
        Case("comments", "5 MB of comments", 80_000, False),
        Case("bomb", "alias bomb, 9 levels x 9 aliases", 9, True, "aliases expand"),
    ]


def smoke_cases() -> list[Case]:
    return [
        Case("valid", "100 tenants, valid", 100, False),
        Case("bad_key", "1,000 tenants, one unknown key at the end", 1_000, True,
             "tenants[999].colour: unknown key"),
        Case("comments", "1,000 comment lines", 1_000, False),
        Case("bomb", "alias bomb, 9 levels x 9 aliases", 9, True, "aliases expand"),
    ]


# -- the files ----------------------------------------------------------------------------------
def valid_text(tenants: int) -> str:
    out = ["fabric:\n  encapsulation: vxlan\nhypervisors:\n"]
    out += [f"  - name: hv{h}\n" for h in range(1, HYPERVISORS + 1)]
    out.append("tenants:\n")
    for i in range(tenants):
        hv = i % HYPERVISORS + 1
        out.append(f"  - name: t{i}\n    networks:\n      - name: front\n"
                   f"        cidr: 10.1.0.0/24\n    vms:\n"
                   f"      - name: web1\n        network: front\n        hypervisor: hv{hv}\n"
                   f"        ip: 10.1.0.10\n"
                   f"      - name: web2\n        network: front\n")
    return "".join(out)


def bad_key_text(tenants: int) -> str:
    out = ["hypervisors:\n  - name: hv1\ntenants:\n"]
    out += [f"  - name: t{i}\n    networks:\n      - name: net\n        cidr: 10.0.0.0/24\n"
            for i in range(tenants)]
    out.append("    colour: red\n")
    return "".join(out)


def comments_text(lines: int) -> str:
    return "# a comment line of about the length a person writes to explain a choice.\n" * lines \
        + "tenants: []\n"


def bomb_text(levels: int) -> str:
    lines = ['a0: &a0 "lol"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\ntenants: *a{levels}\n"


TEXTS = {"valid": valid_text, "bad_key": bad_key_text, "comments": comments_text,
         "bomb": bomb_text}


# -- one measurement (child process) -----------------------------------------------------------
def measure_child(path: Path) -> dict[str, object]:
    from hypetunnel.errors import IntentInvalid
    from hypetunnel.model.loader import load_intent_file

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall0, cpu0 = time.perf_counter(), time.process_time()
    error = ""
    try:
        load_intent_file(path)
    except IntentInvalid as e:
        error = str(e.errors[0]) if e.errors else str(e)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss / 1024,
            "rss_growth_mb": (rss - rss0) / 1024, "error": error}


def run_case(case: Case, path: Path) -> dict[str, object]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True,
                          text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{case.name}: child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    error = str(result["error"])
    if case.refused and case.expect not in error:
        raise SystemExit(f"{case.name}: expected a refusal saying {case.expect!r}, got {error!r}")
    if not case.refused and error:
        raise SystemExit(f"{case.name}: expected to load, got {error!r}")
    return result


def run_all(cases: list[Case], runs: int) -> dict[str, dict[str, object]]:
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="ht-intent-load-") as tmp:
        for case in cases:
            path = Path(tmp) / f"{case.name}.yaml"
            path.write_text(TEXTS[case.name](case.size))
            got = [run_case(case, path) for _ in range(runs)]
            results[case.name] = {"case": case, "size_mb": path.stat().st_size / 1e6,
                                  "runs": got}
            walls = [float(str(r["wall_s"])) for r in got]
            print(f"{case.label}: {path.stat().st_size / 1e6:.1f} MB, wall "
                  f"{', '.join(f'{w:.2f}' for w in walls)} s; {got[-1]['error']}", flush=True)
    return results


# -- report ------------------------------------------------------------------------------------
def _figures(runs: list[dict[str, object]], key: str) -> list[float]:
    return [float(str(r[key])) for r in runs]


def write(results: dict[str, dict[str, object]], runs: int, load: tuple[str, str]) -> bool:
    from _report import write_section

    rows = ["| case | file | wall s (median / max) | CPU s (median / max) | peak RSS MB | "
            "outcome |", "|---|---:|---:|---:|---:|---|"]
    for r in results.values():
        case: Case = r["case"]  # type: ignore[assignment]
        got: list[dict[str, object]] = r["runs"]  # type: ignore[assignment]
        wall, cpu, rss = (_figures(got, k) for k in ("wall_s", "cpu_s", "peak_rss_mb"))
        outcome = f"refused: `{got[-1]['error']}`" if case.refused else "loaded and validated"
        rows.append(f"| {case.label} | {float(str(r['size_mb'])):.1f} MB | "
                    f"{statistics.median(wall):.2f} / {max(wall):.2f} | "
                    f"{statistics.median(cpu):.2f} / {max(cpu):.2f} | {max(rss):.0f} | "
                    f"{outcome} |")
    valid = results["valid"]["runs"]
    valid_walls = _figures(valid, "wall_s")  # type: ignore[arg-type]
    valid_cpu = _figures(valid, "cpu_s")  # type: ignore[arg-type]
    ok = max(valid_walls) < BUDGET_S
    verdict = (f"**{'PASS' if ok else 'FAIL'}**: 10,000 tenants loaded and validated in "
               f"{max(valid_walls):.2f} s wall at worst over {runs} runs (budget {BUDGET_S:.0f} s "
               f"wall, every run; CPU at worst {max(valid_cpu):.2f} s, the rest is waiting for "
               "a core on a shared machine: see the load below).")
    body = "\n".join([
        "`load_intent_file` as `hypetunnel apply`/`validate` call it: YAML parse (libyaml, "
        "once), alias-expansion check, pydantic, semantic rules. Each run in a fresh process.",
        "",
        verdict,
        "",
        *rows,
        "",
        "Before this change (issue #7, same kind of files): the 80,000-tenant file took 117 s "
        "and 680 MB to be refused, the 5 MB comment file 8.8 s, and the alias bomb never "
        "returned (past 3.8 GB). The old loader ran the pure-Python YAML parser twice and "
        "built a line table of every field; measured on this machine (commit 4482125): 14.8 s "
        "CPU for 10,000 tenants of one network and one VM, 4.5 s CPU for 5.1 MB of comments.",
        "",
        f"Machine load before / after: {load[0]} / {load[1]}.",
    ])
    write_section("intent_load", "Intent loading (large and hostile files)", body)
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", help=argparse.SUPPRESS)  # measure one file, print JSON
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    ap.add_argument("--smoke", action="store_true", help="smallest sizes, one run, no write")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_child(Path(args.child))))
        return
    if args.smoke:
        run_all(smoke_cases(), 1)
        return
    from _report import load_note

    load0 = load_note()
    results = run_all(full_cases(), args.runs)
    load1 = load_note()
    if not args.no_write:
        ok = write(results, args.runs, (load0, load1))
        print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
