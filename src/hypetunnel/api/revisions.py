"""The store revision as an HTTP entity tag: GET /intent sends it, POST /apply takes it back.

A client that reads the intent, edits it and applies it whole (the Ansible modules, a script)
would otherwise undo any change committed between its read and its write. With If-Match the
apply goes through only while the fabric is still at the revision that was read (else 412).
"""

from __future__ import annotations

import re

from hypetunnel.errors import FieldError, IntentInvalid

_ETAG = re.compile(r'^\s*(?:W/)?"([0-9]{1,18})"\s*$')


def etag(revision: int) -> str:
    return f'"{revision}"'


def revision_of(if_match: str | None) -> int | None:
    """The revision an If-Match header names (None: no precondition)."""
    if if_match is None or if_match.strip() == "*":
        return None
    m = _ETAG.match(if_match)
    if m is None:
        raise IntentInvalid([FieldError("if-match", f"{if_match[:40]!r} is not an ETag of "
                                                    'GET /intent (a quoted revision: "42")')])
    return int(m.group(1))
