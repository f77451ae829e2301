"""Webhook targets: an HTTP POST of every alarm change, in order, retried with back-off.

Each target has a cursor in the store (`fcaps/webhook/<id>`: the `seq` of the last change it
acknowledged with a 2xx), so a receiver that was down, or a controller that failed over
meanwhile, resumes exactly after what was delivered: the missed changes come first, in order.
Changes older than the state log keeps (events.MAX_EVENTS records) cannot be sent again.

The body is one change: {"seq", "time", "change": raised|updated|cleared|acknowledged,
"alarm": {...the alarm...}}.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

from hypetunnel.fcaps.events import CURSOR_PREFIX

log = logging.getLogger(__name__)

POST_TIMEOUT = 5.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0

Post = Callable[[str, dict[str, Any]], None]  # blocking; raises on failure (not 2xx)


def http_post(url: str, body: dict[str, Any]) -> None:
    data = json.dumps(body, sort_keys=True).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "hypetunnel-webhook"})
    # An opener of our own: never one a library installed process-wide (install_opener).
    opener = urllib.request.build_opener()
    with opener.open(req, timeout=POST_TIMEOUT) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"HTTP {response.status}")


def cursor_key(url: str) -> str:
    return f"{CURSOR_PREFIX}{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    return {"seq": event["seq"], "time": event["time"], "change": event["change"],
            "alarm": event["alarm"]}


class WebhookTarget:
    def __init__(self, url: str, post: Post = http_post, *,
                 backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX) -> None:
        self.url = url
        self.key = cursor_key(url)
        self._post = post
        self.cursor = 0  # seq of the last change delivered
        self.backoff_first, self.backoff_max = backoff_first, backoff_max
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None

    def load(self, doc: dict[str, Any] | None) -> None:
        self.cursor = int(doc.get("seq", 0)) if doc else 0

    def cursor_doc(self) -> dict[str, Any]:
        return {"url": self.url, "seq": self.cursor}

    def pending(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if "alarm" in e and int(e["seq"]) > self.cursor]

    async def run(self, events: Callable[[], list[dict[str, Any]]],
                  saved: Callable[[WebhookTarget], None], wake: asyncio.Event,
                  active: Callable[[], bool]) -> None:
        """Deliver until cancelled: everything after the cursor, then wait for more."""
        delay = self.backoff_first
        while True:
            todo = self.pending(events()) if active() else []
            if not todo:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 1.0)
                continue
            for event in todo:
                try:
                    await asyncio.to_thread(self._post, self.url, body_of(event))
                except Exception as e:
                    self.failures += 1
                    self.last_error = str(e)
                    if self.failures == 1 or self.failures % 20 == 0:
                        log.warning("webhook %s: change %s not delivered (%s): retrying",
                                    self.url, event["seq"], e)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    break
                if not active():
                    break
                self.cursor = int(event["seq"])
                self.delivered += 1
                self.failures, self.last_error, delay = 0, None, self.backoff_first
                saved(self)
