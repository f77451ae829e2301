"""The one way HypeTunnel reads YAML: bounded, linear, and able to say on which line a field is.

- Parsing uses libyaml when PyYAML has it (the pure-Python parser, run twice, was most of the
  117 s a 5 MB intent took), and the document is parsed once; lines are looked up in its nodes only
  for the fields an error names.
- Aliases are shared nodes in the parsed document but are expanded by everything that walks
  the data (validation, line lookup, dumping): a "billion laughs" file of a few hundred bytes
  expands to 10^9 nodes. The expanded size is computed on the node graph (linear in the file)
  and a document whose aliases add more than MAX_ALIAS_NODES nodes, or that refers to itself,
  is refused before anything expands it. (Nesting depth is bounded by libyaml itself: 1000.)
- Duplicate keys are refused: PyYAML silently keeps the last one otherwise (keys brought in
  by a `<<` merge may be overridden, as YAML specifies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from hypetunnel.errors import FieldError, IntentInvalid

# Merge keys and anchors for repeated VM templates expand to a few nodes each; 100k is far above
# any real intent's use and keeps the worst case to well under a second of work.
MAX_ALIAS_NODES = 100_000

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """The safe loader, remembering the tag of each plain scalar it has resolved: resolving
    runs regular expressions in Python for every scalar, and an intent repeats the same keys
    and values (name, network, front, 10.1.0.0/24) throughout."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        # With no path resolvers (the safe loader has none), a plain scalar's tag depends on
        # its text alone.
        if kind is yaml.ScalarNode and implicit[0]:
            tag = self._plain_tags.get(value)
            if tag is None:
                tag = self._plain_tags[value] = super().resolve(kind, value, implicit)
            return tag
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


class _Builder:
    """Nodes -> Python data, like PyYAML's SafeConstructor (which still does the scalar
    conversions and `<<` merges) but refusing duplicate keys, and without its generator
    machinery, which made construction the slowest step of loading a large intent."""

    def __init__(self, loader: yaml.SafeLoader, shared: bool) -> None:
        self.loader = loader
        # id(node) -> data, so that an alias shares its anchor's data (as PyYAML does); only
        # kept when the document has aliases at all: it costs a dict entry per node.
        self.built: dict[int, Any] | None = {} if shared else None

    def build(self, node: yaml.Node) -> Any:
        if self.built is not None and id(node) in self.built:
            return self.built[id(node)]
        kind = type(node)
        if kind is yaml.ScalarNode:
            value = node.value if node.tag == _STR else self.loader.construct_object(node)
        elif kind is yaml.SequenceNode:
            value = []
            if self.built is not None:
                self.built[id(node)] = value  # before the items, as PyYAML does
            value.extend([self.build(item) for item in node.value])
        elif isinstance(node, yaml.MappingNode):
            value = self._mapping(node)
        else:
            value = self.loader.construct_object(node)
        if self.built is not None:
            self.built[id(node)] = value
        return value

    def _mapping(self, node: yaml.MappingNode) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merges = False
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges = True
                continue
            key = self.build(key_node)
            try:
                duplicate = key in out
            except TypeError as exc:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found an unhashable key",
                    key_node.start_mark) from exc
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            out[key] = self.build(value_node)
        if not merges:
            return out
        # `<<: *defaults`: PyYAML puts the merged pairs first; what is written here wins.
        self.loader.flatten_mapping(node)
        merged = {self.build(k): self.build(v) for k, v in node.value[: len(node.value) - len(out)]}
        return merged | out


Loc = Sequence[str | int]


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed YAML document: its data, and its nodes to find where a field is written."""

    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the field at `loc` (a key: the key's line; a list item: its first
        line), or None when the document has no such field."""
        node = self.root
        line: int | None = None
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                hit = next(((k, v) for k, v in node.value
                            if isinstance(k, yaml.ScalarNode) and k.value == part), None)
                if hit is None:
                    return None
                line, node = hit[0].start_mark.line + 1, hit[1]
            elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
                  and 0 <= part < len(node.value)):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return None
        return line


def _refuse(source: str, reason: str) -> IntentInvalid:
    return IntentInvalid([FieldError("", reason)], source=source)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a node graph whose aliases expand too far or that contains itself. Iterative
    (no recursion limit), each distinct node visited once."""
    size: dict[int, int] = {}  # id(node) -> expanded size, once all its children are known
    on_path: set[int] = set()  # the nodes being expanded: the ancestors of the current one
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            # Saturate: the exact size of a bomb is of no interest, and bounded ints stay cheap.
            size[key] = min(1 + sum(size[id(c)] for c in _children(node)), 1 << 62)
        elif key not in size:
            if key in on_path:
                raise _refuse(source, "the YAML refers to itself through an alias (an "
                                      "infinite document)")
            on_path.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in size)
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_NODES:
        raise _refuse(source, f"the YAML's aliases expand to more than {MAX_ALIAS_NODES} "
                              f"extra nodes ({added}); write the values out or use fewer "
                              "nested anchors")


def _syntax_error(exc: yaml.YAMLError, source: str) -> IntentInvalid:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        reason = (f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}: "
                  f"{problem}{context}")
    elif isinstance(exc, yaml.reader.ReaderError):  # its own str() spans lines
        reason = (f"malformed YAML: unacceptable character #x{exc.character:04x} "
                  f"({exc.reason})" if isinstance(exc.character, int)
                  else f"malformed YAML: {exc.reason}")
    else:
        reason = f"malformed YAML: {exc}"
    return _refuse(source, reason)


def read_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML (or JSON) document safely; IntentInvalid naming `source` otherwise."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(None, None)
        if "*" in text:  # no asterisk, no alias: nothing can expand
            check_expansion(root, source)
        data = _Builder(loader, shared="*" in text).build(root)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, source) from exc
    except RecursionError as exc:  # libyaml allows 1000 levels; an intent has 6
        raise _refuse(source, "the YAML nests too deeply") from exc
    finally:
        loader.dispose()
    return YamlDocument(data, root)
