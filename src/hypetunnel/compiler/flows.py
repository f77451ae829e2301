"""Desired OpenFlow state as frozen, hashable values.

A flow's cookie is derived from its whole content (table, priority, match, instructions), under a
fixed 16-bit controller prefix. So "is this flow installed?" is a set lookup on cookies read back
from the switch, and a changed flow is an add that overwrites the old one in place (same table,
priority and match) followed by a delete-by-cookie of whatever is left: no gap in forwarding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

COOKIE_PREFIX = 0x4854  # "HT"
COOKIE_SHIFT = 48
COOKIE_MASK_OURS = 0xFFFF << COOKIE_SHIFT
COOKIE_HASH_MASK = (1 << COOKIE_SHIFT) - 1

OFPP_IN_PORT = 0xFFFFFFF8

MatchValue = int | str | tuple[int, int] | tuple[str, str]
# OFPMatch keyword arguments (os-ken field names), sorted by field name.
Match = tuple[tuple[str, MatchValue], ...]


@dataclass(frozen=True, slots=True)
class Output:
    port: int


@dataclass(frozen=True, slots=True)
class SetField:
    field: str  # os-ken OXM name: "tunnel_id", "eth_src", "arp_op", "reg0", ...
    value: int | str


@dataclass(frozen=True, slots=True)
class RegMove:
    """Nicira move: copy n_bits of src field into dst field (used by the ARP responder)."""

    src: str
    dst: str
    n_bits: int


Action = Output | SetField | RegMove


@dataclass(frozen=True, slots=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    metadata: int | None = None  # write_metadata instruction (full 64-bit mask)
    goto: int | None = None  # goto_table instruction
    cookie: int = field(init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        digest = hashlib.blake2b(repr(self._content()).encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "big") & COOKIE_HASH_MASK
        object.__setattr__(self, "cookie", (COOKIE_PREFIX << COOKIE_SHIFT) | h)

    def _content(self) -> tuple[object, ...]:
        return (self.table, self.priority, self.match, self.actions, self.metadata, self.goto)

    @property
    def key(self) -> tuple[int, int, Match]:
        """OpenFlow identity of a flow entry: an add with the same key replaces it."""
        return (self.table, self.priority, self.match)


def match(**fields: MatchValue) -> Match:
    return tuple(sorted(fields.items()))


def is_ours(cookie: int) -> bool:
    return cookie >> COOKIE_SHIFT == COOKIE_PREFIX
