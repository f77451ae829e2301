"""Per-tenant accounting with real packets: a known volume (iperf3 -n, a counted ping) shows up in
`GET /usage` within 1 % of what the VMs' own interfaces counted, through a controller restart in
the middle of the transfer; through a hot move nothing counts twice (OVS loses the last counts
of the flows a move deletes: README, Accounting); the other tenant's counters do not move, and
traffic to another tenant's address is counted as the sender's drop."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hypetunnel.cli.democmd import bundled_example
from hypetunnel.client import ApiClient
from hypetunnel.lab import datacenter
from hypetunnel.lab.proc import LabError, wait_until
from hypetunnel.lab.topology import Lab
from tests.lab.conftest import keep_failed_lab
from tests.lab.test_mobility import move

pytestmark = pytest.mark.lab

POLL = 45.0  # the controller reads counters every 10 s; a reading goes through the store


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"u{os.getpid() % 100000}"
    datacenter.down(name)
    try:
        yield datacenter.up(bundled_example(), name, timeout=90)
    finally:
        if not keep_failed_lab(request):
            datacenter.down(name)


def usage(api: ApiClient, by: str = "vm") -> dict[str, dict[str, Any]]:
    rows = api.usage(by)
    key = {"vm": lambda r: f"{r['tenant']}/{r['vm']}",
           "network": lambda r: f"{r['tenant']}/{r['network']}",
           "tenant": lambda r: r["tenant"]}[by]
    return {key(r): r for r in rows}


COUNTS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "dropped_packets",
          "dropped_bytes")


def tenant_counts(api: ApiClient, tenant: str) -> dict[str, int]:
    row = usage(api, "tenant").get(tenant, {})
    return {c: int(row.get(c, 0)) for c in COUNTS}


def polled(lab: Lab, api: ApiClient) -> dict[str, dict[str, Any]]:
    """The usage once the accounting has read every switch (a VM's row appears with its
    first reading), so that a baseline is not taken before counting began."""
    wait_until(lambda: set(lab.vms) <= set(usage(api)), POLL, "the first accounting poll",
               interval=0.5)
    return usage(api)


def field(rows: dict[str, dict[str, Any]], name: str, f: str) -> int:
    return int(rows.get(name, {}).get(f, 0))


def iface(lab: Lab, vm: str, counter: str) -> int:
    v = lab.vm(vm)
    out = lab.exec(vm, ["cat", f"/sys/class/net/{v.ifname}/statistics/{counter}"]).stdout
    return int(out)


def close(a: int, b: int) -> bool:
    return b > 0 and abs(a - b) <= 0.01 * b


def settle(read: Callable[[], int], want: int, label: str) -> int:
    """Wait for the accounting to catch up with `want` (within 1 %); return what it says."""
    seen: list[int] = []

    def caught_up() -> bool:
        seen.append(read())
        return close(seen[-1], want)

    with contextlib.suppress(LabError):  # the assertions below say by how much
        wait_until(caught_up, POLL, label, interval=0.5)
    assert close(seen[-1], want), f"{label}: usage says {seen[-1]}, the interfaces {want}"
    return seen[-1]


def polls(api: ApiClient) -> int:
    """The accounting polls the active controller has completed."""
    return int(api.status()["accounting"]["polls"])


def at_most(api: ApiClient, read: Callable[[], int], want: int, since: int,
            label: str) -> int:
    """Across a hot move: once two polls have completed after the traffic ended (`since`: the
    count then; the poll under way may have read its switch before the end), the count is
    final. It may be short of `want` (the lost last counts) but never over it."""
    wait_until(lambda: polls(api) >= since + 2, POLL, f"{label}: two accounting polls",
               interval=0.5)
    got = read()
    assert got <= want * 1.01, f"{label}: usage says {got}, more than {want}"
    return got


def transfer(lab: Lab, during: Callable[[ApiClient], None], exact: bool = True,
             others_idle: bool = True) -> None:
    """20 MB from acme/web1 (hv1) to acme/web2 over TCP at 40 Mbit/s, plus a counted ping;
    `during` runs once the stream is under way. Checks web1's and web2's usage against web1's
    interface, which stays put (web2's is re-homed by a hot move). Not `exact`: across a hot
    move OVS's userspace datapath loses the last counts of the flows the move deletes (up to
    a revalidator pass, 0.5 s; README, Accounting): nothing may count twice. `others_idle`:
    the other tenant sent nothing in the last poll interval (a lab of its own), so its
    counters must not move; a lab shared with other tests has not read its last traffic yet."""
    web1, web2 = "acme/web1", "acme/web2"
    with datacenter.api_for(lab) as api:
        datacenter.wait_converged(api, 30)
        before = polled(lab, api)
        globex = tenant_counts(api, "globex") if others_idle else None
    tx0, rx0 = iface(lab, web1, "tx_bytes"), iface(lab, web1, "rx_bytes")
    server = lab.spawn(web2, ["iperf3", "-s", "-1", "-B", lab.vm(web2).ip],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: ":5201" in lab.exec(web2, ["ss", "-ltn"]).stdout, 10, "iperf3 -s")
        client = lab.spawn(web1, ["iperf3", "-c", lab.vm(web2).ip, "-n", "20M", "-b", "40M"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: iface(lab, web1, "tx_bytes") - tx0 > 3_000_000, 20,
                   "the stream under way")
        with datacenter.api_for(lab) as api:
            during(api)
        out, _ = client.communicate(timeout=120)
        assert client.returncode == 0, out[-800:]
    finally:
        server.kill()
        server.wait()
    ping = lab.exec(web1, ["ping", "-c", "50", "-i", "0.02", "-s", "1000", lab.vm(web2).ip])
    assert " 0% packet loss" in ping.stdout, ping.stdout[-300:]
    sent, received = iface(lab, web1, "tx_bytes") - tx0, iface(lab, web1, "rx_bytes") - rx0
    assert sent > 20_000_000
    with datacenter.api_for(lab) as api:  # a new client: the controller may have restarted
        counted(api, before, globex, sent, received, exact)


def counted(api: ApiClient, before: dict[str, dict[str, Any]], globex: dict[str, int] | None,
            sent: int, received: int, exact: bool) -> None:
    web1, web2 = "acme/web1", "acme/web2"
    ended = polls(api)
    settle(lambda: field(usage(api), web1, "bytes_out") - field(before, web1, "bytes_out"),
           sent, "acme/web1 bytes out")  # counted at hv1, where web1 stays: exact

    def web1_in() -> int:
        return field(usage(api), web1, "bytes_in") - field(before, web1, "bytes_in")

    def web2_in() -> int:  # every frame web1 sent went to web2 (ARP is answered on hv1)
        return field(usage(api), web2, "bytes_in") - field(before, web2, "bytes_in")

    if exact:
        settle(web1_in, received, "acme/web1 bytes in")
        settle(web2_in, sent, "acme/web2 bytes in")
    else:
        got = (at_most(api, web1_in, received, ended, "acme/web1 bytes in"),
               at_most(api, web2_in, sent, ended, "acme/web2 bytes in"))
        # What is lost is what the switch had not credited to a deleted flow yet: up to one
        # revalidator pass (0.5 s) per deleted delivery flow, 2.5 MB of this 40 Mbit/s
        # stream (seen: 90-99 % counted). Half of it missing would be something else.
        assert got[1] >= sent // 2, f"acme/web2 bytes in: usage says {got[1]} of {sent}"
        print(f"across the hot move: web1 in {got[0]} of {received}, "
              f"web2 in {got[1]} of {sent}")
    if globex is not None:
        assert tenant_counts(api, "globex") == globex, "the other tenant's usage moved"


def test_a_hot_move_mid_transfer_counts_nothing_twice(lab: Lab) -> None:
    def hot_move(_: ApiClient) -> None:
        done = move(lab, "acme/web2", "hv3")
        assert done["result"] == "ok" and done["kind"] == "hot", done

    transfer(lab, hot_move, exact=False)
    assert lab.vm("acme/web2").hypervisor == "hv3"


def test_a_known_volume_counts_within_1_percent_through_a_controller_restart(lab: Lab) -> None:
    ctl = datacenter.lab_controller(lab)

    def restart(_: ApiClient) -> None:
        ctl.stop()
        ctl.start()

    transfer(lab, restart)


def test_traffic_to_another_tenants_address_is_the_senders_drop(lab: Lab) -> None:
    target = lab.vm("globex/web2").ip
    assert target not in {v.ip for v in lab.vms.values() if v.vm_id.startswith("acme/")}
    with datacenter.api_for(lab) as api:
        polled(lab, api)
        before_net = usage(api, "network")
        before_globex = tenant_counts(api, "globex")
        lab.exec("acme/web1", ["ping", "-c", "3", "-i", "0.2", "-W", "1", target], check=False)

        def dropped() -> int:
            return (field(usage(api, "network"), "acme/front", "dropped_packets")
                    - field(before_net, "acme/front", "dropped_packets"))

        wait_until(lambda: dropped() >= 1, POLL, "the ARP requests counted as acme's drops",
                   interval=0.5)
        assert tenant_counts(api, "globex") == before_globex
