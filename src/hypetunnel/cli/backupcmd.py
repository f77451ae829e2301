"""`hypetunnel backup FILE` / `hypetunnel restore FILE`: a controller pair's store, PKI and
token, read and written directly (no controller needs to run), found through the controller's
own settings: its config file and/or the same flags as `controller run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", dir_okay=False,
    help="The controller's config file (`controller run --config`): its state_dir, etcd, "
         "tls_dir, tls_name and node say where the store, PKI and token are.")]
StateDirOpt = Annotated[Path | None, typer.Option(
    help="The controller's state directory (SQLite store, admin.token).")]
EtcdOpt = Annotated[list[str] | None, typer.Option(help="etcd client URL(s) of the store.")]
TlsDirOpt = Annotated[Path | None, typer.Option(
    help="The PKI directory (backed up; with --etcd: our client certificate).")]
TlsNameOpt = Annotated[str | None, typer.Option(
    help="Our certificate's name in --tls-dir (default: --node, else 'controller').")]
NodeOpt = Annotated[str | None, typer.Option(help="The controller's name (see --tls-name).")]


def _settings(config: Path | None, **flags: Any) -> Any:
    from hypetunnel.cli.context import print_errors
    from hypetunnel.daemon_config import ConfigInvalid, load

    # Not given: None, or an empty list for a repeatable option.
    given = {k: list(v) if isinstance(v, tuple | list) else v for k, v in flags.items()
             if v is not None and v != [] and v != ()}
    try:  # only what names the store and files: no HA pair is needed to read a store
        return load(config, given, checks=False)
    except ConfigInvalid as e:
        print_errors(e.errors)
        raise typer.Exit(2) from e


def _failing(e: Exception) -> None:
    from hypetunnel.cli.context import print_errors
    from hypetunnel.errors import FieldError

    print_errors([FieldError("", str(e))])
    raise typer.Exit(1) from e


def backup(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The tar.gz to write (0600).")],
    config: ConfigOpt = None, state_dir: StateDirOpt = None, etcd: EtcdOpt = None,
    tls_dir: TlsDirOpt = None, tls_name: TlsNameOpt = None, node: NodeOpt = None,
) -> None:
    """Save the store (every document at one revision), the PKI directory and the admin token
    to FILE, with a manifest of sha256 sums."""
    from hypetunnel import backup as bk
    from hypetunnel.errors import HypeTunnelError

    settings = _settings(config, state_dir=state_dir, etcd=etcd, tls_dir=tls_dir,
                         tls_name=tls_name, node=node)
    try:
        manifest = bk.create(file, settings)
    except (HypeTunnelError, OSError) as e:
        _failing(e)
        return
    names = [m.name for m in manifest.members]
    pki = sum(n.startswith(bk.PKI_PREFIX) for n in names)
    typer.echo(f"{file}: {manifest.store.kind} store {manifest.store.source} at revision "
               f"{manifest.store.revision} ({manifest.store.documents} documents), {pki} PKI "
               f"files, {'the' if 'admin.token' in names else 'no'} admin token")


def restore(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="A backup FILE.")],
    config: ConfigOpt = None, state_dir: StateDirOpt = None, etcd: EtcdOpt = None,
    tls_dir: TlsDirOpt = None, tls_name: TlsNameOpt = None, node: NodeOpt = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a store that is not empty and files that differ.")] = False,
) -> None:
    """Write a backup back: verify it, then the store in one transaction, the PKI files and
    the admin token with their modes. Run it with the controllers stopped."""
    from hypetunnel import backup as bk
    from hypetunnel.errors import HypeTunnelError

    settings = _settings(config, state_dir=state_dir, etcd=etcd, tls_dir=tls_dir,
                         tls_name=tls_name, node=node)
    try:
        done = bk.restore(file, settings, force=force)
    except (HypeTunnelError, OSError) as e:
        _failing(e)
        return
    typer.echo(f"restored {file}: {done.store_kind} store {done.store_where} at revision "
               f"{done.revision} ({done.documents} documents); "
               f"{len(done.files)} files: {', '.join(map(str, done.files)) or 'none'}")


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
