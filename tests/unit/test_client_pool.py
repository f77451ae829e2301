"""The client pool finds the active controller of a pair fast, even when a member hangs
(httpx.MockTransport: a hung member is a handler that blocks past every timeout)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ActiveCache, ApiClient, ApiUnreachable, ClientPool
from hypetunnel.client.cache import LastActive
from hypetunnel.client.pool import PROBE_DEADLINE, STATUS_DEADLINE

A, B = "http://ctl-a.test:8650", "http://ctl-b.test:8650"
HUNG = "hung"


class Pair:
    """Two fake controllers: each answers as told, or hangs until the test ends."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.release = threading.Event()
        self.asked: list[str] = []

    def handler(self, url: str) -> Callable[[httpx.Request], httpx.Response]:
        def handle(request: httpx.Request) -> httpx.Response:
            self.asked.append(f"{url} {request.url.path}")
            answer = self.answers[url]
            if answer == HUNG:
                self.release.wait(10)  # far past any timeout of the pool
                raise httpx.ReadTimeout("hung", request=request)
            if request.url.path == "/api/v1/controller":
                return httpx.Response(200, json=answer)
            if request.url.path == "/api/v1/status":
                return httpx.Response(200, json={"controller": answer, "switches": []})
            return httpx.Response(200, json=[{"name": f"served-by-{answer.get('node')}"}])
        return handle

    def factory(self, url: str) -> ApiClient:
        return ApiClient(url, transport=httpx.MockTransport(self.handler(url)))


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        yield p
    finally:
        p.release.set()


def active(node: str, term: int) -> dict[str, Any]:
    return {"role": "active", "term": term, "node": node}


def standby(node: str, term: int) -> dict[str, Any]:
    return {"role": "standby", "term": term, "node": node}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def test_a_hung_member_costs_at_most_the_probe_deadline(pair: Pair) -> None:
    pair.answers = {A: HUNG, B: active("ctl2", 2)}
    pool = ClientPool([A, B], pair.factory)
    api, took = timed(pool.active)
    assert api.base_url == B
    assert took < 1.0  # the brief: within 1 s; by design PROBE_DEADLINE (0.6 s)
    probes = pool.probe()
    assert probes[0].error is not None and probes[0].error.startswith("no answer within")
    assert probes[1].active and probes[1].term == 2


def test_the_remembered_active_answers_without_waiting_for_a_hung_member(
        pair: Pair, tmp_path: Path) -> None:
    cache = ActiveCache(tmp_path / "cache" / "active.json")
    pair.answers = {A: HUNG, B: active("ctl2", 2)}
    pool = ClientPool([A, B], pair.factory, cache=cache)
    assert pool.active().base_url == B
    assert cache.get([B, A]) == LastActive(B, 2)  # one entry per pair, in any order
    api, took = timed(pool.active)
    assert api.base_url == B and took < PROBE_DEADLINE / 2


def test_after_a_takeover_the_newer_term_wins_over_the_remembered_member(
        pair: Pair, tmp_path: Path) -> None:
    cache = ActiveCache(tmp_path / "active.json")
    cache.put([A, B], LastActive(A, 1))
    pair.answers = {A: standby("ctl1", 2), B: active("ctl2", 2)}
    assert ClientPool([A, B], pair.factory, cache=cache).active().base_url == B
    assert cache.get([A, B]) == LastActive(B, 2)


def test_two_members_claiming_active_the_highest_term_wins(pair: Pair) -> None:
    # A controller resumed after a hang still believes it is active until it learns the term.
    pair.answers = {A: active("ctl1", 1), B: active("ctl2", 2)}
    assert ClientPool([A, B], pair.factory).active().base_url == B


def test_no_active_member_is_one_clear_error_naming_each(pair: Pair) -> None:
    pair.answers = {A: HUNG, B: standby("ctl2", 3)}
    pool = ClientPool([A, B], pair.factory, patience=0.8)
    started = time.monotonic()
    with pytest.raises(ApiUnreachable) as e:
        pool.active()
    # Without an active answer the pool waits its patience for the silent member, no longer.
    assert 0.7 < time.monotonic() - started < 2.0
    [err] = e.value.errors
    assert "no active controller among 2" in err.reason
    assert f"{A}: no answer within" in err.reason and f"{B} (ctl2): standby" in err.reason


def test_a_slow_but_healthy_active_is_still_found(pair: Pair) -> None:
    pair.answers = {A: standby("ctl1", 4), B: "slow"}
    slow_answer = active("ctl2", 4)

    def slow_factory(url: str) -> ApiClient:
        if url != B:
            return pair.factory(url)

        def handle(request: httpx.Request) -> httpx.Response:
            time.sleep(PROBE_DEADLINE + 0.3)  # a loaded machine: late, but it answers
            return httpx.Response(200, json=slow_answer)
        return ApiClient(url, transport=httpx.MockTransport(handle))

    assert ClientPool([A, B], slow_factory).active().base_url == B


def test_a_broken_cache_file_is_ignored(pair: Pair, tmp_path: Path) -> None:
    path = tmp_path / "active.json"
    path.write_text("{not json")
    pair.answers = {A: active("ctl1", 1), B: standby("ctl2", 1)}
    assert ClientPool([A, B], pair.factory, cache=ActiveCache(path)).active().base_url == A
    assert json.loads(path.read_text()) == {f"{A},{B}": {"url": A, "term": 1}}


def test_status_of_every_member_in_parallel(pair: Pair) -> None:
    pair.answers = {A: HUNG, B: active("ctl2", 2)}
    out, took = timed(ClientPool([A, B], pair.factory).status_all)
    assert took < STATUS_DEADLINE + 0.5
    assert out[0][0] == A and out[0][1]["controller"]["role"].startswith("unreachable (no answer")
    assert out[1] == (B, {"controller": active("ctl2", 2), "switches": []})


def cli(pair: Pair, *args: str) -> Any:
    state = CliState(client_factory=pair.factory, cache=None)
    return CliRunner().invoke(app, list(args), obj=state,
                              env={"HYPETUNNEL_API": None, "HYPETUNNEL_LAB": None})


def test_cli_verbose_says_who_was_asked_and_who_answered(pair: Pair) -> None:
    pair.answers = {A: HUNG, B: active("ctl2", 2)}
    r, took = timed(lambda: cli(pair, "-v", "--api", f"{A},{B}", "tenant", "list"))
    assert r.exit_code == 0, r.output
    assert took < 1.5
    assert "served-by-ctl2" in r.stdout
    assert f"probe {A}: no answer within" in r.stderr
    assert f"probe {B} (ctl2): active, term 2, answered in" in r.stderr
    assert f"using {B} (ctl2, term 2)" in r.stderr
    quiet = cli(pair, "--api", f"{A},{B}", "tenant", "list")
    assert quiet.exit_code == 0 and "probe" not in quiet.stderr


def test_cli_controller_status_does_not_wait_on_a_hung_member(pair: Pair) -> None:
    pair.answers = {A: HUNG, B: active("ctl2", 2)}
    r, took = timed(lambda: cli(pair, "--api", f"{A},{B}", "controller", "status"))
    assert r.exit_code == 0, r.output
    assert took < STATUS_DEADLINE + 1.0
    assert "role unreachable (no answer within" in r.stdout and "ctl2" in r.stdout
