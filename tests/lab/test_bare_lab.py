"""`lab up --bare`: hosts with nothing configured, reached by ssh (host keys checked) and
Ansible over the real transport from the operator's namespace, adopted once their Open
vSwitch exists, and removed without a trace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hypetunnel.client import ApiClient, ClientError
from hypetunnel.errors import HypeTunnelError
from hypetunnel.lab import bare, barehost, datacenter, operator
from hypetunnel.lab.adoption import ovs_rundir
from hypetunnel.lab.netns import netns_exists, netns_list, netns_pids
from hypetunnel.lab.proc import LabError, pid_alive, run, wait_until
from hypetunnel.lab.state import DEFAULT_ROOT, LabBareHost
from hypetunnel.lab.topology import Lab
from hypetunnel.pki import init_ca, issue

pytestmark = pytest.mark.lab

HOSTS = ("hv1", "hv2", "hv3")
SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def hypetunnel(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hypetunnel", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    name = f"bare{os.getpid() % 100000}"
    datacenter.down(name)
    hosts = tmp_path_factory.mktemp("bare") / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": [{"name": n} for n in HOSTS]}))
    try:
        cp = hypetunnel("lab", "up", "--bare", str(hosts), "--name", name)
        assert cp.returncode == 0, cp.stderr
        assert "inventory" in cp.stdout and "lab operator" in cp.stdout
        yield Lab.load(name)
    finally:
        datacenter.down(name)


def ssh(lab: Lab, address: str, *command: str, known_hosts: Path | None = None,
        extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """ssh from the operator's namespace with the lab's client options."""
    opts = ["-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts else []
    return run(["ssh", "-F", str(operator.ssh_config_path(lab.state)), "-o",
                "ControlMaster=no", "-o", "ConnectTimeout=10", *opts, *extra, address,
                *command], netns=lab.operator_netns, check=False, timeout=30)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_hosts_have_nothing_configured(lab: Lab) -> None:
    assert sorted(lab.bare_hosts) == sorted(HOSTS)
    for h in lab.bare_hosts.values():
        # No Open vSwitch: no daemon in the namespace, no bridge, no database anywhere.
        assert {comm(p) for p in netns_pids(h.netns)} == {"sshd"}, h.name
        links = run(["ip", "-n", h.netns, "-br", "link"]).stdout
        assert sorted(line.split()[0].split("@")[0] for line in links.splitlines()) == \
            ["eth0", "lo", "oob0"], links
        assert not (Path(h.root) / "var/run/openvswitch").exists()
        addrs = run(["ip", "-n", h.netns, "-br", "-4", "addr"]).stdout
        assert f"{h.underlay_ip}/{h.prefixlen}" in next(
            line for line in addrs.splitlines() if line.startswith("eth0"))
        assert f"{h.oob_ip}/{h.oob_prefixlen}" in next(
            line for line in addrs.splitlines() if line.startswith("oob0"))
        sysctl = run(["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"], netns=h.netns)
        assert sysctl.stdout.strip() == "1"
        offload = run(["ethtool", "-k", "eth0"], netns=h.netns).stdout
        assert "tx-checksumming: off" in offload
        assert h.root == str(lab.directory / "hosts" / h.name)


def test_sshd_lets_root_in_by_key_only(lab: Lab) -> None:
    for h in lab.bare_hosts.values():
        sshd = barehost.host_sshd(h)
        effective = run(["/usr/sbin/sshd", "-T", "-f", str(sshd.config)], netns=h.netns).stdout
        for setting in ("permitrootlogin without-password", "passwordauthentication no",
                        "usepam no", "kbdinteractiveauthentication no",
                        f"listenaddress {h.oob_ip}:22", f"pidfile {sshd.pidfile}"):
            assert setting in effective, (h.name, setting)
        assert str(sshd.pidfile).startswith(h.root) and sshd.running()
    h1 = lab.bare_hosts["hv1"]
    # Without the operator's key nothing gets in (no password, no keyboard-interactive).
    cp = ssh(lab, h1.oob_ip, "true", extra=("-o", "IdentityFile=/dev/null",
                                             "-o", "PreferredAuthentications=password"))
    assert cp.returncode == 255 and "Permission denied" in cp.stderr, cp.stderr


def test_ssh_reaches_every_host_with_its_known_key(lab: Lab) -> None:
    for h in lab.bare_hosts.values():
        cp = ssh(lab, h.oob_ip, "ip -br -4 addr")
        assert cp.returncode == 0, cp.stderr
        assert h.oob_ip in cp.stdout and h.underlay_ip in cp.stdout  # that host, not another


def test_ssh_refuses_a_wrong_or_unknown_host_key(lab: Lab, tmp_path: Path) -> None:
    h1, h2 = lab.bare_hosts["hv1"], lab.bare_hosts["hv2"]
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"{h1.oob_ip} {barehost.host_sshd(h2).host_public_key()}\n")
    cp = ssh(lab, h1.oob_ip, "true", known_hosts=wrong)
    assert cp.returncode == 255 and "Host key verification failed" in cp.stderr, cp.stderr
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    cp = ssh(lab, h1.oob_ip, "true", known_hosts=empty)  # no trust on first use
    assert cp.returncode == 255 and "Host key verification failed" in cp.stderr, cp.stderr
    assert empty.read_text() == ""


def test_ssh_listens_on_the_out_of_band_address_only(lab: Lab) -> None:
    h1, h2 = lab.bare_hosts["hv1"], lab.bare_hosts["hv2"]
    probe = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 22), 5)\n"
             " print('open')\nexcept OSError as e:\n print('closed', e)")
    cp = run([sys.executable, "-c", probe, h1.underlay_ip], netns=h2.netns)
    assert cp.stdout.startswith("closed"), cp.stdout  # the underlay reaches hv1, sshd does not
    assert run(["ping", "-c1", "-W2", h1.underlay_ip], netns=h2.netns,
               check=False).returncode == 0


def test_inventory_groups_and_host_vars(lab: Lab) -> None:
    inv = yaml.safe_load(operator.inventory_path(lab.state).read_text())["all"]
    groups = inv["children"]
    assert list(groups["hypervisors"]["hosts"]) == list(HOSTS)
    assert list(groups["controllers"]["hosts"]) == ["hv1", "hv2"]
    assert list(groups["etcd"]["hosts"]) == ["hv1", "hv2", "hv3"]
    assert inv["vars"]["hypetunnel_pki_dir"] == str(lab.directory / "ansible" / "pki")
    for i, name in enumerate(HOSTS, start=1):
        v = groups["hypervisors"]["hosts"][name]
        assert v == {**v, "ansible_host": f"198.18.0.{10 + i}",
                     "hypetunnel_host_root": str(lab.directory / "hosts" / name),
                     "hypetunnel_service_manager": "lab", "ovs_datapath_type": "netdev",
                     "underlay_interface": "eth0", "underlay_ip": f"172.31.0.{10 + i}",
                     "underlay_prefixlen": 24, "mgmt_ip": f"100.64.0.{10 + i}",
                     "mgmt_prefixlen": 24}


def test_ansible_ping_over_ssh_from_the_operator_namespace(lab: Lab) -> None:
    cp = hypetunnel("lab", "operator", "--name", lab.name, "--", "ansible", "all", "-m",
                    "ping", "-o")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for name in HOSTS:
        assert f"{name} | SUCCESS" in cp.stdout, cp.stdout
    # The real transport: the connection was ssh, through the lab's own control sockets.
    cp = hypetunnel("lab", "operator", "--name", lab.name, "--", "ansible", "hv2", "-m",
                    "command", "-a", "ip -br -4 addr show oob0", "-o")
    assert cp.returncode == 0 and lab.bare_hosts["hv2"].oob_ip in cp.stdout, cp.stdout
    assert any((lab.directory / "ansible" / "cp").iterdir())


def simulate_openvswitch_role(host: LabBareHost) -> None:
    """What the openvswitch role does on a host (INTERFACES.md §3), by hand: both daemons in
    the host's namespace with the role's layout, br-phy holding the underlay address, br-int."""
    rundir, dbdir = ovs_rundir(host), Path(host.root) / "etc/openvswitch"
    logdir = Path(host.root) / "var/log/openvswitch"
    for d in (rundir, dbdir, logdir):
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OVS_RUNDIR": str(rundir), "OVS_DBDIR": str(dbdir),
           "OVS_LOGDIR": str(logdir), "OVS_SYSCONFDIR": str(Path(host.root) / "etc")}
    db, sock = dbdir / "conf.db", f"unix:{rundir}/db.sock"
    run(["ovsdb-tool", "create", str(db), SCHEMA])
    run(["ovsdb-server", str(db), f"--remote=punix:{rundir}/db.sock",
         f"--pidfile={rundir}/ovsdb-server.pid", f"--unixctl={rundir}/ovsdb-server.ctl",
         f"--log-file={logdir}/ovsdb-server.log", "--detach", "--no-chdir"],
        netns=host.netns, env=env)
    run(["ovs-vsctl", f"--db={sock}", "--no-wait", "init"], env=env)
    run(["ovs-vswitchd", sock, f"--pidfile={rundir}/ovs-vswitchd.pid",
         f"--unixctl={rundir}/ovs-vswitchd.ctl", f"--log-file={logdir}/ovs-vswitchd.log",
         "--detach", "--no-chdir", "--disable-system"], netns=host.netns, env=env)
    run(["ovs-vsctl", f"--db={sock}", "--timeout=20",
         "--may-exist", "add-br", "br-phy", "--", "set", "Bridge", "br-phy",
         "datapath_type=netdev", "--", "--may-exist", "add-port", "br-phy", "eth0",
         "--", "--may-exist", "add-br", "br-int", "--", "set", "Bridge", "br-int",
         "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
         "other_config:disable-in-band=true"], env=env)
    address = f"{host.underlay_ip}/{host.prefixlen}"
    run(["ip", "-n", host.netns, "addr", "del", address, "dev", "eth0"])
    run(["ip", "-n", host.netns, "addr", "replace", address, "dev", "br-phy"])
    run(["ip", "-n", host.netns, "link", "set", "br-phy", "up"])


def test_adopt_a_host_the_roles_configured_and_plug_a_vm(lab: Lab) -> None:
    h1 = lab.bare_hosts["hv1"]
    with pytest.raises(LabError, match="bare host hv1: no running ovsdb-server"):
        lab.adopt_bare(["hv1"])  # nothing configured yet: refused, nothing recorded
    assert Lab.load(lab.name).hypervisors == {}
    simulate_openvswitch_role(h1)
    with pytest.raises(LabError, match="bare host hv2: no running ovsdb-server"):
        lab.adopt_bare(["hv2"])
    (hv,) = lab.adopt_bare(["hv1"])
    assert hv.adopted and hv.ovs_dir == str(Path(h1.root) / "var/run/openvswitch")
    assert lab.hypervisor_alive("hv1") and hv.datapath_type == "netdev"
    vm = lab.add_vm("acme/web1", "hv1", mac="02:00:00:00:b0:01", ip="10.9.0.10", prefixlen=24)
    iface = hv.ovs.vsctl("--columns=external_ids", "list", "Interface", vm.port)
    assert 'iface-id="acme/web1"' in iface, iface
    assert vm.port in hv.ovs.vsctl("list-ports", "br-int").split()
    # The lab leaves the roles' Open vSwitch alone.
    with pytest.raises(LabError, match="belongs to its Ansible roles"):
        lab.restart_hypervisor("hv1")
    # Another process sees the adoption (the CLI, the compute agent).
    assert Lab.load(lab.name).hypervisor("hv1").adopted


def start_role_controller(lab: Lab, pki: Path) -> subprocess.Popen[bytes]:
    """A controller as the controller role runs it on hv1: in the host's namespace, HTTPS on
    its management address (on br-mgmt's internal port, without the roles' tunnels), its
    state and admin token under the host's root."""
    h1 = lab.bare_hosts["hv1"]
    init_ca(pki, common_name="bare test CA")
    issue(pki, "ctl1", ips=[h1.mgmt_ip])
    lab.hypervisor("hv1").ovs.vsctl("--may-exist", "add-br", "br-mgmt", "--", "set", "Bridge",
                                    "br-mgmt", "datapath_type=netdev")
    run(["ip", "-n", h1.netns, "addr", "replace", f"{h1.mgmt_ip}/24", "dev", "br-mgmt"])
    run(["ip", "-n", h1.netns, "link", "set", "br-mgmt", "up"])
    state_dir = Path(h1.root) / "var/lib/hypetunnel"
    state_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["ip", "netns", "exec", h1.netns, sys.executable, "-m", "hypetunnel", "controller",
         "run", "--state-dir", str(state_dir), "--api", f"{h1.mgmt_ip}:8650",
         "--openflow", f"pssl:{h1.mgmt_ip}:6653", "--tls-dir", str(pki), "--tls-name", "ctl1"],
        stdout=(Path(h1.root) / "controller.log").open("ab"), stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)


