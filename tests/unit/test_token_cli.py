"""`hypetunnel token ...` against the real app, the CLI's checks of bad input (nothing sent,
nothing stored), and where the CLI takes its token from (environment, lab, profile)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hypetunnel.cli.context import CliState
from hypetunnel.cli.main import app
from hypetunnel.client import ApiClient
from hypetunnel.pki import init_ca
from tests.unit.policy_world import World

API = "http://api.test"


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    with w.http:
        w.http.headers["Authorization"] = f"Bearer {w.token['admin']}"
        yield w


def run(args: list[str], factory: Any, tmp_path: Path, **env: str | None) -> Any:
    base: dict[str, str | None] = {"COLUMNS": "200", "HYPETUNNEL_LAB_DIR": str(tmp_path / "labs"),
                                   "HYPETUNNEL_API": None, "HYPETUNNEL_LAB": None,
                                   "HYPETUNNEL_TOKEN": None, "HYPETUNNEL_PROFILE": None,
                                   "HYPETUNNEL_CONFIG": str(tmp_path / "config.yaml")}
    state = CliState(client_factory=factory, cache=None)
    return CliRunner().invoke(app, ["--api", API, *args], obj=state, env={**base, **env})


def test_create_list_revoke_through_the_api(world: World, tmp_path: Path) -> None:
    def factory(url: str) -> ApiClient:
        return ApiClient(url, http=world.http)

    r = run(["token", "create", "ci", "--role", "tenant-reader", "--tenant", "acme",
             "--expires", "30d"], factory, tmp_path)
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("ht.ci.")
    assert world.tokens.verify(token).tenant == "acme"  # type: ignore[union-attr]
    r = run(["token", "list", "-o", "json"], factory, tmp_path)
    listed = {t["name"]: t for t in json.loads(r.stdout)}
    assert listed["ci"]["expires_at"] == world.clock.now + 30 * 86400
    assert token not in r.stdout
    r = run(["token", "revoke", "ci"], factory, tmp_path)
    assert r.exit_code == 0 and "revoked" in r.output
    assert run(["token", "list"], factory, tmp_path).exit_code == 0
    r = run(["token", "revoke", "nosuch"], factory, tmp_path)
    assert r.exit_code == 1 and "tokens/nosuch: not found" in r.output


@pytest.mark.parametrize(("args", "says"), [
    (["x1", "--role", "root"], "--role: unknown role 'root'"),
    (["x1", "--role", "tenant-admin"], "--tenant: role tenant-admin needs a tenant"),
    (["x1", "--role", "operator", "--tenant", "acme"], "--tenant: role operator is a provider"),
    (["Bad_Name", "--role", "admin"], "NAME: 'Bad_Name' is not a valid name"),
    (["x1", "--role", "admin", "--expires", "soon"], "--expires: 'soon' is not a duration"),
    (["x1", "--role", "admin", "--expires", "0d"], "--expires: '0d' is not a duration"),
])
def test_bad_input_is_refused_before_anything_is_sent(tmp_path: Path, args: list[str],
                                                      says: str) -> None:
    sent: list[httpx.Request] = []

    def factory(url: str) -> ApiClient:
        return ApiClient(url, transport=httpx.MockTransport(
            lambda req: sent.append(req) or httpx.Response(500)))  # type: ignore[func-returns-value]

    r = run(["token", "create", *args], factory, tmp_path)
    assert r.exit_code != 0
    assert says in r.output, r.output
    assert sent == []


def test_a_duplicate_name_is_refused_by_the_api_and_nothing_changes(world: World,
                                                                     tmp_path: Path) -> None:
    before = world.store.load()
    r = run(["token", "create", "t-operator", "--role", "operator"],
            lambda url: ApiClient(url, http=world.http), tmp_path)
    assert r.exit_code == 1 and "name: a token named 't-operator' exists already" in r.output
    assert world.store.load() == before


# -- where the token comes from -----------------------------------------------------------------


def seen_token(tmp_path: Path, args: list[str], **env: str | None) -> tuple[Any, str | None]:
    """Run `hypetunnel ARGS tenant list` with the default client; the bearer token it sent
    (the CA it was given is appended to SEEN_CA)."""
    seen: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        return httpx.Response(200, json=[])

    real = ApiClient.__init__

    def patched(self: ApiClient, url: str, **kw: Any) -> None:
        SEEN_CA.append(kw.get("ca"))
        real(self, url, **{**kw, "transport": httpx.MockTransport(handler)})

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ApiClient, "__init__", patched)
        base: dict[str, str | None] = {
            "COLUMNS": "200", "HYPETUNNEL_LAB_DIR": str(tmp_path / "labs"),
            "HYPETUNNEL_API": None, "HYPETUNNEL_LAB": None, "HYPETUNNEL_TOKEN": None,
            "HYPETUNNEL_PROFILE": None, "HYPETUNNEL_CONFIG": str(tmp_path / "config.yaml")}
        r = CliRunner().invoke(app, [*args, "tenant", "list"], obj=CliState(cache=None),
                               env={**base, **env})
    return r, (seen[0] if seen else None)


SEEN_CA: list[Path | None] = []


def write_config(tmp_path: Path, text: str, mode: int = 0o600) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(mode)


def make_lab(tmp_path: Path, name: str, token: str) -> None:
    lab = tmp_path / "labs" / name
    (lab / "controller").mkdir(parents=True)
    (lab / "state.json").write_text(json.dumps({"api_url": "http://10.0.0.9:8650"}))
    (lab / "controller" / "admin.token").write_text(token + "\n")


CONFIG = """
default: prod
profiles:
  prod: {api: "http://prod:8650", token: ht.prod.x}
  acme: {api: "http://acme:8650", token: ht.acme.y, ca_file: /etc/ca.crt}
