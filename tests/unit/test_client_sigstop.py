"""A real hung controller: a tiny HTTP server process, SIGSTOPped. The kernel still accepts its
TCP connections (the listen backlog), so only the client's own timeouts can save it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ClientPool

# Answers GET /api/v1/controller with argv[1] (JSON), /api/v1/tenants with [], else 404.
SERVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
role = sys.argv[1].encode()
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/api/v1/controller": role, "/api/v1/tenants": b"[]"}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.fixture
def controllers() -> Iterator[list[tuple[str, subprocess.Popen[str]]]]:
    procs: list[subprocess.Popen[str]] = []
    out = []
    try:
        for node, term, role in (("stopped", 1, "active"), ("ctl2", 2, "active")):
            info = json.dumps({"role": role, "term": term, "node": node})
            p = subprocess.Popen([sys.executable, "-c", SERVER, info], stdout=subprocess.PIPE,
                                 text=True)
            procs.append(p)
            assert p.stdout is not None
            port = int(p.stdout.readline())  # printed once listening
            out.append((f"http://127.0.0.1:{port}", p))
        yield out
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)  # a stopped process does not act on SIGTERM
            p.terminate()
            p.wait(10)
            if p.stdout is not None:
                p.stdout.close()


def test_a_sigstopped_member_does_not_hold_the_client(controllers) -> None:
    (hung_url, hung), (good_url, _) = controllers
    os.kill(hung.pid, signal.SIGSTOP)
    started = time.monotonic()
    api = ClientPool([hung_url, good_url]).active()
    took = time.monotonic() - started
    api.close()
    assert api.base_url == good_url
    assert took < 1.0

    state = CliState(cache=None)
    started = time.monotonic()
    r = CliRunner().invoke(app, ["-v", "--api", f"{hung_url},{good_url}", "tenant", "list"],
                           obj=state, env={"HYPETUNNEL_API": None, "HYPETUNNEL_LAB": None})
    took = time.monotonic() - started
    assert r.exit_code == 0, r.output
    assert f"probe {hung_url}: " in r.stderr and f"using {good_url}" in r.stderr
    assert took < 1.5  # the 11 s of before: a 10 s timeout on the hung member, then the other
