#!/usr/bin/env bash
# Run the whole suite N times on a fresh clone of HEAD; print each run's time and result, then
# every test that failed at least once with its failure count. A test that fails once in N runs
# is a bug to find (in the product or the test), not a bound to widen.
#   bash scripts/soak-tests.sh 5 [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: soak-tests.sh N [pytest args...]}
shift
work=$(mktemp -d /tmp/ht-soak.XXXXXX)
git clone -q . "$work/clone"
echo "soak: $runs runs of $(git rev-parse --short HEAD) in $work/clone"
for ((i = 1; i <= runs; i++)); do
  start=$(date +%s)
  (cd "$work/clone" && bash scripts/test.sh --junitxml="$work/run-$i.xml" -q "$@" >"$work/run-$i.log" 2>&1)
  rc=$?
  echo "run $i: exit $rc in $(( $(date +%s) - start )) s  ($(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$work/run-$i.log" | tail -n 1))"
done
python3 - "$work" "$runs" <<'PY'
import collections, pathlib, sys
import xml.etree.ElementTree as ET
work, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
failures: collections.Counter[str] = collections.Counter()
for i in range(1, runs + 1):
    xml = work / f"run-{i}.xml"
    if not xml.exists():
        failures["<run produced no report: see run-%d.log>" % i] += 1
        continue
    for case in ET.parse(xml).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failures[f"{case.get('classname')}::{case.get('name')}"] += 1
if not failures:
    print(f"soak: every test passed in all {runs} runs")
for test, n in failures.most_common():
    print(f"soak: {n}/{runs} failed  {test}")
PY
echo "logs: $work"
