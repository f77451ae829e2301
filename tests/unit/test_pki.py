"""The PKI: CA, issue (CN, SANs, key mode, serials, rotation), list, TLS contexts, the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from typer.testing import CliRunner

from hypetunnel.cli.main import app
from hypetunnel.pki import (
    Identity,
    PkiError,
    client_context,
    init_ca,
    issue,
    list_certificates,
    peer_common_name,
    server_context,
)

T = TypeVar("T")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_issue_names_the_identity_in_cn_and_san(tmp_path: Path) -> None:
    init_ca(tmp_path)
    crt, key = issue(tmp_path, "hv7", ips=["100.64.0.11"], dns=["hv7.example"])
    cert = _cert(crt)
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    assert cn == "hv7"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hv7", "hv7.example"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["100.64.0.11"]
    assert cert.issuer == _cert(tmp_path / "ca.crt").subject
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600


def test_reissue_rotates_key_and_serial_and_init_keeps_the_ca(tmp_path: Path) -> None:
    init_ca(tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    crt, key = issue(tmp_path, "hv1")
    first, first_key = _cert(crt).serial_number, key.read_bytes()
    issue(tmp_path, "hv1")
    assert _cert(crt).serial_number != first
    assert key.read_bytes() != first_key
    init_ca(tmp_path)  # again: must not orphan what was issued
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


class _OvsKeyAndCert:
    """Open vSwitch 3.1's rule for a key and certificate pair (stream_ssl_set_key_and_cert,
    run on every trip through its main loop): reload both only when the key's mtime changed
    and then the certificate's too; each look records what it compared."""

    def __init__(self, key: Path, cert: Path) -> None:
        self.key, self.cert = key, cert
        self.seen = {key: key.stat().st_mtime_ns, cert: cert.stat().st_mtime_ns}
        self.loaded = cert.read_bytes()

    def _changed(self, path: Path) -> bool:
        now = path.stat().st_mtime_ns
        changed, self.seen[path] = now != self.seen[path], now
        return changed

    def look(self) -> None:
        if self._changed(self.key) and self._changed(self.cert):
            self.loaded = self.cert.read_bytes()