def test_attach_reaches_the_roles_controller_and_plugs_where_it_places(
        lab: Lab, tmp_path: Path) -> None:
    h1 = lab.bare_hosts["hv1"]
    pki = tmp_path / "pki"
    ctl = start_role_controller(lab, pki)
    try:
        token_file = Path(h1.root) / "var/lib/hypetunnel/admin.token"
        wait_until(lambda: token_file.exists() or ctl.poll() is not None, 30, "the token")
        assert ctl.poll() is None
        lab = Lab.load(lab.name)
        lab.attach_api([f"https://{h1.mgmt_ip}:8650"], pki / "ca.crt", token_file)

        def healthy() -> bool:
            try:
                with datacenter.api_for(Lab.load(lab.name)) as api:
                    return api.controller().get("role") == "active"
            except HypeTunnelError:
                return False

        wait_until(healthy, 30, "the controller's API through the forwarder")
        # The CLI: `lab attach` with its default URLs (both inventory controllers: hv2 has
        # none running, the pool finds hv1's active one) and token file.
        cp = hypetunnel("lab", "attach", "--name", lab.name, "--host", "hv1", "--ca",
                        str(pki / "ca.crt"), "--no-agent")
        assert cp.returncode == 0 and "active" in cp.stdout + cp.stderr, cp.stderr
        cp = hypetunnel("--lab", lab.name, "status")
        assert cp.returncode == 0, cp.stdout + cp.stderr
        # The token and TLS are end to end: a wrong token is refused by the controller.
        lab = Lab.load(lab.name)
        assert lab.state.api_targets == [f"https://{h.mgmt_ip}:8650"
                                         for h in (h1, lab.bare_hosts["hv2"])]
        url = (lab.api_url or "").split(",")[0]
        real = token_file.read_text().strip()
        wrong = real[:-1] + ("A" if real[-1] != "A" else "B")
        with ApiClient(url, ca=pki / "ca.crt", token=wrong) as bad, \
                pytest.raises(ClientError) as refused:
            bad.get_intent()
        assert "401" in str(refused.value) or "token" in str(refused.value), refused.value
        with ApiClient(url, ca=pki / "ca.crt", token=real) as good:
            assert "tenants" in good.get_intent()
        intent = {"hypervisors": [{"name": "hv1", "underlay_ip": h1.underlay_ip,
                                   "ovsdb": f"ssl:{h1.mgmt_ip}:6640"}],
                  "tenants": [{"name": "acme", "networks": [{"name": "front",
                                                             "cidr": "10.9.0.0/24"}],
                               "vms": [{"name": "web1", "network": "front", "hypervisor": "hv1",
                                        "ip": "10.9.0.10", "mac": "02:00:00:00:b0:01"},
                                       {"name": "web2", "network": "front", "hypervisor": "hv1",
                                        "ip": "10.9.0.11", "mac": "02:00:00:00:b0:02"}]}]}
        with datacenter.api_for(lab) as api:
            api.apply(intent)
            datacenter.sync_vms(lab, api)
        lab = Lab.load(lab.name)
        assert sorted(lab.vms) == ["acme/web1", "acme/web2"]
        hv = lab.hypervisor("hv1")
        port = lab.vm("acme/web2").port
        assert 'iface-id="acme/web2"' in hv.ovs.vsctl("--columns=external_ids", "list",
                                                       "Interface", port)
    finally:
        ctl.kill()
        ctl.wait(10)


