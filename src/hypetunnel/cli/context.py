"""What every CLI command shares: which API to talk to, how to build its client, how errors end.

The API URL is resolved lazily, on the first command that needs it, so `hypetunnel lab ...`
works even when no lab (or several) exist. So is the token (see `CliState.token`). Tests
inject a client factory through the click context object
(`CliRunner().invoke(app, args, obj=CliState(client_factory=...))`).
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
from hypetunnel.client.config import (
    Profile,
    default_config_path,
    read_token_file,
    select_profile,
)
from hypetunnel.client.pool import ClientFactory
from hypetunnel.errors import FieldError, IntentInvalid
from hypetunnel.lab.controller import lab_token as lab_dir_token

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
    """The CA of lab NAME: its attached controllers' ("api_ca", `lab attach`), else its
    PKI's ("tls_dir" in its state); None when it runs plain (`lab up --insecure`) or cannot be
    read (the command then fails on its own terms)."""
    state = _lab_state(name, root)
    attached = state.get("api_ca")
    if isinstance(attached, str) and attached:
        return Path(attached)
    tls_dir = state.get("tls_dir")
    return Path(tls_dir) / "ca.crt" if isinstance(tls_dir, str) and tls_dir else None


def resolve_api_url(api: str | None, lab: str | None, root: Path | None = None,
                    profile_api: str | None = None) -> str:
    """--api (or HYPETUNNEL_API) wins; then the named lab; then the profile's API; then the
    only lab; else the default."""
    return resolve_target(api, lab, root, profile_api)[0]


def resolve_target(api: str | None, lab: str | None, root: Path | None = None,
                   profile_api: str | None = None) -> tuple[str, str | None]:
    """(API URL, the lab it belongs to, if it came from a lab), in resolve_api_url's order."""
    if api:
        return api.rstrip("/"), None
    if lab:
        url = lab_api_url(lab, root)
        if url is None:
            raise CliError([FieldError("", f"lab {lab!r} has no API URL (is its controller up?)")])
        return url.rstrip("/"), lab
    if profile_api:
        return profile_api.rstrip("/"), None
    names = lab_names(root)
    if len(names) == 1:
        url = lab_api_url(names[0], root)
        if url:
            return url.rstrip("/"), names[0]
    elif len(names) > 1:
        warn(f"{len(names)} labs exist ({', '.join(names)}); using {DEFAULT_API_URL}: "
             "pick one with --lab NAME")
    return DEFAULT_API_URL, None


def lab_token(name: str, root: Path | None = None) -> str | None:
    """The admin token of lab NAME: its attached controllers' token file ("api_token_file",
    `lab attach`), else its controllers' bootstrap token, read from their state dirs."""
    attached = _lab_state(name, root).get("api_token_file")
    if isinstance(attached, str) and attached:
        return read_token_file(Path(attached))
    return lab_dir_token((root or labs_dir()) / name)


def _lab_state(name: str, root: Path | None = None) -> dict[str, Any]:
    """Lab NAME's state file as a mapping ({} when it cannot be read)."""
    try:
        state = json.loads(((root or labs_dir()) / name / LAB_STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


@dataclass
class CliState:
    """The click context object: global options and the (overridable) client factory."""

    api: str | None = None
    lab: str | None = None
    profile: str | None = None
    verbose: bool = False
    client_factory: ClientFactory | None = None  # default: an ApiClient with token and CA
    ca: Path | None = None  # --ca / HYPETUNNEL_CA (see `ca_file`)
    cache: ActiveCache | None = field(default_factory=lambda: ActiveCache(default_cache_path()))
    config_path: Path | None = None  # default: ~/.config/hypetunnel/config.yaml
    _url: str | None = None
    _lab_of_url: str | None = None
    _profile: Profile | None = None
    _profile_read: bool = False

    def selected_profile(self) -> Profile | None:
        """--profile (HYPETUNNEL_PROFILE), else the config file's default profile, else none."""
        if not self._profile_read:
            self._profile = select_profile(self.config_path or default_config_path(),
                                           self.profile)
            self._profile_read = True
        return self._profile

    @property
    def api_url(self) -> str:
        if self._url is None:
            profile = self.selected_profile()
            self._url, self._lab_of_url = resolve_target(
                self.api, self.lab, profile_api=profile.api if profile else None)
        return self._url

    @property
    def token(self) -> str | None:
        """HYPETUNNEL_TOKEN wins; then, talking to a lab, that lab's bootstrap admin token
        (so the lab needs no setup); then the profile's token; else none (the API says 401)."""
        env = os.environ.get("HYPETUNNEL_TOKEN")
        if env:
            return env.strip()
        url = self.api_url  # resolves the lab the URL came from, if any
        if self._lab_of_url is not None:
            found = lab_token(self._lab_of_url)
            if found:
                return found
        profile = self.selected_profile()
        return profile.token if profile is not None and url else None

    @property
    def ca_file(self) -> Path | None:
        """The CA the API's HTTPS certificate is verified against, in the token's order:
        --ca (HYPETUNNEL_CA); then, talking to a lab, that lab's CA (none when it runs
        `--insecure`); then the profile's `ca_file`; else none (the system's CAs)."""
        if self.ca is not None:
            return self.ca
        self.api_url  # noqa: B018 - resolves the lab the URL came from, if any
        if self._lab_of_url is not None:
            return lab_ca(self._lab_of_url)
        profile = self.selected_profile()
        return Path(profile.ca_file).expanduser() if profile and profile.ca_file else None

    def forget_url(self) -> None:
        self._url = None
        self._lab_of_url = None
        self._profile_read = False

    def _urls(self) -> list[str]:
        return [u for u in self.api_url.split(",") if u]

    def _factory(self) -> ClientFactory:
        """The client factory: an ApiClient sending our token and verifying HTTPS against our
        CA; an injected factory is kept as it is (it makes clients of its own)."""
        if self.client_factory is not None:
            return self.client_factory
        return functools.partial(ApiClient, token=self.token, ca=self.ca_file)

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
