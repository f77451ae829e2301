"""EtcdStore against a real 3-member etcd cluster on 127.0.0.1 (free ports, temp dir).

The SQLite store's behaviour tests run unchanged against etcd; then what only etcd does: election
(claim_term), fencing, watch, and surviving the loss of a member. Each test writes under its own
prefix, so tests share one cluster; the member-failure tests get a cluster of their own.
Latencies are printed (run with -s to see them).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.errors import Conflict
from hypetunnel.lab.etcd import EtcdCluster, EtcdMember, stop_recorded
from hypetunnel.lab.proc import run, wait_until
from hypetunnel.store.base import StaleRevision, Store, StoreUnavailable
from hypetunnel.store.etcd import EtcdStore, Fenced
from tests.unit import test_store as shared

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
              pytest.mark.timeout(180)]


def _cluster() -> Iterator[EtcdCluster]:
    directory = Path(tempfile.mkdtemp(prefix=f"ht-etcd-{os.getpid()}-"))
    try:
        cluster = EtcdCluster.local(directory, name_prefix=f"m{os.getpid()}x")
        with cluster.running():
            yield cluster
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    yield from _cluster()


@pytest.fixture
def own_cluster() -> Iterator[EtcdCluster]:
    """A cluster this test may break (kill members)."""
    yield from _cluster()


@pytest.fixture
def prefix() -> str:
    return f"/ht-test-{os.getpid()}-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def opened(cluster: EtcdCluster, prefix: str) -> Iterator[Callable[..., EtcdStore]]:
    """Open EtcdStores on the test's prefix (endpoints may be reordered); all closed after."""
    stores: list[EtcdStore] = []

    def open_store(endpoints: list[str] | None = None) -> EtcdStore:
        stores.append(EtcdStore(endpoints or cluster.endpoints, prefix=prefix))
        return stores[-1]

    try:
        yield open_store
    finally:
        for s in stores:
            s.close()


@pytest.fixture
def store(opened: Callable[..., EtcdStore]) -> EtcdStore:
    return opened()


# -- the SQLite store's behaviour, unchanged ----------------------------------------------------
test_implements_the_protocol = shared.test_implements_the_protocol
test_empty_store = shared.test_empty_store
test_commit_puts_and_deletes_atomically_with_one_revision = (
    shared.test_commit_puts_and_deletes_atomically_with_one_revision)
test_empty_commit_changes_nothing = shared.test_empty_commit_changes_nothing
test_stale_revision_is_a_conflict_and_writes_nothing = (
    shared.test_stale_revision_is_a_conflict_and_writes_nothing)
test_unencodable_value_writes_nothing = shared.test_unencodable_value_writes_nothing
test_loaded_documents_are_copies = shared.test_loaded_documents_are_copies
test_codec_round_trip_through_a_store = shared.test_codec_round_trip_through_a_store
test_side_documents_stay_out_of_the_intent_and_its_revision = (
    shared.test_side_documents_stay_out_of_the_intent_and_its_revision)


# -- etcd specifics -----------------------------------------------------------------------------
def test_persists_across_instances_and_keys_are_logical(opened: Callable[..., EtcdStore],
                                                        prefix: str) -> None:
    a = opened()
    a.commit({"fabric": {"v": 1}, "vm/acme/web1": {"ip": "10.0.0.1"}}, [])
    a.commit({"fabric": {"v": 2}}, ["vm/acme/web1"], expect_revision=1)
    b = opened(list(reversed(a.endpoints)))
    snap = b.load()
    assert (snap.revision, snap.items) == (2, {"fabric": {"v": 2}})
    # Raw etcd layout: the logical key under the prefix, plus the meta keys.
    _, raw = b._range("")
    assert set(raw) == {"fabric", "meta/revision", "meta/commit"}
    assert raw["meta/revision"] == "2"
    assert b.commit({"x": {}}, [], expect_revision=2) == 3