def test_lab_down_leaves_nothing(lab: Lab) -> None:
    st = Lab.load(lab.name).state
    sshd_pids = [p for h in st.bare_hosts.values() if (p := barehost.host_sshd(h).pid())]
    ovs_pids = [p for hv in st.hypervisors.values() for p in hv.ovs.pids()]
    assert len(sshd_pids) == len(HOSTS) and len(ovs_pids) == 2
    prefix = f"ht-{lab.name}-"
    cp = hypetunnel("lab", "down", lab.name)
    assert cp.returncode == 0, cp.stderr
    assert not [n for n in netns_list() if n.startswith(prefix)]
    assert not [n for n in (*st.namespaces, lab.operator_netns) if netns_exists(n)]
    assert not [p for p in (*sshd_pids, *ovs_pids) if pid_alive(p)]
    assert not lab.directory.exists()
    assert lab.directory.parent == DEFAULT_ROOT
    root_links = run(["ip", "-br", "link"]).stdout
    for h in st.bare_hosts.values():
        assert h.uplink not in root_links and h.oob_port not in root_links


def test_destroy_after_a_crash_removes_a_bare_lab_without_its_state(tmp_path: Path) -> None:
    """The state file lost (a crash while writing it, a wiped directory): the namespaces are
    still found by the lab's prefix, and the sshd and whatever ran in them die with them."""
    name = f"bare{os.getpid() % 100000}x"
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": [{"name": "hv1"}]}))
    try:
        crashed = bare.up(hosts, name)
        sshd_pid = barehost.host_sshd(crashed.bare_hosts["hv1"]).pid()
        assert sshd_pid is not None and pid_alive(sshd_pid)
        (crashed.directory / "state.json").unlink()
        Lab.destroy(name)
        assert not [n for n in netns_list() if n.startswith(f"ht-{name}-")]
        assert not pid_alive(sshd_pid)
        assert not crashed.directory.exists()
    finally:
        datacenter.down(name)
