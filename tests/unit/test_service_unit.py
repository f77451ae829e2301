"""The systemd unit: shipped in the package, rendered for a host's paths, and accepted by
`systemd-analyze verify` (which also checks that ExecStart's program exists). A broken copy is
refused, so the check can fail."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.main import app
from hypetunnel.service_unit import UNIT_NAME, render, shipped

VENV = Path(sys.prefix)  # the test's real virtualenv: its bin/hypetunnel exists
REPO = Path(__file__).resolve().parents[2]


def verify(text: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on `text` as <directory>/hypetunnel-controller.service. It works
    without systemd as PID 1; the unit's dependencies (network-online.target, ...) come from
    the system's unit path."""
    assert shutil.which("systemd-analyze"), "systemd-analyze (package systemd) is needed"
    unit = directory / UNIT_NAME
    unit.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=60)


def accepted(result: subprocess.CompletedProcess[str]) -> bool:
    # A bad value is only a warning to systemd (exit 0): any output at all is a failure.
    return result.returncode == 0 and not (result.stdout + result.stderr).strip()


def unit_for_this_venv(tmp_path: Path) -> str:
    return CliRunner().invoke(app, [
        "controller", "unit", "--venv", str(VENV), "--config", str(tmp_path / "c.yaml"),
        "--state-dir", str(tmp_path / "state"), "--user", "root"]).output


def test_the_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = unit_for_this_venv(tmp_path)
    result = verify(text, tmp_path)
    assert accepted(result), result.stdout + result.stderr
    lines = text.splitlines()
    [exec_start] = [ln for ln in lines if ln.startswith("ExecStart=")]
    assert shlex.split(exec_start.removeprefix("ExecStart=")) == [
        str(VENV / "bin" / "hypetunnel"), "controller", "run", "--config",
        str(tmp_path / "c.yaml")]
    for line in ("Restart=on-failure", "StandardOutput=journal", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", f"ReadWritePaths={tmp_path / 'state'}",
                 "PrivateTmp=yes", "User=root", "CapabilityBoundingSet="):
        assert line in lines, line


@pytest.mark.parametrize(("what", "breakage"), [
    ("a misspelt key", ("Restart=on-failure", "Restrat=on-failure")),
    ("a bad value", ("RestartSec=2s", "RestartSec=soon")),
    ("a missing program", ("/bin/hypetunnel ", "/bin/no-such-hypetunnel ")),
])
def test_a_broken_copy_fails_verify(tmp_path: Path, what: str,
                                    breakage: tuple[str, str]) -> None:
    text = unit_for_this_venv(tmp_path)
    assert breakage[0] in text
    result = verify(text.replace(*breakage), tmp_path)
    assert not accepted(result), what


def test_the_production_unit_is_the_shipped_file() -> None:
    text = render()
    assert text == shipped()  # the defaults change nothing: the file is the production unit
    assert ("ExecStart=/opt/hypetunnel/venv/bin/hypetunnel controller run --config "
            "/etc/hypetunnel/controller.yaml") in text.splitlines()


@pytest.mark.parametrize(("args", "says"), [
    (["--venv", "opt/venv"], "error: --venv: 'opt/venv' must be an absolute path"),
    (["--config", "/etc/my config.yaml"], "error: --config: '/etc/my config.yaml': whitespace"),
    (["--user", "a b"], "error: --user: 'a b' is not a user name"),
])
def test_bad_paths_are_refused(args: list[str], says: str) -> None:
    r = CliRunner().invoke(app, ["controller", "unit", *args], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and says in r.output, r.output


def test_the_unit_is_package_data(tmp_path: Path) -> None:
    """What setuptools puts into a build (a wheel, an install) has the unit: built with
    build_py, the step that copies package data (no wheel package needed)."""
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                    "build_py", "--build-lib", str(tmp_path)], cwd=REPO, check=True,
                   timeout=120, capture_output=True)
    assert (tmp_path / "hypetunnel" / "data" / UNIT_NAME).read_text() == shipped()
