"""The lab's compute agent polls cheaply while idle: one kept-open client, no sync (no lab
reload, no VM comparison) unless the intent or the lab state changed or a VM is waiting.
(It used to build a new HTTP client, with its TLS context, 10 times a second: ~35 % of a core.)
Fakes replace the lab and the API; the real agent is exercised by the lab tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.lab import datacenter


class Stop(Exception):
    pass


class FakeApi:
    def __init__(self, world: World) -> None:
        self.world = world
        self.base_url = "http://127.0.0.1:1"
        self.closed = False

    def get_intent(self) -> dict[str, Any]:
        if self.world.fail_next:
            self.world.fail_next = False
            raise ConnectionError("controller restarting")
        return dict(self.world.intent)

    def close(self) -> None:
        self.closed = True


class FakeVm:
    def __init__(self, netns: str) -> None:
        self.netns = netns
        self.owns_netns = True


class FakeLab:
    def __init__(self, directory: Path, vms: dict[str, FakeVm]) -> None:
        self.directory = directory
        self.api_url = "http://127.0.0.1:1"
        self.vms = vms


class World:
    """What the agent sees, and what it did, poll by poll."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.dir = tmp_path
        (tmp_path / "state.json").write_text("{}")
        self.intent: dict[str, Any] = {"tenants": []}
        self.fail_next = False
        self.in_line = True
        self.syncs = 0
        self.clients: list[FakeApi] = []
        self.steps: list[Any] = []  # a callable per poll, run before the agent's next poll
        self.polls = 0
        self.vms: dict[str, FakeVm] = {}
        self.namespaces: set[str] = set()  # the VM namespaces that exist
        monkeypatch.setattr(datacenter.Lab, "load",
                            classmethod(lambda cls, n: FakeLab(self.dir, dict(self.vms))))
        monkeypatch.setattr(datacenter, "netns_exists", lambda ns: ns in self.namespaces)
        monkeypatch.setattr(datacenter, "api_for", self.api_for)
        monkeypatch.setattr(datacenter, "sync_vms", self.sync_vms)
        monkeypatch.setattr(datacenter.time, "sleep", self.sleep)

    def api_for(self, lab: Any) -> FakeApi:
        self.clients.append(FakeApi(self))
        return self.clients[-1]

    def sync_vms(self, lab: Any, api: Any, progress: Any, doc: Any = None) -> bool:
        assert doc == self.intent  # the polled intent is handed on, not fetched again
        self.syncs += 1
        return self.in_line

    def sleep(self, _: float) -> None:
        self.polls += 1
        if self.polls > len(self.steps):
            raise Stop
        self.steps[self.polls - 1]()

    def run(self, steps: list[Any]) -> None:
        self.steps = steps
        with pytest.raises(Stop):
            datacenter.run_agent("lab", recheck=3600)


def idle() -> None:
    pass


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return World(tmp_path, monkeypatch)


def test_idle_polls_neither_sync_nor_reconnect(world: World) -> None:
    world.run([idle] * 50)
    assert world.syncs == 1  # the first poll
    assert len(world.clients) == 1 and not world.clients[0].closed


def test_an_intent_change_is_synced_at_the_next_poll(world: World) -> None:
    def create_vm() -> None:
        world.intent = {"tenants": [{"name": "acme", "vms": [{"name": "web9"}]}]}

    world.run([idle, idle, create_vm, idle, idle])
    assert world.syncs == 2


def test_a_lab_state_change_is_synced_too(world: World) -> None:
    def touch() -> None:
        path = world.dir / "state.json"
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    world.run([idle, touch, idle, idle])
    assert world.syncs == 2


def test_a_vm_waiting_for_its_hypervisor_is_retried_every_poll(world: World) -> None:
    world.in_line = False

    def hypervisor_back() -> None:
        world.in_line = True

    world.run([idle, idle, hypervisor_back, idle, idle])
    assert world.syncs == 4  # polls 1-3 found a VM waiting; poll 4 synced it; poll 5 idle


def test_a_failed_poll_reconnects_and_syncs_again(world: World) -> None:
    def restart() -> None:
        world.fail_next = True

    world.run([idle, restart, idle, idle])
    assert len(world.clients) == 2 and world.clients[0].closed
    assert world.syncs == 2  # after reconnecting, nothing is assumed about what it missed


def test_a_crashed_vm_is_looked_at_every_poll_until_its_namespace_is_back(
        world: World) -> None:
    """A restart the controller asks for is no intent change: the agent notices the dead VM
    by its namespace, at once, and keeps syncing (asking for restarts) until it is back."""
    world.vms = {"acme/web1": FakeVm("ht-vm-web1")}
    world.namespaces = {"ht-vm-web1"}

    def crash() -> None:
        world.namespaces.clear()

    def restarted() -> None:
        world.namespaces.add("ht-vm-web1")

    world.run([idle, idle, crash, idle, restarted, idle, idle])
    assert world.syncs == 3  # the first poll, then polls 4 and 5 (it was dead); then idle
