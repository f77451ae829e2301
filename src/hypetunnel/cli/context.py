"""What every CLI command shares: which API to talk to, how to build its client, how errors end.

The API URL is resolved lazily, on the first command that needs it, so `hypetunnel lab ...`
works even when no lab (or several) exist. Tests inject a client factory through the click
context object (`CliRunner().invoke(app, args, obj=CliState(client_factory=...))`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from hypetunnel.client import ActiveCache, ApiClient, ClientError, ClientPool, default_cache_path
from hypetunnel.client.pool import ClientFactory
from hypetunnel.errors import FieldError, IntentInvalid

DEFAULT_API_URL = "http://127.0.0.1:8650"
DEFAULT_LABS_DIR = Path("/run/hypetunnel/labs")
LAB_STATE_FILE = "state.json"
CONTROLLER_RECORD = "controller/controller.json"  # written by hypetunnel.lab.controller



class CliError(ClientError):
    """A problem of the CLI's own (no such lab, bad argument), reported like the API's."""


def labs_dir() -> Path:
    """Where running labs keep their state (HYPETUNNEL_LAB_DIR overrides, e.g. for tests)."""
    return Path(os.environ.get("HYPETUNNEL_LAB_DIR") or DEFAULT_LABS_DIR)


def lab_names(root: Path | None = None) -> list[str]:
    """Labs that have a state file, sorted by name."""
    root = root or labs_dir()
    try:
        return sorted(p.parent.name for p in root.glob(f"*/{LAB_STATE_FILE}") if p.is_file())
    except OSError:
        return []


def lab_api_url(name: str, root: Path | None = None) -> str | None:
    """The "api_url" recorded by lab NAME, or None when it has none (controller not started)."""
    path = (root or labs_dir()) / name / LAB_STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CliError([FieldError("", f"no lab named {name!r} (looked in {path.parent})")]) from e
    except (OSError, ValueError) as e:
        raise CliError([FieldError("", f"cannot read lab state {path}: {e}")]) from e
    url = state.get("api_url") if isinstance(state, dict) else None
    if not (isinstance(url, str) and url):
        # The lab's controller also records its URL next to its store; accept that too.
        try:
            record = json.loads((path.parent / CONTROLLER_RECORD).read_text())
            url = record.get("api_url") if isinstance(record, dict) else None
        except (OSError, ValueError):
            url = None
    return url if isinstance(url, str) and url else None


def lab_ca(name: str, root: Path | None = None) -> Path | None:
    """The CA of lab NAME's PKI ("tls_dir" in its state), None when it runs plain
    (`lab up --insecure`) or cannot be read (the command then fails on its own terms)."""
    try:
        state = json.loads(((root or labs_dir()) / name / LAB_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    tls_dir = state.get("tls_dir") if isinstance(state, dict) else None
    return Path(tls_dir) / "ca.crt" if isinstance(tls_dir, str) and tls_dir else None


def resolve_lab(api: str | None, lab: str | None, root: Path | None = None) -> str | None:
    """The lab whose API resolve_api_url picks, None when it is not a lab's."""
    if api:
        return None
    if lab:
        return lab
    names = lab_names(root)
    return names[0] if len(names) == 1 else None


def resolve_api_url(api: str | None, lab: str | None, root: Path | None = None) -> str:
    """--api (or HYPETUNNEL_API) wins; then the named lab; then the only lab; else the default."""
    if api:
        return api.rstrip("/")
    if lab:
        url = lab_api_url(lab, root)
        if url is None:
            raise CliError([FieldError("", f"lab {lab!r} has no API URL (is its controller up?)")])
        return url.rstrip("/")
    names = lab_names(root)
    if len(names) == 1:
        url = lab_api_url(names[0], root)
        if url:
            return url.rstrip("/")
    elif len(names) > 1:
        warn(f"{len(names)} labs exist ({', '.join(names)}); using {DEFAULT_API_URL}: "
             "pick one with --lab NAME")
    return DEFAULT_API_URL


@dataclass
class CliState:
    """The click context object: global options and the (overridable) client factory."""

    api: str | None = None
    lab: str | None = None
    verbose: bool = False
    client_factory: ClientFactory = field(default=ApiClient)
    ca: Path | None = None  # --ca / HYPETUNNEL_CA; else the lab's CA when the API is a lab's
    cache: ActiveCache | None = field(default_factory=lambda: ActiveCache(default_cache_path()))
    _url: str | None = None

    @property
    def api_url(self) -> str:
        if self._url is None:
            self._url = resolve_api_url(self.api, self.lab)
        return self._url

    def forget_url(self) -> None:
        self._url = None

    def _urls(self) -> list[str]:
        return [u for u in self.api_url.split(",") if u]

    def _factory(self) -> ClientFactory:
        """The client factory, verifying HTTPS against our CA (an injected factory is kept)."""
        ca = self.ca
        if ca is None:
            lab = resolve_lab(self.api, self.lab)
            ca = lab_ca(lab) if lab else None
        if ca is None or self.client_factory is not ApiClient:
            return self.client_factory
        return functools.partial(ApiClient, ca=ca)

    def client(self) -> ApiClient:
        urls = self._urls()
        if len(urls) == 1:
            self.say(f"using {urls[0]}")
            return self._factory()(urls[0])
        return self.client_pool().active()

    def client_pool(self) -> ClientPool:
        return ClientPool(self._urls(), self._factory(), cache=self.cache, report=self.say)

    def say(self, message: str) -> None:
        """-v: who was asked and who answered, on stderr (stdout stays the command's)."""
        if self.verbose:
            err().print(Text(message, style="dim"), soft_wrap=True)


def state(ctx: typer.Context) -> CliState:
    return ctx.ensure_object(CliState)


# --- output -----------------------------------------------------------------------------------


def out() -> Console:
    # A console per call: sys.stdout may have been swapped (CliRunner, pipes) since import.
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err().print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)


def error_lines(errors: list[FieldError], source: str | None = None) -> list[str]:
    """"error: FILE: tenants[0].vms[2].ip: reason" — one line per problem, grep-friendly."""
    prefix = f"{source}: " if source else ""
    return [f"error: {prefix}{e}" for e in errors] or [f"error: {prefix}failed"]


def print_errors(errors: list[FieldError], source: str | None = None) -> None:
    console = err()
    for line in error_lines(errors, source):
        # Text, not markup: paths like "tenants[0]" must not be read as rich tags.
        console.print(Text(line, style="red"), soft_wrap=True)


@contextmanager
def reporting(source: str | None = None) -> Iterator[None]:
    """Turn the CLI's expected failures into error lines on stderr and exit code 1."""
    try:
        yield
    except IntentInvalid as e:
        print_errors(e.errors, e.source or source)
        raise typer.Exit(1) from e
    except ClientError as e:
        print_errors(e.errors, e.source or source)
        raise typer.Exit(1) from e


P = ParamSpec("P")
R = TypeVar("R")


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of `reporting()` for commands (functools.wraps keeps typer's signature)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with reporting():
            return fn(*args, **kwargs)

    return wrapper


def emit_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, no rich wrapping or colour."""
    typer.echo(json.dumps(data, indent=2))
