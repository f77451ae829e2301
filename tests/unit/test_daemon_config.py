"""`controller run --config FILE`: every flag has a key, flags win over the file, and a bad file
names its key, exits 2 and starts nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from hypetunnel.cli import controllercmd
from hypetunnel.cli.main import app
from hypetunnel.daemon import DaemonConfig
from hypetunnel.daemon_config import KEYS, ControllerSettings, flag_name

# Options of `controller run` that are not settings themselves.
NOT_KEYS = {"config": "the file itself", "verbose": "an alias of log_level: debug"}


def run_command() -> Any:
    return typer.main.get_command(controllercmd.app).commands["run"]  # type: ignore[attr-defined]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[DaemonConfig, tuple[str, str]]]:
    """What `controller run` would have started with: the DaemonConfig and the log set-up."""
    calls: list[tuple[DaemonConfig, tuple[str, str]]] = []
    logging_: list[tuple[str, str]] = []

    async def serve(config: DaemonConfig) -> None:
        calls.append((config, logging_[-1]))

    monkeypatch.setattr("hypetunnel.daemon.serve", serve)
    monkeypatch.setattr("hypetunnel.logs.configure",
                        lambda level, fmt: logging_.append((level, fmt)))
    return calls


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["controller", "run", *args], env={"COLUMNS": "200"})


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "controller.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_every_flag_has_a_key_named_after_it() -> None:
    params = [p for p in run_command().params if p.name not in NOT_KEYS]
    assert params, "no options found: the test would prove nothing"
    for p in params:
        assert p.name in KEYS, f"--{p.name} has no config key"
        # The key is the flag without --, - as _ (INTERFACES.md §1).
        assert flag_name(p.name) in p.opts, (p.name, p.opts)
    assert set(KEYS) == {p.name for p in params}  # and no key without its flag


def test_flag_defaults_are_the_models() -> None:
    defaults = ControllerSettings()
    for p in run_command().params:
        if p.name in NOT_KEYS:
            continue
        expected = getattr(defaults, p.name)
        if p.default is None:  # "not given": the model's empty value
            assert expected in (None, []), p.name
        else:
            assert p.default == expected, p.name


def test_a_full_file_sets_every_setting(tmp_path: Path,
                                        started: list[tuple[DaemonConfig, Any]]) -> None:
    doc = {"state_dir": str(tmp_path / "state"), "api": "0.0.0.0:9000",
           "openflow": ["pssl:0.0.0.0:6653"], "switch_target": ["ssl:10.0.0.1:6653"],
           "etcd": ["https://10.0.0.1:2379"], "node": "ctl1", "peer": "10.0.0.2:8651",
           "api_rate": 10, "api_burst": 20.5, "tls_dir": str(tmp_path / "pki"),
           "tls_name": "ctl1-cert", "peer_name": ["ctl1", "ctl2"], "log_level": "warning",
           "log_format": "text", "webhook": ["https://alerts.example.net/ht"],
           "flow_audit_interval": 2.5, "usage_interval": 30}
    assert set(doc) == set(KEYS)
    r = invoke("--config", str(write(tmp_path, doc)))
    assert r.exit_code == 0, r.output
    [(config, logging_)] = started
    assert config.state_dir == tmp_path / "state" and config.api == "0.0.0.0:9000"
    assert config.openflow == ["pssl:0.0.0.0:6653"]
    assert config.switch_targets == ["ssl:10.0.0.1:6653"]
    assert config.etcd == ["https://10.0.0.1:2379"]
    assert (config.node, config.peer) == ("ctl1", "10.0.0.2:8651")
    assert (config.api_rate, config.api_burst) == (10.0, 20.5)
    assert config.tls is not None and config.tls.directory == tmp_path / "pki"
    assert config.tls.name == "ctl1-cert"
    assert config.peer_names == ["ctl1", "ctl2"]
    assert config.webhooks == ["https://alerts.example.net/ht"]
    assert config.flow_audit_interval == 2.5
    assert config.usage_interval == 30
    assert logging_ == ("warning", "text")


def test_flags_given_override_the_file_and_defaults_do_not(
        tmp_path: Path, started: list[tuple[DaemonConfig, Any]]) -> None:
    path = write(tmp_path, {"state_dir": str(tmp_path / "file-state"), "api": "127.0.0.1:9001",
                            "openflow": ["tcp:127.0.0.1:7001"], "api_rate": 5,
                            "log_format": "text"})
    r = invoke("--config", str(path), "--api", "127.0.0.1:9002",
               "--openflow", "tcp:127.0.0.1:7002", "--openflow", "tcp:127.0.0.1:7003", "-v")
    assert r.exit_code == 0, r.output
    [(config, logging_)] = started
    assert config.api == "127.0.0.1:9002"  # the flag
    assert config.openflow == ["tcp:127.0.0.1:7002", "tcp:127.0.0.1:7003"]  # replaces the list
    assert config.state_dir == tmp_path / "file-state"  # the file, not the flag's default
    assert config.api_rate == 5.0
    assert config.api_burst == ControllerSettings().api_burst  # neither: the default
    assert logging_ == ("debug", "text")  # --verbose over the file's log_level


def test_without_a_file_the_defaults_hold_and_json_logs_are_the_default(
        started: list[tuple[DaemonConfig, Any]], tmp_path: Path) -> None:
    r = invoke("--state-dir", str(tmp_path / "s"))
    assert r.exit_code == 0, r.output
    [(config, logging_)] = started
    assert config.api == "127.0.0.1:8650" and config.openflow == ["tcp:0.0.0.0:6653"]
    assert config.tls is None and config.etcd is None
    assert logging_ == ("info", "json")


@pytest.mark.parametrize(("doc", "says"), [
    ({"api_rat": 5}, "key 'api_rat': unknown key (did you mean 'api_rate'?)"),
    ({"zzz": 1}, "key 'zzz': unknown key; the keys are: state_dir, api,"),
    ({"api_rate": "5"}, "key 'api_rate': Input should be a valid number, got '5'"),
    ({"api_rate": -1}, "key 'api_rate': Input should be greater than or equal to 0"),
    ({"openflow": "tcp:0.0.0.0:6653"}, "key 'openflow': Input should be a valid list"),
    ({"openflow": [6653]}, "key 'openflow'[0]: Input should be a valid string, got 6653"),
    ({"node": 7}, "key 'node': Input should be a valid string, got 7"),
    ({"log_format": "xml"}, "key 'log_format': Input should be 'text' or 'json'"),
    ({"openflow": ["ssl:0.0.0.0:6653"]},
     "key 'openflow': OpenFlow listen target 'ssl:0.0.0.0:6653': ssl: needs TLS"),
    ({"api": "localhost"}, "key 'api': 'localhost': expected HOST:PORT"),
    ({"tls_name": "x"}, "key 'tls_name': needs tls_dir"),
    ({"etcd": ["http://127.0.0.1:2379"]}, "key 'node': needed with etcd"),
    ("[1, 2]", "expected a mapping of keys (key: value), got list"),
    ("api: [\n", "line 2, column 1: not valid YAML"),
    ("a: b: c\n", "line 1, column 5: not valid YAML: mapping values are not allowed here"),
])
def test_a_bad_file_names_the_key_exits_2_and_starts_nothing(
        tmp_path: Path, started: list[Any], doc: Any, says: str) -> None:
    path = write(tmp_path, doc)
    r = invoke("--config", str(path), "--state-dir", str(tmp_path / "state"))
    assert r.exit_code == 2, r.output
    assert f"error: {path}: {says}" in r.output, r.output
    assert started == []
    assert not (tmp_path / "state").exists()


def test_a_missing_file_is_named(tmp_path: Path, started: list[Any]) -> None:
    r = invoke("--config", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 2
    assert f"error: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in r.output
    assert started == []


def test_an_empty_file_means_the_defaults(tmp_path: Path,
                                          started: list[tuple[DaemonConfig, Any]]) -> None:
    r = invoke("--config", str(write(tmp_path, "")))
    assert r.exit_code == 0, r.output
    assert started[0][0].api == ControllerSettings().api


def test_a_bad_flag_over_a_good_file_names_the_flag(tmp_path: Path, started: list[Any]) -> None:
    path = write(tmp_path, {"tls_dir": str(tmp_path)})
    r = invoke("--config", str(path), "--log-level", "loud")
    assert r.exit_code == 2
    assert "error: --log-level: Input should be 'debug', 'info' or 'warning'" in r.output
    # A problem between keys names where each value came from.
    r = invoke("--config", str(path), "--etcd", "http://127.0.0.1:2379", "--node", "a",
               "--peer", "b:1")
    assert r.exit_code == 2
    assert "error: --etcd: etcd endpoint 'http://127.0.0.1:2379': TLS is configured" in r.output
    assert f"error: {path}: key 'peer_name': needed with --etcd and tls_dir" in r.output
    assert started == []
