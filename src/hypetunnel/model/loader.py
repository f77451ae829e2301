"""Intent files -> Intent, with errors a person can act on: file, field path, line and reason.

Parsing happens in three steps: YAML (model.yamldoc: syntax errors carry the line; alias bombs
and duplicate keys are refused), pydantic (structure: unknown keys, types, formats) and the
semantic rules of model.validate. Errors of every step become
FieldError(path, reason) with paths like `tenants[0].vms[2].ip`; when the intent came from a YAML
text the reason ends with the line of that field, so the user can jump to it (looked up only for
the fields an error names, so a large file with one mistake costs what a valid one does).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.model.intent import Intent
from hypetunnel.model.validate import validate_intent
from hypetunnel.model.yamldoc import read_yaml

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


# -- lines -------------------------------------------------------------------------------------
LineOf = Callable[[Loc], int | None]  # 1-based line of a field, None when not written


def parse_path(path: str) -> list[str | int]:
    """Inverse of format_path: "tenants[0].vms[2].ip" -> ["tenants", 0, "vms", 2, "ip"]."""
    return [int(p) if p.isdigit() else p for p in re.split(r"\.|\[|\]\.?", path) if p]


def _with_line(error: FieldError, line_of: LineOf | None) -> FieldError:
    # A missing field has no line of its own: use the closest enclosing object that has one.
    if line_of is None:
        return error
    loc = parse_path(error.path)
    while loc:
        line = line_of(loc)
        if line is not None:
            return FieldError(error.path, f"{error.reason} (line {line})")
        loc = loc[:-1]
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


def _shown(value: object) -> str:
    """A value as the user wrote it in YAML/JSON (true, not Python's True)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


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
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number (written without quotes), not {_shown(err.get('input'))}"
    if kind == "bool_type":
        return f"must be true or false, not {_shown(err.get('input'))}"
    if kind == "string_type":
        return f"must be text, not {_shown(err.get('input'))}"
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
    data: Any, model: type[M], *, source: str | None = None, line_of: LineOf | None = None
) -> M:
    """Validate plain data as `model`; raise IntentInvalid with field paths (and lines)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = pydantic_field_errors(exc.errors(), model)
        raise IntentInvalid([_with_line(e, line_of) for e in errors], source=source) from exc


def parse_intent(
    data: Any,
    *,
    source: str | None = None,
    line_of: LineOf | None = None,
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
    intent = parse_model(data, Intent, source=source, line_of=line_of)
    if check:
        errors = validate_intent(intent)
        if errors:
            raise IntentInvalid([_with_line(e, line_of) for e in errors], source=source)
    return intent


@contextmanager
def _bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document is turned into objects: loading
    creates millions of acyclic objects (freed by reference counting anyway), and each full
    collection re-scans all of them; paused, a large intent loads about 3x faster."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_intent_text(text: str, source: str = "<intent>", *, check: bool = True) -> Intent:
    """YAML (or JSON) text -> Intent. Raises IntentInvalid naming `source`, path, line, reason."""
    with _bulk():
        doc = read_yaml(text, source)
        try:
            return parse_intent(doc.data, source=source, line_of=doc.line_of, check=check)
        except IntentInvalid as exc:  # re-raised below without the frames that hold `doc`
            errors = exc.errors
        finally:
            # Freed while the collector is paused: re-enabled with the millions of parse
            # objects still counted, it would scan them all once more (0.5 s for 10k tenants).
            del doc
    raise IntentInvalid(errors, source=source)


def load_intent_file(path: str | Path, *, check: bool = True) -> Intent:
    """Read and parse an intent file; every error names the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        error = FieldError("", f"cannot read the file: {exc}")
        raise IntentInvalid([error], source=str(p)) from exc
    return load_intent_text(text, source=str(p), check=check)
