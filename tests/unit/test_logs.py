"""The daemon's JSON log lines: one object per line, the core fields, extras, tracebacks."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from hypetunnel.logs import TEXT_FORMAT, JsonFormatter


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("hypetunnel.test.logs")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_core_fields_and_extras(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.info("switch %s connected", "hv1", extra={"hypervisor": "hv1", "dpid": 42,
                                                    "path": Path("/x")})
    log.warning("two\nlines and a \"quote\"")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second, third = lines(stream)  # exactly three lines, each parses
    assert first["msg"] == "switch hv1 connected"
    assert (first["level"], first["logger"]) == ("info", "hypetunnel.test.logs")
    assert (first["hypervisor"], first["dpid"], first["path"]) == ("hv1", 42, "/x")
    assert datetime.fromisoformat(str(first["ts"])).utcoffset() is not None  # with its zone
    assert second["msg"] == "two\nlines and a \"quote\"" and second["level"] == "warning"
    assert third["level"] == "error" and "ValueError: boom" in str(third["exc"])
    assert set(first) == {"ts", "level", "logger", "msg", "hypervisor", "dpid", "path"}


def test_an_extra_field_never_hides_a_core_one(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = captured
    log.info("real", extra={"level": "fake", "ts": 0})
    [doc] = lines(stream)
    assert doc["level"] == "info" and doc["extra_level"] == "fake" and doc["extra_ts"] == 0


def test_the_daemons_set_up_writes_json_on_stdout_and_text_on_stderr() -> None:
    probe = ("import logging, sys\n"
             "from hypetunnel.logs import configure\n"
             "configure(sys.argv[1], sys.argv[2])\n"
             "logging.getLogger('hypetunnel.x').info('hello', extra={'k': 1})\n"
             "logging.getLogger('hypetunnel.x').debug('hidden at info')\n"
             "logging.getLogger('uvicorn.error').warning('from uvicorn')\n")
    run = subprocess.run([sys.executable, "-c", probe, "info", "json"], capture_output=True,
                         text=True, check=True, timeout=20)
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(d["logger"], d["msg"]) for d in docs] == [("hypetunnel.x", "hello"),
                                                       ("uvicorn.error", "from uvicorn")]
    assert docs[0]["k"] == 1 and run.stderr == ""
    run = subprocess.run([sys.executable, "-c", probe, "debug", "text"], capture_output=True,
                         text=True, check=True, timeout=20)
    assert run.stdout == "" and " INFO hypetunnel.x: hello" in run.stderr
    assert "hidden at info" in run.stderr
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"  # today's lines
