"""The daemon's log output: one JSON object per line on stdout (the journal's and a log
shipper's format), or today's human text on stderr.

A JSON line has `ts` (UTC, ISO 8601), `level`, `logger`, `msg` (the formatted message), the
record's `extra=` fields, and `exc` (the traceback) when there is one. Stdlib logging only: the
controller logs through `logging` everywhere, uvicorn included (its own handlers are off, see
daemon.serve), so one formatter covers everything.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CORE = ("ts", "level", "logger", "msg")
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                # An extra field never hides a core one.
                doc["extra_" + key if key in CORE else key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value that is not JSON (a Path, an exception) is its text;
        # json.dumps escapes newlines, so a record is always exactly one line.
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure(level: str = "info", fmt: Literal["text", "json"] = "json") -> None:
    """The root logger's one handler; replaces any handler set before."""
    if fmt == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Python's warnings (e.g. a dependency's deprecation at import) become records too: no
    # line on the daemon's output that is not in the format.
    logging.captureWarnings(True)
    if level != "debug":  # one line per etcd request (several a second) would bury what happened
        logging.getLogger("httpx").setLevel(logging.WARNING)
