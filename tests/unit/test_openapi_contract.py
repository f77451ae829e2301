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
from tests.unit.contract_hooks import REFUSED_BY, REQUEST_VALIDATION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-hypervisors.yaml"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# A fixed seed and a small budget: reproducible, and ~10 s of CPU (under a minute on a busy
# 2-core machine, where the run is bound by request latency more than by work).
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
    return app


@pytest.fixture
def served() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(contract_app(), log_level="critical",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.timeout(180)
def test_schemathesis_finds_no_contract_failure(served: str, tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed (pip install -e '.[test]')"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.unit.contract_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    run = subprocess.run(
        [st, "--config-file", str(CONFIG), "run", f"{served}/openapi.json", "--checks", "all",
         "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "2",
         "--no-color"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    took = time.monotonic() - started
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    assert " passed" in report and "failures" not in report.split("SUMMARY")[-1], report[-3000:]
    print(f"schemathesis: {took:.1f} s")
