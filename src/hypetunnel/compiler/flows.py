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


# The actions write their own repr: it is part of the cookie's input (so its text must stay the
# one dataclasses generate, or every installed flow would change cookie on upgrade), and the
# generated one goes through a recursion guard that costs more than the rest of the cookie.
# An Output or a RegMove is shared by many flows (pipeline memoizes them), so each keeps its
# repr once made (_text, see cookie_text): a flood flow's cookie reads 30 of them. A SetField
# does not: most are one VM's MAC or IP in one ARP flow, and their texts would only take room.

@dataclass(frozen=True, slots=True)
class Output:
    port: int
    _text: str = field(default="", init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Output(port={self.port!r})"


@dataclass(frozen=True, slots=True)
class SetField:
    field: str  # os-ken OXM name: "tunnel_id", "eth_src", "arp_op", "reg0", ...
    value: int | str

    def __repr__(self) -> str:
        return f"SetField(field={self.field!r}, value={self.value!r})"


@dataclass(frozen=True, slots=True)
class RegMove:
    """Nicira move: copy n_bits of src field into dst field (used by the ARP responder)."""

    src: str
    dst: str
    n_bits: int
    _text: str = field(default="", init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"RegMove(src={self.src!r}, dst={self.dst!r}, n_bits={self.n_bits!r})"


Action = Output | SetField | RegMove


@dataclass(frozen=True, slots=True)
class Flow:
    table: int
    priority: int
    match: Match
    actions: tuple[Action, ...] = ()
    metadata: int | None = None  # write_metadata instruction (full 64-bit mask)
    goto: int | None = None  # goto_table instruction
    # The cookie is computed on first use: a fabric compile builds ~10 flows per VM, and only
    # the ones a reconciler diffs against a switch ever need one (a standby never does).
    _cookie: int = field(default=0, init=False, repr=False, compare=False)

    @property
    def cookie(self) -> int:
        c = self._cookie
        if not c:
            c = _cookie_of_text(cookie_text(self))
            object.__setattr__(self, "_cookie", c)
        return c

    def __hash__(self) -> int:
        # Not the generated hash: that would include _cookie's state. Equal content, equal hash.
        return hash(self._content())

    def _content(self) -> tuple[object, ...]:
        return (self.table, self.priority, self.match, self.actions, self.metadata, self.goto)

    @property
    def key(self) -> tuple[int, int, Match]:
        """OpenFlow identity of a flow entry: an add with the same key replaces it."""
        return (self.table, self.priority, self.match)


# One slice of a switch's desired flows (compile.FabricCompiler): distinct flows, in order.
Slice = tuple[Flow, ...]


def cookie_of(content: tuple[object, ...]) -> int:
    """Content hash under our prefix: the same flow gets the same cookie in every process."""
    return _cookie_of_text(repr(content))


def _cookie_of_text(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return (COOKIE_PREFIX << COOKIE_SHIFT) | (int.from_bytes(digest, "big") & COOKIE_HASH_MASK)


def cookie_text(flow: Flow) -> str:
    """repr(flow._content()), the cookie's input, character for character, with the texts of
    shared actions made once each: each action's repr is a Python call, and a new flood flow
    (one per change of a switch's ports for a network) has one per port."""
    actions = [repr(a) if isinstance(a, SetField) else a._text or _action_text(a)
               for a in flow.actions]
    return (f"({flow.table!r}, {flow.priority!r}, {flow.match!r}, "
            f"{_tuple_text(actions)}, {flow.metadata!r}, {flow.goto!r})")


def _tuple_text(items: list[str]) -> str:
    """repr of a tuple whose items' reprs are these."""
    if len(items) == 1:
        return f"({items[0]},)"
    return f"({', '.join(items)})"


def _action_text(action: Output | RegMove) -> str:
    text = repr(action)
    object.__setattr__(action, "_text", text)
    return text


# A match field (name, value) recurs in many flows (a VNI's metadata in every flow of the
# network on every host, a MAC on every host of its network): one shared pair each. Interning
# is only sharing, so when churn has filled the table it is simply emptied (sized for a
# 100,000-VM fabric, ~6 pairs per VM): flows keep their pairs, new ones start sharing again.
_PAIRS: dict[tuple[str, MatchValue], tuple[str, MatchValue]] = {}
_PAIRS_MAX = 1 << 21


def match(**fields: MatchValue) -> Match:
    if len(_PAIRS) > _PAIRS_MAX:
        _PAIRS.clear()
    intern = _PAIRS.setdefault
    return tuple([intern(p, p) for p in sorted(fields.items())])


def clear_pairs() -> None:
    """Forget the interned match fields (see clear_memos in pipeline)."""
    _PAIRS.clear()


def is_ours(cookie: int) -> bool:
    return cookie >> COOKIE_SHIFT == COOKIE_PREFIX
