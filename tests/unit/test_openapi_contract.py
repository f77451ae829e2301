"""The OpenAPI document describes the API as it is: schemathesis, an independent client that
generates requests from /openapi.json, runs every check against the app and finds nothing.

The app is served by uvicorn in a thread of this process (127.0.0.1, an in-memory store with
the three-hypervisor example loaded) and tested by the real `st run` CLI, with a fixed seed and
a bounded number of examples so the run is reproducible and takes well under a minute.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from hypetunnel.api.app import create_app
from hypetunnel.controller.service import FabricService
from hypetunnel.model.intent import Intent
from hypetunnel.store.memory import MemoryStore
from tests.unit.auth_helpers import mint
from tests.unit.contract_hooks import REFUSED_BY, REQUEST_VALIDATION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-hypervisors.yaml"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# A fixed seed and a small budget: reproducible, ~1,200 cases in ~20 s of CPU; 20-45 s of wall
# time on a 2-core machine at load 5-7 (the coverage phase's boundary cases are most of it).
SEED, MAX_EXAMPLES = 7, 10


def contract_app() -> Any:
    service = FabricService(MemoryStore())
    service.apply(Intent.model_validate(yaml.safe_load(EXAMPLE.read_text())))
    app = create_app(service)
    plain = app.exception_handlers[RequestValidationError]

    async def marked(request: Request, exc: Exception) -> Any:
        # Tell the contract hook which 422s come from request validation (see its docstring).
        response = await plain(request, exc)
        response.headers[REFUSED_BY] = REQUEST_VALIDATION
        return response

    app.add_exception_handler(RequestValidationError, marked)
    # An admin token for schemathesis: every route but the health probes needs one. A long
    # name, so that generated token names never revoke it.
    app.state.contract_token = mint(app, name="zz-contract-admin-9f3c7a1e5b2d")
    return app


@contextmanager
def serving() -> Iterator[tuple[str, str]]:
    """The contract app on uvicorn in a thread of this process; yields its base URL and an
    admin token."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = contract_app()
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn stopped"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app.state.contract_token
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.timeout(180)
def test_schemathesis_finds_no_contract_failure(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed (pip install -e '.[test]')"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.unit.contract_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    # The phases in two processes side by side, each against its own app (the stateful phase
    # must not see the other's writes). One worker each: schemathesis' worker threads can
    # trip CPython 3.11's thread-unsafe ast.parse (hypothesis describes its lambdas with it).
    with serving() as first, serving() as second, ExitStack() as procs:
        runs = []
        for (url, token), phases in ((first, "coverage"),
                                     (second, "examples,fuzzing,stateful")):
            work = tmp_path / phases.replace(",", "-")
            work.mkdir()
            runs.append(procs.enter_context(subprocess.Popen(
                [st, "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
                 "--checks", "all", "--phases", phases, "--seed", str(SEED),
                 "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--no-color",
                 "--header", f"Authorization: Bearer {token}",
                 # /readyz answers 503 by design while not ready, and this app has no
                 # runtime; tests/unit/test_health.py covers it.
                 "--exclude-path", "/api/v1/readyz"],
                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)))
        reports = [run.communicate(timeout=150)[0] for run in runs]
    took = time.monotonic() - started
    for run, report in zip(runs, reports, strict=True):
        assert run.returncode == 0, report[-6000:]
        assert " passed" in report, report[-3000:]
    print(f"schemathesis: {took:.1f} s")