"""


def test_token_sources_in_order(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "pki")  # the profile's CA file must be a CA to be loaded
    write_config(tmp_path, CONFIG.replace("/etc/ca.crt", str(ca)))
    make_lab(tmp_path, "demo", "ht.lab.z")
    # The environment wins over everything.
    _, got = seen_token(tmp_path, ["--lab", "demo"], HYPETUNNEL_TOKEN="ht.env.w")
    assert got == "Bearer ht.env.w"
    # A lab's API gets the lab's bootstrap token.
    _, got = seen_token(tmp_path, ["--lab", "demo"])
    assert got == "Bearer ht.lab.z"
    # Otherwise the profile's: the default one, or the one asked for.
    _, got = seen_token(tmp_path, [])
    assert got == "Bearer ht.prod.x"
    SEEN_CA.clear()
    _, got = seen_token(tmp_path, ["--profile", "acme"])
    assert got == "Bearer ht.acme.y"
    assert [ca] == SEEN_CA  # with the profile's CA file
    _, got = seen_token(tmp_path, [], HYPETUNNEL_PROFILE="acme")
    assert got == "Bearer ht.acme.y"


def test_no_token_anywhere_sends_none(tmp_path: Path) -> None:
    r, got = seen_token(tmp_path, ["--api", "http://x:1"])
    assert r.exit_code == 0 and got is None


@pytest.mark.parametrize(("text", "mode", "says"), [
    (CONFIG, 0o644, "others may read it"),
    ("profiles: {a: {api: x, tokn: y}}", 0o600, "profiles.a.tokn: unknown key"),
    ("default: nope\nprofiles: {}", 0o600, "default: no profile named 'nope'"),
    ("profiles: [1]", 0o600, "profiles: must be a mapping"),
    (": :", 0o600, "not valid YAML"),
])
def test_a_bad_config_file_is_reported_naming_the_field(tmp_path: Path, text: str, mode: int,
                                                        says: str) -> None:
    write_config(tmp_path, text, mode)
    r, got = seen_token(tmp_path, [])
    assert r.exit_code == 1 and says in r.output, r.output
    assert got is None


def test_an_unknown_profile_is_an_error(tmp_path: Path) -> None:
    write_config(tmp_path, CONFIG)
    r, _ = seen_token(tmp_path, ["--profile", "nope"])
    assert r.exit_code == 1 and "--profile: no profile named 'nope'" in r.output
