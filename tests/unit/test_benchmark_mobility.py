"""benchmarks/mobility.py: a move that did not end ok is a failure, never a 0.0 figure."""

from __future__ import annotations

import sys

import pytest

from benchmarks import mobility


def result(failed: list[str]) -> dict[str, object]:
    return {"moves": 2, "drain": 1, "lost_ms": [5.0, 400.0], "lost_end_ms": [0.0, 0.0],
            "ctl_ms": [0.0], "lead_ms": [40.0], "failed": failed, "load": [2.0, 3.5],
            "survived": 2, "drain_s": 1.0, "drain_failed": []}


def test_a_timed_out_move_fails_the_run_and_gives_no_controller_figure(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(mobility, "run", lambda moves, drain: result(["move 2: timeout"]))
    monkeypatch.setattr(sys, "argv", ["mobility.py", "--no-write"])
    assert mobility.main() == 1
    out = capsys.readouterr().out
    assert "moves that did not end ok: 1/2 (move 2: timeout)" in out
    assert "| controller-measured interruption (1 moves that ended ok) | 0.0 | 0.0 | 0.0 |" in out


def test_a_run_whose_moves_all_ended_ok_succeeds(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    r = result([])
    r["ctl_ms"], r["lead_ms"] = [0.0, 12.5], [40.0, -12.5]
    monkeypatch.setattr(mobility, "run", lambda moves, drain: r)
    monkeypatch.setattr(sys, "argv", ["mobility.py", "--no-write"])
    assert mobility.main() == 0
    assert "moves that did not end ok: 0/2;" in capsys.readouterr().out