def test_two_handles_cannot_interleave(opened: Callable[..., EtcdStore]) -> None:
    a, b = opened(), opened()
    assert a.commit({"x": {"by": "a"}}, [], expect_revision=0) == 1
    with pytest.raises(StaleRevision) as info:
        b.commit({"x": {"by": "b"}}, [], expect_revision=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert b.load().items == {"x": {"by": "a"}}
    # Unconditional commits from a handle with an outdated view still serialize: +1 each.
    assert b.commit({"y": {}}, []) == 2
    assert a.commit({"z": {}}, []) == 3


def test_put_and_delete_of_one_key_and_reserved_keys(store: EtcdStore) -> None:
    store.commit({"a": {"v": 1}}, [])
    assert store.commit({"a": {"v": 2}}, ["a", "a"]) == 2  # put wins, as in SQLite
    assert store.load().items == {"a": {"v": 2}}
    with pytest.raises(ValueError):
        store.commit({"meta/revision": {}}, [])
    with pytest.raises(ValueError):
        store.commit({}, ["meta/term"])
    assert store.load().revision == 2


def test_one_commit_holds_a_large_intent(store: EtcdStore) -> None:
    puts = {f"vm/t/vm{i}": {"i": i} for i in range(600)}
    assert store.commit(puts, []) == 1
    assert store.commit({}, list(puts)[:300], expect_revision=1) == 2
    assert len(store.load().items) == 300


def test_a_resent_commit_applies_once(store: EtcdStore) -> None:
    """The gateway resends a txn to another member when a reply is lost; the commit's token
    makes the resend report the first send's success instead of a conflict or a double bump."""
    gw = store._gw
    real_post = gw.post

    def lossy_post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/v3/kv/txn":
            real_post(path, body)  # applied, but its reply is "lost"
        return real_post(path, body)

    store.commit({"a": {}}, [])
    gw.post = lossy_post  # type: ignore[method-assign]
    try:
        assert store.commit({"b": {}}, [], expect_revision=1) == 2
        assert store.commit({"c": {}}, []) == 3
        assert store.claim_term(0, "n1", {}) is True
    finally:
        gw.post = real_post  # type: ignore[method-assign]
    snap = store.load()
    assert snap.revision == 3 and set(snap.items) == {"a", "b", "c"}
    assert store.term() == 1


def test_claim_term_race_has_exactly_one_winner(opened: Callable[..., EtcdStore]) -> None:
    contenders = [opened(), opened(list(reversed(opened().endpoints)))]
    latencies: list[float] = []
    for term in range(5):
        gate = threading.Barrier(len(contenders))
        results: dict[str, bool] = {}

        def claim(i: int, s: EtcdStore, term: int = term, gate: threading.Barrier = gate,
                  results: dict[str, bool] = results) -> None:
            gate.wait()
            t0 = time.perf_counter()
            results[f"n{i}"] = s.claim_term(term, f"n{i}", {"peer": f"10.0.0.{i}:7000"})
            latencies.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [n for n, won in results.items() if won]
        assert len(results) == 2 and len(winners) == 1, results
        assert contenders[0].term() == term + 1
        leader = contenders[1].leader()
        assert leader == {"node": winners[0], "term": term + 1,
                          "peer": f"10.0.0.{winners[0][1:]}:7000"}
    assert contenders[0].claim_term(0, "late", {}) is False  # a stale expectation never wins
    print(f"\nclaim_term latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")


def test_fenced_side_documents_are_refused_after_a_newer_claim(
        opened: Callable[..., EtcdStore]) -> None:
    old, new = opened(), opened()
    assert old.claim_term(0, "ctl-a", {})
    old.fenced(1).side_commit({"fcaps/alarm/a1": {"by": "a"}}, [])
    assert new.claim_term(1, "ctl-b", {})
    many = {f"fcaps/event/{i:012d}": {"seq": i} for i in range(250)}  # several txns
    with pytest.raises(Fenced):
        old.fenced(1).side_commit({"fcaps/alarm/a1": {"by": "a2"}, **many}, [])
    assert new.side_load("fcaps/") == {"fcaps/alarm/a1": {"by": "a"}}
    new.fenced(2).side_commit(many, ["fcaps/alarm/a1"])
    assert new.side_load("fcaps/") == many and new.revision() == 0


def test_fenced_writes_are_refused_after_a_newer_claim(opened: Callable[..., EtcdStore]) -> None:
    old, new = opened(), opened()
    assert old.term() == 0 and old.leader() is None
    assert old.claim_term(0, "ctl-a", {})
    old_view = old.fenced(1)
    assert old_view.commit({"vm/t/a": {"by": "a"}}, []) == 1
    assert new.claim_term(1, "ctl-b", {})  # ctl-b takes over while ctl-a still thinks it leads
    new_view = new.fenced(2)
    for expect in (None, 1):
        with pytest.raises(Fenced) as info:
            old_view.commit({"vm/t/a": {"by": "a2"}, "vm/t/b": {}}, ["vm/t/a"],
                            expect_revision=expect)
        assert isinstance(info.value, Conflict) and (info.value.term, info.value.actual) == (1, 2)
    with pytest.raises(Fenced):
        old_view.commit({}, [])  # even an empty commit tells a deposed writer so
    snap = new.load()
    assert (snap.revision, snap.items) == (1, {"vm/t/a": {"by": "a"}})  # nothing written
    assert new_view.commit({"vm/t/a": {"by": "b"}}, [], expect_revision=1) == 2
    assert new.load().items == {"vm/t/a": {"by": "b"}}
    old_view.close()  # a view shares its parent's client: closing it must not break the parent
    assert old.load().revision == 2


def test_commit_latency(store: EtcdStore) -> None:
    latencies = []
    for i in range(30):
        t0 = time.perf_counter()
        store.commit({f"vm/t/v{i}": {"i": i}}, [], expect_revision=i)
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    store.load()
    load = time.perf_counter() - t0
    print(f"\ncommit latency: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms; load of 30 keys {load * 1000:.1f} ms")
    assert store.load().revision == 30


class _Changes:
    """Counts watch notifications; wait() polls with a deadline."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.count += 1

    def wait_beyond(self, seen: int, timeout: float = 5) -> float:
        t0 = time.perf_counter()
        wait_until(lambda: self.count > seen, timeout, "a watch notification", interval=0.001)
        return time.perf_counter() - t0


def test_watch_fires_on_a_change_by_another_client(opened: Callable[..., EtcdStore]) -> None:
    watcher, writer, outsider = opened(), opened(), None
    changes = _Changes()
    stop = watcher.watch(changes)
    try:
        latencies = []
        for i in range(5):
            seen = changes.count
            t0 = time.perf_counter()
            writer.commit({f"k{i}": {}}, [])
            wait_until(lambda seen=seen: changes.count > seen, 5, "watch", interval=0.001)
            latencies.append(time.perf_counter() - t0)
        seen = changes.count
        writer.commit({}, ["k0"])  # deletes count too
        changes.wait_beyond(seen)
        seen = changes.count
        writer.claim_term(0, "n", {})  # so do elections (the standby learns the new leader)
        changes.wait_beyond(seen)
        # Nothing outside the prefix wakes us.
        outsider = EtcdStore(writer.endpoints, prefix=writer.prefix.rstrip("/") + "-other/")
        seen = changes.count
        outsider.commit({"x": {}}, [])
        writer.commit({"y": {}}, [])
        changes.wait_beyond(seen)
        assert changes.count == seen + 1
        print(f"\nwatch latencies {[round(x * 1000) for x in latencies]} ms; median "
              f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    finally:
        stop()
        if outsider is not None:
            outsider.close()
    assert not stop.__self__._thread.is_alive()  # type: ignore[attr-defined]


def test_losing_any_member_keeps_reads_writes_and_watch(own_cluster: EtcdCluster) -> None:
    """kill -9 the raft leader, which is also the client's first (and current) endpoint; then,
    once it is back, a follower; then a second member (no quorum: refused, never half-done)."""
    wait_until(lambda: own_cluster.leader() is not None, 10, "an etcd leader")
    leader = own_cluster.leader()
    assert leader is not None
    followers = [m for m in own_cluster.members if m is not leader]
    store = EtcdStore([leader.client_url, *(m.client_url for m in followers)],
                      prefix="/ht-failover/", timeout=2.0)
    other = EtcdStore([m.client_url for m in reversed(followers)] + [leader.client_url],
                      prefix="/ht-failover/")
    changes = _Changes()
    stop = store.watch(changes)
    try:
        assert store.commit({"a": {}}, []) == 1
        leader.kill()
        t0 = time.perf_counter()
        assert store.commit({"b": {}}, [], expect_revision=1) == 2
        failover = time.perf_counter() - t0
        assert set(store.load().items) == {"a", "b"}
        seen = changes.count
        t0 = time.perf_counter()
        other.commit({"c": {}}, [])  # the watch moved to a live member too
        changes.wait_beyond(seen, timeout=10)
        watch_failover = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert store.claim_term(0, "n1", {})
        claim = time.perf_counter() - t0
        assert store.fenced(1).commit({"d": {}}, []) == 4
        # the member comes back and catches up; then lose a follower
        own_cluster.restart(leader.name)
        followers[0].kill()
        assert other.load().revision == 4
        t0 = time.perf_counter()
        assert store.commit({"e": {}}, [], expect_revision=4) == 5
        follower_loss = time.perf_counter() - t0
        print(f"\nafter kill -9 of the raft leader (= first endpoint): first commit "
              f"{failover * 1000:.0f} ms, watch event {watch_failover * 1000:.0f} ms, claim "
              f"{claim * 1000:.0f} ms; after a follower's loss: first commit "
              f"{follower_loss * 1000:.0f} ms")
        followers[1].kill()
        with pytest.raises(StoreUnavailable):
            store.commit({"f": {}}, [])
    finally:
        stop()
        store.close()
        other.close()


def test_a_frozen_member_is_skipped_and_the_watch_moves_on(own_cluster: EtcdCluster) -> None:
    """SIGSTOP a follower that is the client's first endpoint: it accepts connections but never
    answers, as a partitioned member looks. Requests time out on it after attempt_timeout and go
    to the others; the watch stream on it goes silent and is re-opened elsewhere (no event lost)."""
    wait_until(lambda: own_cluster.leader() is not None, 10, "an etcd leader")
    frozen = next(m for m in own_cluster.members if m is not own_cluster.leader())
    others = [m.client_url for m in own_cluster.members if m is not frozen]
    store = EtcdStore([frozen.client_url, *others], prefix="/ht-frozen/")
    writer = EtcdStore(others, prefix="/ht-frozen/")
    changes = _Changes()
    stop = store.watch(changes)
    try:
        store.commit({"a": {}}, [])
        frozen.pause()
        t0 = time.perf_counter()
        assert store.commit({"b": {}}, [], expect_revision=1) == 2
        skipped = time.perf_counter() - t0
        assert store._gw.order()[0] != frozen.client_url  # it now sticks to a live member
        seen = changes.count
        t0 = time.perf_counter()
        writer.commit({"c": {}}, [])
        changes.wait_beyond(seen, timeout=15)
        moved = time.perf_counter() - t0
        assert set(store.load().items) == {"a", "b", "c"}
        print(f"\nfrozen first endpoint: commit {skipped * 1000:.0f} ms; watch event after "
              f"{moved * 1000:.0f} ms (idle limit {store_watch_idle()} s)")
    finally:
        frozen.resume()
        stop()
        store.close()
        writer.close()


def test_members_says_which_member_answers_and_which_leads(own_cluster: EtcdCluster) -> None:
    """A killed member is down (refused at once), a frozen one too (after the probe's
    timeout), the others up, one of them the leader."""
    wait_until(lambda: own_cluster.leader() is not None, 10, "an etcd leader")
    store = EtcdStore(own_cluster.endpoints, prefix="/ht-members/")
    try:
        members = store.members(timeout=1.0)
        assert sorted(m.name for m in members) == sorted(m.name for m in own_cluster.members)
        assert all(m.up and m.problem == "" for m in members)
        assert sum(m.leader for m in members) == 1
        leader = own_cluster.leader()
        followers = [m for m in own_cluster.members if m is not leader]
        assert leader is not None
        followers[0].kill()
        by_name = {m.name: m for m in store.members(timeout=1.0)}
        assert not by_name[followers[0].name].up and by_name[followers[0].name].problem
        assert by_name[leader.name].up and by_name[followers[1].name].up
        own_cluster.restart(followers[0].name)
        followers[1].pause()  # accepts connections, never answers: a partitioned member
        try:
            t0 = time.perf_counter()
            by_name = {m.name: m for m in store.members(timeout=1.0)}
            took = time.perf_counter() - t0
            assert not by_name[followers[1].name].up, by_name
            assert by_name[followers[0].name].up and by_name[leader.name].up
            assert took < 5, took
        finally:
            followers[1].resume()
    finally:
        store.close()


def store_watch_idle() -> float:
    from hypetunnel.store.etcd import _Watcher

    return _Watcher.IDLE


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
def test_a_member_in_a_network_namespace_and_stop_by_record(tmp_path: Path) -> None:
    """The lab runs members inside hypervisor namespaces, with URLs the caller chooses; a later
    process (the CLI tearing a lab down) stops them from the pid records alone."""
    netns = f"htetcd{os.getpid()}{uuid.uuid4().hex[:4]}"
    run(["ip", "netns", "add", netns])
    try:
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        member = EtcdMember("solo", tmp_path / "solo", "http://127.0.0.1:2379",
                            "http://127.0.0.1:2380", netns=netns)
        cluster = EtcdCluster([member])
        try:
            cluster.start()
            assert member.healthy() and member.running()
            assert cluster.leader() is member  # asked from inside the namespace
            assert netns in run(["ip", "netns", "identify", str(member.pid())]).stdout
            pid = member.pid()
            assert stop_recorded(tmp_path) == 1  # as another process would, from etcd.json
            assert pid is not None and not member.running()
            cluster.restart("solo")  # same data dir: the member comes back
            assert member.healthy()
        finally:
            cluster.destroy()
        assert not (tmp_path / "solo").exists()
    finally:
        run(["ip", "netns", "del", netns], check=False)


def test_store_protocol_is_satisfied_by_a_fenced_view(store: EtcdStore) -> None:
    assert isinstance(store.fenced(0), Store)
    assert store.fenced(0).commit({"a": {}}, []) == 1  # term 0: no claim yet
