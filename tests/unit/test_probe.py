"""An isolation probe whose own set-up fails gives no verdict (it would read as "isolated")."""

from __future__ import annotations

import asyncio

import pytest

from hypetunnel.lab import probe
from hypetunnel.lab.probe import ProbeError, probe_matrix
from hypetunnel.lab.state import LabVM

A = LabVM("acme/a", "hv1", "ns-a", "02:00:00:00:00:0a", "10.1.0.10", 24, 1450, "p-a")
B = LabVM("globex/b", "hv1", "ns-b", "02:00:00:00:00:0b", "10.1.0.11", 24, 1450, "p-b")
NETWORKS = {A.vm_id: "acme/front", B.vm_id: "globex/front"}


class FakeNetns:
    """Scripted exit statuses per command; records every command and the entries it leaves."""

    def __init__(self, fail: dict[str, int]) -> None:
        self.fail = fail  # first words of a command -> its exit status
        self.calls: list[tuple[str, ...]] = []
        self.entries: set[tuple[str, str]] = set()  # (netns, "route"|"neigh")

    async def run(self, netns: str, *argv: str) -> tuple[int, str, str]:
        self.calls.append((netns, *argv))
        words = " ".join(argv[:3])
        rc = next((rc for prefix, rc in self.fail.items() if words.startswith(prefix)), 0)
        kind = argv[1] if len(argv) > 1 else ""
        if rc == 0 and argv[2:3] == ("replace",):
            self.entries.add((netns, kind))
        if rc == 0 and argv[2:3] == ("del",):
            self.entries.discard((netns, kind))
        if argv[2:3] == ("show",):
            return 0, f"{kind} left\n" if (netns, kind) in self.entries else "", ""
        return rc, "", "RTNETLINK answers: Operation not permitted" if rc else ""


def run_matrix(monkeypatch: pytest.MonkeyPatch, fake: FakeNetns) -> list[probe.ProbeResult]:
    monkeypatch.setattr(probe, "_run", fake.run)
    return asyncio.run(probe_matrix([A, B], NETWORKS))


def test_a_failed_route_set_up_is_an_error_not_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the route, ping would exit 2 ("Network is unreachable"): read as "isolated".
    fake = FakeNetns({"ip route replace": 2})
    with pytest.raises(ProbeError, match=r"ip route replace 10\.1\.0\.11/32 dev eth0.* exited 2"):
        run_matrix(monkeypatch, fake)
    assert not any(c[1] == "ping" for c in fake.calls)
    assert fake.entries == set()


def test_a_failed_neighbour_set_up_is_an_error_and_the_route_is_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNetns({"ip neigh replace": 2})
    with pytest.raises(ProbeError, match="ip neigh replace"):
        run_matrix(monkeypatch, fake)
    assert fake.entries == set()  # the route set up before the failure was taken down


def test_ping_that_cannot_send_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNetns({"ping": 2})
    with pytest.raises(ProbeError, match="could not probe"):
        run_matrix(monkeypatch, fake)


def test_entries_that_survive_cleanup_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNetns({"ip route del": 2})
    with pytest.raises(ProbeError, match="could not be removed"):
        run_matrix(monkeypatch, fake)


def test_silent_ping_after_a_good_set_up_is_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    results = run_matrix(monkeypatch, FakeNetns({"ping": 1}))
    assert {(r.src, r.dst, r.reached) for r in results} == {
        (A.vm_id, B.vm_id, False), (B.vm_id, A.vm_id, False)}
    assert all(r.ok for r in results)
