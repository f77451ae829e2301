"""The scale benchmarks run at their smallest size, and a smoke run writes no figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import compiler_scale, takeover_scale

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def _doc() -> str | None:
    return DOC.read_text() if DOC.exists() else None


@pytest.mark.timeout(60)
def test_compiler_scale_smoke_runs_checked_and_writes_nothing() -> None:
    before = _doc()
    out = compiler_scale.main(["--smoke"])
    assert _doc() == before
    (run,) = out["runs"][compiler_scale.SMOKE.name]
    for op in compiler_scale.OPS:
        stats = run["incremental"][op]
        assert stats["ops"] == 20
        assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
        assert stats["touched_mean"] > 0 and stats["flow_mods_mean"] > 0
    assert isinstance(out["met"], bool) and out["met"] == (not out["over"])


def test_compiler_scale_verdict_needs_every_statistic_of_every_run() -> None:
    ok = {op: {"p50_ms": 1.0, "p95_ms": 2.0, "max_ms": 4.0} for op in compiler_scale.OPS}
    slow_max = {**ok, "move": {"p50_ms": 1.0, "p95_ms": 2.0, "max_ms": 9.0}}
    assert compiler_scale.verdict({"a": [{"incremental": ok}]}) == (True, [])
    met, over = compiler_scale.verdict({"a": [{"incremental": ok}],
                                        "b": [{"incremental": ok}, {"incremental": slow_max}]})
    assert not met and over == ["b run 2 move max_ms 9.00 ms"]


@pytest.mark.timeout(60)
def test_takeover_scale_smoke_moves_every_switch_to_the_new_master() -> None:
    before = _doc()
    out = takeover_scale.main(["--smoke"])
    assert _doc() == before
    (r,) = out["results"]
    assert r["switches"] == takeover_scale.SMOKE_SIZE
    assert 0 <= r["active_s"] <= r["all_master_s"] <= r["all_resynced_s"] < 30
    assert r["run"] == 1 and isinstance(out["met"], bool)


def test_takeover_verdict_needs_every_run_under_goal_and_linear() -> None:
    def r(run: int, n: int, t: float) -> dict[str, float]:
        return {"run": run, "switches": n, "active_s": 0.0, "all_resynced_s": t, "cpu_s": t}

    linear = [r(1, 100, 0.2), r(1, 1000, 2.0)]
    assert takeover_scale.verdict(linear)[0]
    assert not takeover_scale.verdict([*linear, r(2, 100, 0.2), r(2, 1000, 4.0)])[0]
    assert not takeover_scale.verdict([r(1, 100, 0.6), r(1, 1000, 6.0)])[0]
