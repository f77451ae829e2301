"""hypetunnel.fabric's module_utils client over a unix socket (`unix:/path`, the lab's API):
HTTPS through the socket, the certificate checked against the CA (no host name to check)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from hypetunnel.pki import init_ca, issue

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ansible"))
from ansible_collections.hypetunnel.fabric.plugins.module_utils import (
    hypetunnel_api as ht,
)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "auth": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(sock_path: Path, cert: Path, key: Path) -> socket.socket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(sock_path))
    srv.listen(4)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    Handler(tls, ("unix", 0), None)  # type: ignore[arg-type]
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=loop, daemon=True).start()
    return srv


@pytest.fixture(autouse=True)
def http_connect_restored() -> Iterator[None]:
    """ansible.module_utils.urls patches http.client.HTTPConnection.connect for a unix socket
    and restores it only when the request succeeds (no try/finally around its yield): after the
    refused handshake below, every later HTTP client of this pytest process would dial the
    socket's code. Modules run in a process of their own, so only tests see this; undo it here."""
    connect = http.client.HTTPConnection.connect
    yield
    http.client.HTTPConnection.connect = connect  # type: ignore[method-assign]


@pytest.fixture
def pki(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the socket of an HTTPS server with a certificate of the CA, the CA)."""
    init_ca(tmp_path / "pki")
    cert, key = issue(tmp_path / "pki", "ctl1", ips=["192.0.2.1"])
    srv = serve(tmp_path / "api.sock", cert, key)
    try:
        yield tmp_path / "api.sock", tmp_path / "pki" / "ca.crt"
    finally:
        srv.close()


def test_member_speaks_https_through_a_unix_socket(pki: tuple[Path, Path]) -> None:
    sock, ca = pki
    m = ht.Member(f"unix:{sock}", "ht.admin.secret", str(ca), 5.0)
    answer = m.request("GET", "/controller")
    assert answer == {"path": "/api/v1/controller", "auth": "Bearer ht.admin.secret"}


def test_a_foreign_ca_is_refused_through_the_socket(pki: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    sock, _ = pki
    init_ca(tmp_path / "foreign")
    m = ht.Member(f"unix:{sock}", "t", str(tmp_path / "foreign" / "ca.crt"), 5.0)
    with pytest.raises(ht.ApiError) as err:
        m.request("GET", "/controller")
    assert "TLS" in str(err.value)


@pytest.mark.parametrize(("url", "ok"), [
    ("https://100.64.0.10:8650", True), ("unix:/run/ht/api.sock", True),
    ("http://100.64.0.10:8650", False), ("unix:relative.sock", False), ("/run/api.sock", False)])
def test_valid_url(url: str, ok: bool) -> None:
    assert ht.valid_url(url) is ok
