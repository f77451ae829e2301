"""Certificate rotation without a restart: a context built from an Identity serves the new
certificate on its next handshake after `reload_all`; a half-done rotation changes nothing."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from hypetunnel.errors import HypeTunnelError
from hypetunnel.pki import Identity, client_context, init_ca, issue, reload_all, server_context


def served_serial(server: ssl.SSLContext, client: ssl.SSLContext) -> int:
    """One handshake over a socketpair: the serial of the certificate the server presented."""
    a, b = socket.socketpair()
    done: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError) as e:
            done.append(e)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client.wrap_socket(b, server_hostname="ctl1") as c:
            der = c.getpeercert(binary_form=True)
            c.sendall(b"x")
    finally:
        t.join(10)
    assert der is not None and not done, done
    return x509.load_der_x509_certificate(der).serial_number


def serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_a_reloaded_context_presents_the_new_certificate(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue(tmp_path, "ctl1")
    issue(tmp_path, "hv1")
    ctl1 = Identity.in_directory(tmp_path, "ctl1")
    server = server_context(ctl1)
    client = client_context(Identity.in_directory(tmp_path, "hv1"))
    old = serial(tmp_path / "ctl1.crt")
    assert served_serial(server, client) == old
    issue(tmp_path, "ctl1")  # rotated on disk: the live context still has the old one
    assert served_serial(server, client) == old
    assert reload_all(ctl1) == 1
    new = serial(tmp_path / "ctl1.crt")
    assert new != old and served_serial(server, client) == new


def test_a_certificate_that_does_not_match_its_key_changes_nothing(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue(tmp_path, "ctl1")
    issue(tmp_path, "hv1")
    ctl1 = Identity.in_directory(tmp_path, "ctl1")
    server = server_context(ctl1)
    client = client_context(Identity.in_directory(tmp_path, "hv1"))
    old = serial(tmp_path / "ctl1.crt")
    key = (tmp_path / "ctl1.key").read_bytes()
    issue(tmp_path, "ctl1")
    (tmp_path / "ctl1.key").write_bytes(key)  # the new certificate with the old key
    with pytest.raises(HypeTunnelError, match="the current certificates stay"):
        reload_all(ctl1)
    assert served_serial(server, client) == old