def test_a_reissue_is_picked_up_by_open_vswitch_whenever_it_looks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hypetunnel.pki import authority

    init_ca(tmp_path)
    crt, key = issue(tmp_path, "hv1")
    ovs = _OvsKeyAndCert(key, crt)
    real_write = authority._write_private
    writes = iter(range(1, 100))

    def write_then_look(path: Path, data: bytes, mode: int) -> None:
        # Distinct mtimes even on a coarse clock: each write is a later tick.
        real_write(path, data, mode)
        t = ovs.seen[path] + next(writes) * 1_000_000
        os.utime(path, ns=(t, t))
        ovs.look()  # ovs-vswitchd runs between (and after) the two files' writes

    monkeypatch.setattr(authority, "_write_private", write_then_look)
    issue(tmp_path, "hv1")
    ovs.look()
    assert ovs.loaded == crt.read_bytes()


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"name": "bad name"}, "NAME: 'bad name' is not a valid certificate name"),
    ({"name": "ca"}, "reserved for the CA"),
    ({"name": "hv1", "ips": ["300.1.1.1"]}, "--ip: '300.1.1.1' is not an IP address"),
    ({"name": "hv1", "days": 0}, "--days: 0 is out of range"),
])
def test_bad_input_names_the_field_and_writes_nothing(tmp_path: Path, kwargs: dict[str, object],
                                                      says: str) -> None:
    init_ca(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(PkiError, match=says.replace("(", r"\(").replace(".", r"\.")):
        issue(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_issue_without_a_ca_says_to_init(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"has no CA .*pki init"):
        issue(tmp_path, "hv1")


def test_list_shows_ca_first_with_expiry(pki: Path) -> None:
    certs = list_certificates(pki)
    assert [c.name for c in certs] == ["ca", "controller", "hv1", "hv2"]
    assert certs[0].is_ca and not any(c.is_ca for c in certs[1:])
    assert all(c.expires_in().days >= 363 for c in certs)
    assert len({c.serial for c in certs}) == 4


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext
                     ) -> tuple[str | None, str | None]:
    """Both ends' view of the peer CN after a TLS connection over loopback."""
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(peer_common_name(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        client_saw = peer_common_name(writer.get_extra_info("ssl_object"))
        # With TLS 1.3 the client is done before the server has judged its certificate: only
        # the server's first word tells whether it accepted us.
        if await reader.read(2) != b"ok":
            raise ConnectionError("the server closed the connection")
        server_saw = await asyncio.wait_for(seen, 5)
        writer.close()
        return server_saw, client_saw
    finally:
        srv.close()
        await srv.wait_closed()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_mutual_tls_tells_each_side_who_the_other_is(pki: Path) -> None:
    server = server_context(Identity.in_directory(pki, "controller"))
    client = client_context(Identity.in_directory(pki, "hv1"))
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server.verify_mode is ssl.CERT_REQUIRED
    assert run(_handshake(server, client)) == ("hv1", "controller")


def test_a_client_of_another_ca_is_refused(pki: Path, other_ca: Path) -> None:
    server = server_context(Identity.in_directory(pki, "controller"))
    stranger = client_context(Identity.in_directory(other_ca, "hv1"))
    # Each side rejects the other's chain; whichever notices first ends the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError,
                        TimeoutError)):
        run(_handshake(server, stranger))


def test_a_client_without_certificate_is_refused(pki: Path) -> None:
    server = server_context(Identity.in_directory(pki, "controller"))
    anonymous = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    anonymous.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError,
                        TimeoutError)):
        run(_handshake(server, anonymous))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    from hypetunnel.errors import HypeTunnelError

    init_ca(tmp_path)
    with pytest.raises(HypeTunnelError, match=r"certificate .*ghost\.crt does not exist"):
        server_context(Identity.in_directory(tmp_path, "ghost"))


def test_cli_init_issue_list(tmp_path: Path) -> None:
    runner = CliRunner()
    d = str(tmp_path / "pki")
    r = runner.invoke(app, ["pki", "issue", "hv1", "--dir", d])
    assert r.exit_code == 1 and "has no CA" in r.output
    assert runner.invoke(app, ["pki", "init", "--dir", d]).exit_code == 0
    r = runner.invoke(app, ["pki", "issue", "hv1", "--dir", d, "--ip", "10.0.0.1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["pki", "issue", "no/slash", "--dir", d])
    assert r.exit_code == 1 and "NAME: 'no/slash' is not a valid certificate name" in r.output
    r = runner.invoke(app, ["pki", "list", "--dir", d])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith("ca ") and "CA serial" in lines[0]
    assert lines[1].startswith("hv1 ") and "CN=hv1" in lines[1] and "IP:10.0.0.1" in lines[1]
    assert "days left" in lines[1]


def test_controller_run_refuses_tls_name_without_dir(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["controller", "run", "--state-dir", str(tmp_path / "s"),
                                 "--tls-name", "ctl1"])
    assert r.exit_code == 2 and "--tls-name: needs --tls-dir" in r.output


def test_lab_identity_is_issued_once_and_again_only_for_a_new_address(tmp_path: Path) -> None:
    from hypetunnel.lab.pki import ensure_identity

    init_ca(tmp_path)
    ident = ensure_identity(tmp_path, "ctl1")
    first = _cert(ident.cert).serial_number
    assert ensure_identity(tmp_path, "ctl1", [None]).cert == ident.cert
    assert _cert(ident.cert).serial_number == first  # nothing missing: kept
    ensure_identity(tmp_path, "ctl1", ["100.64.0.101"])  # placed since: reissued with its IP
    cert = _cert(ident.cert)
    assert cert.serial_number != first
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["100.64.0.101"]
