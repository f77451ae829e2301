"""Intent files -> Intent, with errors a person can act on: file, field path, line and reason.

Parsing happens in three steps: YAML (syntax errors carry the line), pydantic (structure: unknown
keys, types, formats) and the semantic rules of model.validate. Errors of every step become
FieldError(path, reason) with paths like `tenants[0].vms[2].ip`; when the intent came from a YAML
text the reason ends with the line of that field, so the user can jump to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.model.intent import Intent
from hypetunnel.model.validate import validate_intent

M = TypeVar("M", bound=BaseModel)

Loc = Sequence[str | int]


def format_path(loc: Loc) -> str:
    """("tenants", 0, "vms", 2, "ip") -> "tenants[0].vms[2].ip"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# -- YAML -------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML silently keeps the last one otherwise,
    which would drop half of what the user wrote without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(exc: yaml.YAMLError) -> FieldError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        context = f" ({exc.context})" if exc.context else ""
        return FieldError(
            "", f"malformed YAML at line {mark.line + 1}, column {mark.column + 1}: "
            f"{problem}{context}"
        )
    return FieldError("", f"malformed YAML: {exc}")


def _line_map(text: str) -> dict[str, int]:
    """Field path -> 1-based line where it is written (keys: the key's line)."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, loc: list[str | int]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = [*loc, str(key_node.value)]
                lines[format_path(child)] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = [*loc, i]
                lines[format_path(child)] = item.start_mark.line + 1
                walk(item, child)

    if root is not None:
        walk(root, [])
    return lines


def _with_line(error: FieldError, lines: Mapping[str, int]) -> FieldError:
    # A missing field has no line of its own: use the closest enclosing object that has one.
    path = error.path
    while path:
        if path in lines:
            return FieldError(error.path, f"{error.reason} (line {lines[path]})")
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return error


# -- pydantic ---------------------------------------------------------------------------------
def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that holds the last element of loc (to list its allowed keys)."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = get_args(ann)[0] if get_origin(ann) is list else ann
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return None
        current = inner
    return current


def _reason(err: Mapping[str, Any], model: type[BaseModel], loc: Loc) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        holder = _model_at(model, loc)
        allowed = f" (allowed: {', '.join(holder.model_fields)})" if holder else ""
        return f"unknown key{allowed}"
    if kind == "missing":
        return "required"
    if kind == "string_pattern_mismatch":
        return (
            "must be a name of lowercase letters, digits and '-', starting with a letter, "
            "at most 31 characters"
        )
    if kind == "ip_v4_address":
        return f"not an IPv4 address: {err.get('input')!r}"
    if kind == "ip_v4_network":
        return (
            f"not an IPv4 network like 10.1.0.0/24 (host bits must be zero): {err.get('input')!r}"
        )
    if kind == "literal_error":
        return f"must be one of {err.get('ctx', {}).get('expected', '')}, not {err.get('input')!r}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def pydantic_field_errors(
    errors: Sequence[Mapping[str, Any]], model: type[BaseModel] = Intent, prefix: Loc = ()
) -> list[FieldError]:
    """Pydantic (or FastAPI) error dicts -> FieldErrors; `prefix` is stripped from each loc."""
    out: list[FieldError] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if len(loc) > len(prefix) and loc[: len(prefix)] == tuple(prefix):
            loc = loc[len(prefix) :]
        out.append(FieldError(format_path(loc), _reason(err, model, loc)))
    return out


def parse_model(
    data: Any, model: type[M], *, source: str | None = None, lines: Mapping[str, int] | None = None
) -> M:
    """Validate plain data as `model`; raise IntentInvalid with field paths (and lines)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = pydantic_field_errors(exc.errors(), model)
        raise IntentInvalid([_with_line(e, lines or {}) for e in errors], source=source) from exc


def parse_intent(
    data: Any,
    *,
    source: str | None = None,
    lines: Mapping[str, int] | None = None,
    check: bool = True,
) -> Intent:
    """Plain data (a parsed YAML/JSON document) -> Intent; `check` also runs the semantic rules."""
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise IntentInvalid(
            [FieldError("", f"the intent must be a mapping with fabric/hypervisors/tenants, "
                        f"this document is {kind}")],
            source=source,
        )
    intent = parse_model(data, Intent, source=source, lines=lines)
    if check:
        errors = validate_intent(intent)
        if errors:
            raise IntentInvalid([_with_line(e, lines or {}) for e in errors], source=source)
    return intent


def load_intent_text(text: str, source: str = "<intent>", *, check: bool = True) -> Intent:
    """YAML (or JSON) text -> Intent. Raises IntentInvalid naming `source`, path, line, reason."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise IntentInvalid([_yaml_error(exc)], source=source) from exc
    return parse_intent(data, source=source, lines=_line_map(text), check=check)


def load_intent_file(path: str | Path, *, check: bool = True) -> Intent:
    """Read and parse an intent file; every error names the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error = FieldError("", f"cannot read the file: {exc}")
        raise IntentInvalid([error], source=str(p)) from exc
    return load_intent_text(text, source=str(p), check=check)
