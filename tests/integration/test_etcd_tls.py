"""EtcdStore against a real 3-member etcd cluster with client and peer TLS (127.0.0.1).

The members require a client certificate from the CA on both ports and verify each other's
address; the store presents the controller's certificate and verifies each member's address
against its certificate. The store's behaviour tests run unchanged over TLS; then: plain HTTP, no
certificate, and another CA's certificate get nothing, on the client port and the peer port.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from hypetunnel.lab.etcd import EtcdCluster, EtcdMember, member_identity
from hypetunnel.lab.proc import run
from hypetunnel.pki import Identity, client_context, init_ca, issue
from hypetunnel.store.base import StoreUnavailable
from hypetunnel.store.etcd import EtcdStore
from tests.integration import test_etcd_store as plain

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed"),
              pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pki() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix=f"ht-etcd-tls-{os.getpid()}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pki: Path) -> Iterator[EtcdCluster]:
    (pki / "ca").mkdir()
    init_ca(pki / "ca")
    issue(pki / "ca", "ctl1")
    cluster = EtcdCluster.local(pki / "members", name_prefix=f"t{os.getpid()}x", pki=pki / "ca")
    with cluster.running():
        yield cluster


@pytest.fixture(scope="module")
def controller(pki: Path, cluster: EtcdCluster) -> ssl.SSLContext:
    """The controller's client context; it checks each member's address against its
    certificate, as the daemon does."""
    return client_context(Identity.in_directory(pki / "ca", "ctl1"), check_hostname=True)


@pytest.fixture
def opened(cluster: EtcdCluster, controller: ssl.SSLContext,
           prefix: str) -> Iterator[Callable[..., EtcdStore]]:
    stores: list[EtcdStore] = []

    def open_store(endpoints: list[str] | None = None) -> EtcdStore:
        stores.append(EtcdStore(endpoints or cluster.endpoints, prefix=prefix, tls=controller))
        return stores[-1]

    try:
        yield open_store
    finally:
        for s in stores:
            s.close()


prefix = plain.prefix
store = plain.store
test_empty_store = plain.test_empty_store
test_commit_puts_and_deletes_atomically_with_one_revision = (
    plain.test_commit_puts_and_deletes_atomically_with_one_revision)
test_stale_revision_is_a_conflict_and_writes_nothing = (
    plain.test_stale_revision_is_a_conflict_and_writes_nothing)
test_persists_across_instances_and_keys_are_logical = (
    plain.test_persists_across_instances_and_keys_are_logical)
test_two_handles_cannot_interleave = plain.test_two_handles_cannot_interleave
test_claim_term_race_has_exactly_one_winner = plain.test_claim_term_race_has_exactly_one_winner
test_fenced_writes_are_refused_after_a_newer_claim = (
    plain.test_fenced_writes_are_refused_after_a_newer_claim)
test_commit_latency = plain.test_commit_latency


def test_the_watch_streams_over_tls(opened: Callable[..., EtcdStore]) -> None:
    watcher, writer = opened(), opened()
    changes = plain._Changes()
    stop = watcher.watch(changes)
    try:
        for i in range(3):
            seen = changes.count
            writer.commit({f"k{i}": {}}, [])
            changes.wait_beyond(seen)
    finally:
        stop()


def _foreign(pki: Path) -> ssl.SSLContext:
    """A controller certificate (CN=ctl1) from another CA, trusting our CA for the server."""
    other = pki / "foreign"
    init_ca(other)
    issue(other, "ctl1")
    ctx = client_context(Identity.in_directory(other, "ctl1"))
    ctx.load_verify_locations(str(pki / "ca" / "ca.crt"))
    return ctx


def _no_certificate(pki: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))


@pytest.mark.parametrize("who", ["plain HTTP", "no certificate", "another CA"])
def test_a_client_without_our_certificate_gets_nothing(cluster: EtcdCluster, pki: Path,
                                                       prefix: str, who: str) -> None:
    writer = EtcdStore(cluster.endpoints, prefix=prefix,
                       tls=client_context(Identity.in_directory(pki / "ca", "ctl1")))
    writer.commit({"secret": {"v": 1}}, [])
    if who == "plain HTTP":
        endpoints, tls = [e.replace("https://", "http://") for e in cluster.endpoints], None
    else:
        endpoints = cluster.endpoints
        tls = _no_certificate(pki) if who == "no certificate" else _foreign(pki)
    started = time.monotonic()
    intruder = EtcdStore(endpoints, prefix=prefix, tls=tls, timeout=1.0)
    try:
        for attempt in (intruder.load, lambda: intruder.commit({"secret": {"v": 2}}, [])):
            with pytest.raises(StoreUnavailable):
                attempt()
    finally:
        intruder.close()
    assert time.monotonic() - started < 5  # refused, not hung
    assert writer.load().items == {"secret": {"v": 1}}
    writer.close()


@pytest.mark.parametrize("who", ["plain HTTP", "no certificate", "another CA"])
def test_the_peer_port_takes_only_certificates_of_our_ca(cluster: EtcdCluster, pki: Path,
                                                         who: str) -> None:
    peer = cluster.members[0].peer_url
    if who == "plain HTTP":
        # The member hangs up (or, as Go's HTTPS server may, answers 400): nothing of raft's.
        try:
            reply = httpx.get(peer.replace("https://", "http://") + "/members", timeout=2)
        except httpx.TransportError:
            return
        assert reply.status_code == 400 and cluster.members[0].name not in reply.text
        return
    verify = _no_certificate(pki) if who == "no certificate" else _foreign(pki)
    with pytest.raises(httpx.TransportError):
        httpx.get(peer + "/members", verify=verify, timeout=2)
    # The member's own certificate (what the other members present) is accepted.
    member = cluster.members[1].tls
    assert member is not None
    reply = httpx.get(peer + "/members", verify=client_context(member), timeout=2)
    assert reply.status_code == 200 and cluster.members[0].name in reply.text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
def test_a_tls_member_in_a_network_namespace(tmp_path: Path) -> None:
    """As in the HA lab: the member's health and raft status are asked from inside its
    namespace (curl with the member's certificate); a plain request there gets nothing."""
    netns = f"htetcdtls{os.getpid()}{uuid.uuid4().hex[:4]}"
    run(["ip", "netns", "add", netns])
    try:
        run(["ip", "-n", netns, "link", "set", "lo", "up"])
        member = EtcdMember("solo", tmp_path / "solo", "https://127.0.0.1:2379",
                            "https://127.0.0.1:2380", netns=netns,
                            tls=member_identity(tmp_path / "pki", "solo", "127.0.0.1"))
        cluster = EtcdCluster([member])
        try:
            cluster.start()
            assert member.healthy() and cluster.leader() is member
            plain = run(["curl", "-s", "--max-time", "1", "http://127.0.0.1:2379/health"],
                        netns=netns, check=False)
            assert '"health"' not in plain.stdout
            no_cert = run(["curl", "-s", "--max-time", "1", "--cacert",
                           str(tmp_path / "pki" / "ca.crt"), "https://127.0.0.1:2379/health"],
                          netns=netns, check=False)
            assert no_cert.returncode != 0 and '"health"' not in no_cert.stdout
        finally:
            cluster.destroy()
    finally:
        run(["ip", "netns", "del", netns], check=False)
