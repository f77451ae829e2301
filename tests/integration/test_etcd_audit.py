"""The audit log on a real etcd: a change's row rides in the change's txn (also through the
active controller's fenced view), is read back by another controller's store (what the
standby sees after a failover), stays out of load() and the revision, and is pruned per kind.
One etcd member on 127.0.0.1 is enough: the replication is etcd's, tested elsewhere."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypetunnel.api.audit_trail import AuditTrail, Retention
from hypetunnel.lab.etcd import EtcdCluster
from hypetunnel.store.audit import CURRENT, AuditRow, PendingAudit, row_key
from hypetunnel.store.base import StaleRevision
from hypetunnel.store.etcd import EtcdStore

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
              pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    directory = Path(tempfile.mkdtemp(prefix=f"ht-etcd-audit-{os.getpid()}-"))
    try:
        c = EtcdCluster.local(directory, size=1, name_prefix=f"a{os.getpid()}x")
        with c.running():
            yield c
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def stores(cluster: EtcdCluster) -> Iterator[tuple[EtcdStore, EtcdStore]]:
    prefix = f"/ht-audit-{os.getpid()}-{uuid.uuid4().hex[:8]}/"
    a, b = EtcdStore(cluster.endpoints, prefix=prefix), EtcdStore(cluster.endpoints, prefix=prefix)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_change_row_commits_in_the_txn_and_the_other_controller_reads_it(
        stores: tuple[EtcdStore, EtcdStore]) -> None:
    active, standby = stores
    assert active.claim_term(0, "ctl1", {})
    fenced = active.fenced(1)
    pending = PendingAudit(lambda: {"who": "alice", "role": "admin", "tenant": None,
                                    "node": "ctl1"})
    token = CURRENT.set(pending)
    try:
        rev = fenced.commit({"tenant/acme": {"name": "acme"}}, [])
        with pytest.raises(StaleRevision):  # a refused commit writes no row
            fenced.commit({"tenant/b": {"name": "b"}}, [], expect_revision=rev - 1)
    finally:
        CURRENT.reset(token)
    [row] = pending.committed_rows()
    assert row.doc["revision"] == rev
    # The standby (after a failover: the new active) reads the same replicated row.
    assert standby.audit_range(0, None, 10) == [row.doc]
    assert set(standby.load().items) == {"tenant/acme"} and standby.revision() == rev
    standby.audit_put([AuditRow(row.key, {**row.doc, "status": 200})])
    assert standby.revision() == rev  # audit writes never move the store revision
    assert active.audit_range(0, None, 10)[0]["status"] == 200


def test_range_filters_by_time_and_tenant_and_prune_keeps_the_newest(
        stores: tuple[EtcdStore, EtcdStore]) -> None:
    store, _ = stores
    rows = [AuditRow(row_key("refusal", 1000 + i), {"time": 1000 + i, "n": i, "tenant": "t"})
            for i in range(30)]
    rows += [AuditRow(row_key("change", 2000), {"time": 2000, "n": -1, "tenant": "u"})]
    store.audit_put(rows)
    assert [r["n"] for r in store.audit_range(1025, "t", 100)] == [29, 28, 27, 26, 25]
    assert [r["n"] for r in store.audit_range(0, "u", 100)] == [-1]
    AuditTrail(store, "n", Retention(change=10, request=10, refusal=10)).prune()
    kept = store.audit_range(0, None, 100)
    assert sorted(r["n"] for r in kept) == [-1, *range(20, 30)]
