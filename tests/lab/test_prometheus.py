"""A real Prometheus (Debian's) scrapes the HA lab's controllers over their HTTPS API with an
operator token, loads the shipped alerting rules, and has data for every metric the rules and
the Grafana dashboard use; `promtool check rules` passes on the rules file.

The lab's controllers serve their API on a unix socket in their namespaces; a byte forwarder
(lab/forward.py --tcp) in each one's namespace listens on its management address, so the API
is reached over TCP on the management overlay as in production, TLS end to end (verified
against the lab's CA by the controller's IP SAN). Prometheus runs in a service namespace of
its own on the management overlay, on a port chosen free there, with its own storage dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.lab import datacenter, hapair
from hypetunnel.lab.proc import wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import keep_failed_lab
from tests.prometheus_assets import RULES, used_metrics

pytestmark = pytest.mark.lab

API_PORT = 8650  # the production API port, on each controller's own management address
SERVICE = "prom"
JOB = "hypetunnel"
NOAUTH_JOB = "pm-noauth"  # the same target without a token: refused


@dataclass
class Prom:
    lab: Lab
    port: int
    targets: list[str]

    def get(self, path: str, **params: str) -> Any:
        """GET Prometheus's HTTP API (inside its namespace) and return its `data`."""
        argv = ["curl", "-sS", "--fail", "--max-time", "5", "--get"]
        for k, v in params.items():
            argv += ["--data-urlencode", f"{k}={v}"]
        out = self.lab.exec(SERVICE, [*argv, f"http://127.0.0.1:{self.port}{path}"],
                            timeout=10).stdout
        doc = json.loads(out)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=promql)["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None


def _free_port(lab: Lab) -> int:
    out = lab.exec(SERVICE, [sys.executable, "-c", "import socket; s = socket.socket(); "
                             "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"]).stdout
    return int(out)


def _listening(lab: Lab, where: str, port: int) -> bool:
    return lab.exec(where, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip() != ""


def _config(targets: list[str], token: Path, ca: Path) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_name": JOB, "scheme": "https", "metrics_path": "/api/v1/metrics",
        "authorization": {"credentials_file": str(token)},
        "tls_config": {"ca_file": str(ca)},
        "static_configs": [{"targets": targets}],
    }
    noauth = {**job, "job_name": NOAUTH_JOB, "static_configs": [{"targets": targets[:1]}]}
    del noauth["authorization"]
    return {"global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": [str(RULES)], "scrape_configs": [job, noauth]}


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture(scope="module")
def prom(request: pytest.FixtureRequest) -> Iterator[Prom]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    for prog in ("prometheus", "promtool"):
        if shutil.which(prog) is None:
            pytest.skip(f"{prog} is missing (scripts/setup.sh installs Debian's prometheus)")
    name = f"pm{os.getpid() % 10000}"
    datacenter.down(name)
    procs: list[subprocess.Popen[str]] = []
    work = Path(tempfile.mkdtemp(prefix="pm-prometheus-"))
    try:
        lab = datacenter.up(bundled_example(), name, timeout=90, ha=True)
        targets = []
        for node, ctl in hapair.controllers(lab).items():
            ip = lab.service(node).mgmt_ip
            procs.append(lab.spawn(node, [sys.executable, "-m", "hypetunnel.lab.forward",
                                          "--tcp", ip, str(API_PORT),
                                          str(ctl.directory / "api.sock")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_until(lambda n=node: _listening(lab, n, API_PORT), 10,
                       f"the API forwarder of {node}")
            targets.append(f"{ip}:{API_PORT}")
        with hapair.active_api(lab) as api:
            token = str(api.create_token("pm-prometheus", "operator")["token"])
        token_file = work / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        ca = hapair.lab_ca(lab)
        assert ca is not None
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(_config(targets, token_file, ca)))
        lab.add_service(SERVICE, "hv1")
        port = _free_port(lab)
        procs.append(lab.spawn(SERVICE, [
            "prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w")))  # noqa: SIM115
        wait_until(lambda: procs[-1].poll() is not None or _listening(lab, SERVICE, port), 30,
                   "Prometheus to listen")
        assert procs[-1].poll() is None, (work / "prometheus.log").read_text()[-2000:]
        yield Prom(lab, port, targets)
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)
        if not keep_failed_lab(request):
            datacenter.down(name)


def test_promtool_accepts_the_rules() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is missing (scripts/setup.sh installs Debian's prometheus)")
    cp = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "SUCCESS" in cp.stdout


def wait_for(checks: dict[str, Any], timeout: float, what: str) -> None:
    """Poll until every check (a callable answering True) holds: a scrape that failed once
    under load makes its target's series stale until the next one, a second later."""
    last: dict[str, bool] = {}

    def ok() -> bool:
        last.update({k: bool(c()) for k, c in checks.items()})
        return all(last.values())

    try:
        wait_until(ok, timeout, what, interval=0.5)
    except Exception:
        pytest.fail(f"{what}: still false: {sorted(k for k, v in last.items() if not v)}")


def test_prometheus_scrapes_both_controllers_with_the_token_only(prom: Prom) -> None:
    active = "and on (instance) (hypetunnel_controller_active == 1)"
    wait_for({
        "both controllers up": lambda: prom.scalar(f'sum(up{{job="{JOB}"}})') == 2,
        "no token: refused": lambda: prom.scalar(f'up{{job="{NOAUTH_JOB}"}}') == 0,
        # One active controller, which sees all three switches; both know the same term.
        "one active": lambda: prom.scalar("sum(hypetunnel_controller_active)") == 1,
        "3 switches on the active": lambda: prom.scalar(
            f"hypetunnel_switches_connected {active}") == 3,
        "one term, >= 1": lambda: prom.scalar(
            "count(count_values(\"t\", hypetunnel_controller_term))") == 1
        and (prom.scalar("min(hypetunnel_controller_term)") or 0) >= 1,
    }, 60, "Prometheus scraping both controllers")
    refused = [t for t in prom.get("/api/v1/targets")["activeTargets"]
               if t["labels"]["job"] == NOAUTH_JOB]
    assert [t["health"] for t in refused] == ["down"]
    assert "401" in refused[0]["lastError"], refused[0]


def test_every_metric_of_the_rules_and_the_dashboard_has_data(prom: Prom) -> None:
    # A hot move, so that the move counter and the interruption histogram hold a real value.
    with hapair.active_api(prom.lab) as api:
        rec = api.move_vm("acme", "web2", "hv3", False)
        datacenter.sync_vms(prom.lab, api)
        wait_until(lambda: any(m["seq"] == rec["seq"] and m["result"] != "running"
                               for m in api.moves("acme/web2")), 60, "the move to finish")
        [done] = [m for m in api.moves("acme/web2") if m["seq"] == rec["seq"]]
    assert done["result"] == "ok", done
    used = used_metrics()
    assert len(used) >= 15, used

    def missing() -> set[str]:
        found = prom.query('group by (__name__) ({__name__=~"hypetunnel_.*"})')
        return used - {r["metric"]["__name__"] for r in found}

    def positive(promql: str) -> bool:
        return (prom.scalar(promql) or 0) > 0

    active = "and on (instance) (hypetunnel_controller_active == 1)"
    wait_for({
        "every used metric": lambda: not missing(),
        "reconcile rounds": lambda: positive(
            "sum(hypetunnel_reconcile_duration_seconds_count)"),
        "flow-mods": lambda: positive("sum(hypetunnel_flow_mods_sent_total)"),
        "store probes": lambda: positive(
            'sum(hypetunnel_store_operation_duration_seconds_count{operation="revision"})'),
        "the hot move": lambda: prom.scalar(
            'sum(hypetunnel_moves_total{kind="hot",result="ok"})') == 1,
        "its interruption": lambda: prom.scalar(
            'sum(hypetunnel_move_interruption_seconds_count{kind="hot"})') == 1,
        "scrapes counted": lambda: positive(
            'sum(hypetunnel_api_requests_total{route="/api/v1/metrics",code="200"})'),
        "flows per switch": lambda: prom.scalar(
            f"count(hypetunnel_switch_flows {active})") == 3,
        "alarm series": lambda: positive("count(hypetunnel_alarms_open)"),
    }, 60, "data in Prometheus")

    def rules() -> list[dict[str, Any]]:
        return [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]

    # The shipped rules load and evaluate without error against these series.
    wait_until(lambda: all(not r.get("lastEvaluation", "0001").startswith("0001")
                           for r in rules()), 30, "the rules to be evaluated", interval=0.5)
    evaluated = rules()
    assert len(evaluated) >= 10
    assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []
    state = {r["name"]: r.get("state") for r in evaluated}
    assert state["HypeTunnelNoActiveController"] == "inactive"
    assert state["HypeTunnelSeveralActiveControllers"] == "inactive"
    assert state["HypeTunnelSwitchDisconnected"] == "inactive"
    # The figures, for the record (pytest -s): what a scrape costs and what was measured.
    figures = {
        "scrape_seconds_max": prom.scalar(f'max(scrape_duration_seconds{{job="{JOB}"}})'),
        "samples_per_scrape": prom.scalar(f'max(scrape_samples_scraped{{job="{JOB}"}})'),
        "reconcile_rounds": prom.scalar("sum(hypetunnel_reconcile_duration_seconds_count)"),
        "reconcile_mean_s": prom.scalar(
            "sum(hypetunnel_reconcile_duration_seconds_sum) / "
            "sum(hypetunnel_reconcile_duration_seconds_count)"),
        "move_interruption_s": prom.scalar(
            'sum(hypetunnel_move_interruption_seconds_sum{kind="hot"})'),
        "store_revision_mean_s": prom.scalar(
            'sum(hypetunnel_store_operation_duration_seconds_sum{operation="revision"}) / '
            'sum(hypetunnel_store_operation_duration_seconds_count{operation="revision"})'),
    }
    print(f"prometheus figures: {figures}")


def test_a_cut_switch_shows_in_prometheus_and_its_alert_goes_pending(prom: Prom) -> None:
    """hv3's OpenFlow channels removed (`ovs-vsctl del-controller br-int`, as
    tests/lab/test_alarms.py does): the active controller's per-switch gauge drops to 0, the
    alarm gauge counts it, and the shipped rule's expression matches (pending: its `for` is
    30 s); all back once the controllers are given back."""
    victim = "hv3"
    active = "and on (instance) (hypetunnel_controller_active == 1)"
    connected = f'hypetunnel_switch_openflow_connected{{hypervisor="{victim}"}} {active}'
    alarm = 'sum(hypetunnel_alarms_open{kind="switch_disconnected"})'

    def alert_state() -> str | None:
        for g in prom.get("/api/v1/rules")["groups"]:
            for r in g["rules"]:
                if r["name"] == "HypeTunnelSwitchDisconnected":
                    return str(r.get("state"))
        return None

    prom.lab.hypervisor(victim).ovs.vsctl("del-controller", "br-int")
    try:
        wait_for({
            "gauge 0": lambda: prom.scalar(connected) == 0,
            "alarm counted": lambda: prom.scalar(alarm) == 1,
            "alert pending": lambda: alert_state() in ("pending", "firing"),
        }, 30, "the cut switch in Prometheus")
    finally:
        prom.lab.set_controllers(victim, hapair.switch_targets(prom.lab))
    wait_for({
        "gauge 1": lambda: prom.scalar(connected) == 1,
        "alarm cleared": lambda: prom.scalar(alarm) == 0,
        "alert inactive": lambda: alert_state() == "inactive",
    }, 30, "the switch back in Prometheus")
